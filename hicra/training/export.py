"""`hicra-export <checkpoint> <out_dir>`: a Hugging Face model folder from a training checkpoint.

    hicra-export outputs/runs/<run>/checkpoints/last.ckpt exported/   # sharded folder (trainer=fsdp) or full file
    hicra-export outputs/runs/<run> exported/                         # a run folder: its newest checkpoint

The model is rebuilt from the config the checkpoint carries (its run record, RUN_KEY) with hicra's own model loader,
the policy's weights are loaded into it, and `out_dir` gets what `final_model/` holds: `save_pretrained` (config,
weights, generation config) and the tokenizer, which `AutoModelForCausalLM.from_pretrained` loads. A LoRA policy is
written merged (W + scaling * B @ A), a plain model, as `final_model/` is. A sharded checkpoint is read in this one
process, without a process group: DCP reads every rank's shards into whole tensors (the optimizer state is not read).
The folder is written beside `out_dir` and renamed into place, so an interrupted export leaves no half folder.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import warnings
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from hicra.errors import ConfigError

PROG = "hicra-export"
POLICY = "policy."  # the policy's prefix in the LightningModule's state dict (PolicyGradientModule.policy)
MODEL_TARGETS = frozenset({"hicra.models.loaders.build_tiny_model", "hicra.models.loaders.load_pretrained"})
ALLOWED = "a last.ckpt file or sharded last.ckpt folder, or a run folder holding one"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description="Write a Hugging Face model folder (weights, config, "
                                     "generation config, tokenizer) from a hicra-train checkpoint.")
    parser.add_argument("checkpoint", help=ALLOWED)
    parser.add_argument("out_dir", help="a new (or empty) folder")
    args = parser.parse_args(argv)
    try:
        written = export(args.checkpoint, Path(args.out_dir).expanduser())
    except ConfigError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    print(f"{PROG}: wrote {written}", flush=True)
    return 0


def export(checkpoint: str, out_dir: Path) -> Path:
    """Writes the model of `checkpoint` to `out_dir`; a one-line ConfigError, with nothing written, on bad input."""
    check_out_dir(out_dir)
    path = checkpoint_path(checkpoint)
    state = _read(path)
    bundle = rebuild_model(path, state)
    load_policy_weights(bundle.model, path, state)
    _write(bundle, out_dir)
    return out_dir


def check_out_dir(out_dir: Path) -> None:
    if out_dir.exists() and not (out_dir.is_dir() and not any(out_dir.iterdir())):
        raise ConfigError(f"out_dir {out_dir} exists and is not an empty folder; nothing was written: name a new "
                          f"folder")


def checkpoint_path(value: str) -> Path:
    from hicra.training.find_checkpoint import newest_in
    from hicra.training.sharded_checkpoint import is_sharded

    path = Path(value).expanduser()
    if not path.exists():
        raise ConfigError(f"checkpoint {value} does not exist; allowed: {ALLOWED}")
    if path.is_dir() and not is_sharded(path):
        found = newest_in(path) or newest_in(path / "checkpoints")
        if found is None:
            raise ConfigError(f"checkpoint {value} is a folder without a checkpoint; allowed: {ALLOWED}")
        return found
    return path


def _read(path: Path) -> dict:
    """The checkpoint's record (resume.load_checkpoint: weights_only, memory-mapped; a sharded one's meta.pt)."""
    from hicra.training.resume import load_checkpoint

    try:
        return load_checkpoint(path)
    except ConfigError as err:  # its wording is for ckpt_path=..., and "nothing was changed" holds here too
        raise ConfigError(str(err).replace(f"ckpt_path={path}", f"checkpoint {path}")) from None


def model_config(snapshot: dict, origin: str) -> DictConfig:
    """The `model` node of a run's config snapshot (dotted keys, unresolved), resolved within that config, once it
    builds nothing but hicra's own model loaders (the checkpoint may come from anyone: it is read as data)."""
    from hicra.config.instantiate import refuse_foreign_targets

    tree: dict = {}
    for key, value in snapshot.items():
        *parents, leaf = key.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    if not isinstance(tree.get("model"), dict):
        raise ConfigError(f"{origin}: its config has no model; allowed: {ALLOWED} written by hicra-train")
    try:
        resolved = OmegaConf.create(OmegaConf.to_container(OmegaConf.create(tree).model, resolve=True))
    except OmegaConfBaseException as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        raise ConfigError(f"{origin}: its model config does not resolve outside the run ({reason})") from None
    refuse_foreign_targets(resolved, MODEL_TARGETS, origin, "model")
    return resolved


def rebuild_model(path: Path, state: dict):
    """The run's policy as its config builds it (LoRA adapters where the run had them), on empty CPU tensors that
    `load_policy_weights` fills."""
    from hicra.config.instantiate import build
    from hicra.training.resume import RUN_KEY

    record = state.get(RUN_KEY) or {}
    if not record.get("config"):
        raise ConfigError(f"checkpoint {path} carries no run config (written before checkpoints had run records), "
                          f"so its model cannot be rebuilt; allowed: {ALLOWED} written by this version of hicra-train")
    # The architecture only (config, tokenizer; no weights read or initialised): the checkpoint holds every weight,
    # so a 7B export reads the checkpoint and not also the base model's 30 GB, and a hub model needs only its config.
    bundle = build(model_config(record["config"], f"checkpoint {path}"), meta_device=True)
    bundle.model.to_empty(device="cpu")  # storage for the checkpoint's values
    if hasattr(bundle.model, "tie_weights"):  # to_empty gives each holder of a tied weight its own tensor
        bundle.model.tie_weights()
    return bundle


def load_policy_weights(model, path: Path, state: dict) -> None:
    """The checkpoint's `policy.*` weights into `model`, every one of them and nothing else (a reference model's
    copy is left out). A sharded checkpoint is read in place into the model's own tensors: one copy in memory."""
    own = model.state_dict()
    if path.is_dir():
        from hicra.training.sharded_checkpoint import weight_shapes

        saved = {key[len(POLICY):]: shape for key, shape in weight_shapes(path).items() if key.startswith(POLICY)}
    else:
        weights = {key[len(POLICY):]: value for key, value in state["state_dict"].items() if key.startswith(POLICY)}
        saved = {key: tuple(value.shape) for key, value in weights.items()}
    now = {key: tuple(value.shape) for key, value in own.items()}
    if saved != now:
        key = min(k for k in saved.keys() | now.keys() if saved.get(k) != now.get(k))
        raise ConfigError(f"checkpoint {path} does not hold the model its config builds ({key}: "
                          f"{saved.get(key, 'absent')} in the checkpoint, {now.get(key, 'absent')} built)")
    if path.is_dir():
        _load_shards_into(model, path)
    else:
        model.load_state_dict(weights, strict=True)


def _load_shards_into(model, path: Path) -> None:
    import torch.distributed.checkpoint as dcp

    from hicra.training.sharded_checkpoint import WEIGHTS, SafeFileSystemReader

    target = {WEIGHTS: {POLICY + key: value for key, value in model.state_dict().items()}}
    with warnings.catch_warnings():  # DCP warns that it runs without a process group: that is the point here
        warnings.simplefilter("ignore")
        dcp.load(target, storage_reader=SafeFileSystemReader(path), no_dist=True)


def _write(bundle, out_dir: Path) -> None:
    from hicra.models.lora import save_final_model

    tmp = out_dir.with_name(f".{out_dir.name}.exporting-{os.getpid()}")
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        save_final_model(bundle.model, tmp)  # LoRA merged; config.json, weights, generation_config.json
        bundle.tokenizer.save_pretrained(tmp)
        os.rename(tmp, out_dir)  # onto nothing, or onto an empty folder
    except OSError as err:
        raise ConfigError(f"cannot write {out_dir} ({err.strerror or err}); nothing was written") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
