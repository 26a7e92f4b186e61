"""A checkpoint is data, never code: everything hicra-train loads from a `.ckpt` (its own check of the run record,
and Lightning's restore on `trainer.fit(ckpt_path=...)`) is read with `torch.load(weights_only=True)`. A planted
file whose unpickling would run code is refused in one line, and its payload never runs (a marker file tells)."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from support import TINY_RUN, run_train

from hicra.errors import ConfigError
from hicra.training.checkpointing import AtomicCheckpointIO
from hicra.training.resume import load_checkpoint


class Payload:
    """Unpickling it creates `marker`: what `os.system(...)` would do in a real attack."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def _planted(tmp_path: Path, legacy: bool = False) -> tuple[Path, Path]:
    """A `last.ckpt` shaped like hicra's (step, weights) that also carries the payload; and its marker."""
    marker, ckpt = tmp_path / "payload-ran", tmp_path / "run" / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    state = {"global_step": 2, "state_dict": {"w": torch.zeros(2)}, "hicra_run": Payload(marker)}
    if legacy:
        ckpt.write_bytes(pickle.dumps(state))
    else:
        torch.save(state, ckpt)
    return ckpt, marker


@pytest.mark.parametrize("legacy", [False, True], ids=["torch.save", "plain-pickle"])
def test_a_planted_checkpoint_is_refused_before_its_payload_runs(tmp_path, legacy):
    ckpt, marker = _planted(tmp_path, legacy)
    expected = (r"holds objects hicra does not load \(io.open\)" if not legacy
                else r"\(not a file torch.save writes\)")
    with pytest.raises(ConfigError, match=rf"^ckpt_path={ckpt} is not a hicra checkpoint.*{expected}"):
        load_checkpoint(ckpt)
    assert not marker.exists()


def test_lightnings_own_load_takes_weights_only(tmp_path, monkeypatch):
    """Lightning passes weights_only=None, which torch turns into False where TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD is set
    (or in a torch before 2.6): hicra's CheckpointIO always asks for True."""
    ckpt, marker = _planted(tmp_path)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        AtomicCheckpointIO().load_checkpoint(ckpt)  # as Lightning's strategy calls it, weights_only not given
    assert not marker.exists()
    ok = tmp_path / "ok.ckpt"
    torch.save({"global_step": 1, "state_dict": {"w": torch.ones(1)}}, ok)
    assert AtomicCheckpointIO().load_checkpoint(ok)["global_step"] == 1


def test_train_refuses_a_planted_checkpoint_in_one_line(tmp_path):
    """Through hicra-train (in-process): ckpt_path=<planted file> and ckpt_path=last in its run folder."""
    ckpt, marker = _planted(tmp_path)
    for how in (f"ckpt_path={ckpt}", "ckpt_path=last"):
        result = run_train([*TINY_RUN, f"hydra.run.dir={tmp_path}/run", how], tmp_path)
        assert result.returncode == 2, result.stderr[-2000:]
        assert "Traceback" not in result.stderr
        line = result.stderr.strip().splitlines()[-1]
        assert line.startswith(f"hicra-train: error: ckpt_path={ckpt} is not a hicra checkpoint: it holds objects "
                               f"hicra does not load"), line
    assert not marker.exists()
