"""`checkpoint=...` -> the models to evaluate, each with what its training run says about it.

    null                 the `model` group (a base model)
    <folder>             a saved model (config.json inside), or a run folder holding final_model/
    <run id>             an MLflow training run: <its hicra.run_dir tag>/final_model, its task and system prompt
    experiment:<name>    every FINISHED training run of that experiment (runs without a final model are skipped)
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from hicra.config.instantiate import refuse_foreign_targets, refuse_interpolations
from hicra.config.rules import worked_examples
from hicra.errors import ConfigError

RUN_ID = re.compile(r"[0-9a-f]{32}")  # MLflow's run ids: uuid4 hex
EXPERIMENT_PREFIX = "experiment:"
RESOLVED_CONFIG = "config/resolved.yaml"  # written by hicra.tracking.store.log_run_metadata, on disk and as an artifact
# All a stored config may build: hicra's own task classes (the `task` options of conf/task and conf/benchmark; a test
# checks every shipped option is here). Anyone who can log a run to a shared store writes that config, so any other
# `_target_` (pandas.read_pickle, os.system, ...) is refused before anything is built.
STORED_TASK_TARGETS = frozenset({"hicra.tasks.ReasoningGymTask", "hicra.tasks.LocalFileTask",
                                 "hicra.tasks.EvalFileTask", "hicra.tasks.ChampTask"})


@dataclass
class Source:
    label: str  # the training run's name, or the model's: names the eval run and the table row
    checkpoint: str  # what is loaded: a folder, or the `model` group's name_or_path
    model_path: Path | None = None  # None = build the `model` group
    run: object | None = None  # the training run (mlflow Run), when evaluating one
    resolved: DictConfig | None = None  # its resolved training config (task, system_prompt)

    @property
    def run_id(self) -> str | None:
        return self.run.info.run_id if self.run is not None else None

    @property
    def origin(self) -> str:
        """Who wrote `resolved`, for error messages."""
        return f"MLflow run '{self.run_id}' ({self.label}) {RESOLVED_CONFIG}"

    @property
    def experiment_id(self) -> str | None:
        return self.run.info.experiment_id if self.run is not None else None


def needs_store(checkpoint: str | None) -> bool:
    """True when `checkpoint` names MLflow runs rather than a model on disk."""
    if checkpoint is None:
        return False
    return checkpoint.startswith(EXPERIMENT_PREFIX) or (not Path(checkpoint).expanduser().exists()
                                                         and RUN_ID.fullmatch(checkpoint) is not None)


def base_model(model_cfg: DictConfig, model_choice: str) -> Source:
    """The `model` group's model, named by its choice (`smollm2_135m`) or its hub id / folder (`model=hf`)."""
    name_or_path = model_cfg.get("name_or_path")
    if not name_or_path:
        return Source(label=model_choice, checkpoint=f"{model_choice} (random init)")
    label = model_choice if "://" in name_or_path else Path(name_or_path).name  # Qwen/Qwen2.5-0.5B -> Qwen2.5-0.5B
    return Source(label=label, checkpoint=str(name_or_path))


def model_folder(checkpoint: str) -> Source:
    """A saved model folder; a hicra-train run folder stands for its final_model/."""
    path = Path(checkpoint).expanduser()
    if not path.exists():
        raise ConfigError(f"checkpoint path '{checkpoint}' does not exist; allowed: a model folder, an MLflow "
                          "run id or experiment:<name>")
    if (path / "final_model").is_dir():
        path = path / "final_model"
    if not (path / "config.json").is_file():
        raise ConfigError(f"checkpoint '{checkpoint}' is not a saved model (no config.json in {path}); give a "
                          "final_model folder written by hicra-train, its run folder, or a run id")
    label = path.parent.name if path.name == "final_model" else path.name
    return Source(label=label, checkpoint=str(path.resolve()), model_path=path.resolve())


def training_run(client, run_id: str) -> Source:
    """The training run `run_id`: its final model, resolved config and name."""
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise ConfigError(f"MLflow run '{run_id}' not found in {client.tracking_uri}; check the id in the "
                          "MLflow UI, or set logger.tracking_uri to the store it was logged to") from None
    return _from_run(client, run)


def experiment_runs(client, name: str) -> tuple[list[Source], list[str]]:
    """(sources, notes): every FINISHED training run of experiment `name` that saved a final model."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        known = ", ".join(sorted(e.name for e in client.search_experiments())) or "none"
        raise ConfigError(f"experiment '{name}' not found in {client.tracking_uri}; experiments there: {known}")
    runs = client.search_runs([experiment.experiment_id], filter_string="attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time ASC"], max_results=5000)
    runs = [r for r in runs if r.data.tags.get("hicra.run_kind", "train") == "train"]
    if not runs:
        raise ConfigError(f"experiment '{name}' has no finished training runs to evaluate")
    sources, problems = [], []
    for run in runs:
        try:
            sources.append(_from_run(client, run))
        except ConfigError as err:  # one unusable run does not stop a study's evaluation
            problems.append(str(err))
    if not sources:
        raise ConfigError(f"no finished training run of experiment '{name}' can be evaluated: {problems[0]}")
    return sources, [f"skipped: {problem}" for problem in problems]


def _from_run(client, run) -> Source:
    tags, run_id = run.data.tags, run.info.run_id
    name = run.info.run_name or run_id[:8]
    kind = tags.get("hicra.run_kind", "train")
    if kind != "train":
        raise ConfigError(f"MLflow run '{run_id}' ({name}) is a '{kind}' run; give the id of a hicra-train run")
    if "hicra.run_dir" not in tags:
        raise ConfigError(f"MLflow run '{run_id}' ({name}) has no hicra.run_dir tag (not logged by hicra-train?); "
                          "pass its model folder as checkpoint=<path>")
    run_dir = Path(tags["hicra.run_dir"])
    final = run_dir / "final_model"
    if not (final / "config.json").is_file():
        raise ConfigError(f"MLflow run '{run_id}' ({name}) has no final model at {final}; train with "
                          "save_final_model=true, or pass a model folder as checkpoint=<path>")
    source = Source(label=name, checkpoint=str(final), model_path=final, run=run)
    source.resolved = _checked(_resolved_config(client, run_id, run_dir), source.origin)
    return source


def _resolved_config(client, run_id: str, run_dir: Path) -> DictConfig:
    """The training run's resolved config: from its run folder, else from its MLflow artifact."""
    local = run_dir / RESOLVED_CONFIG
    if local.is_file():
        return _load(local, f"MLflow run '{run_id}': {local}")
    with tempfile.TemporaryDirectory(prefix="hicra-eval-") as tmp:
        try:
            path = client.download_artifacts(run_id, RESOLVED_CONFIG, tmp)
        except Exception:  # noqa: BLE001 - any failure means the config is not there
            raise ConfigError(f"MLflow run '{run_id}' has no {RESOLVED_CONFIG} (neither in {run_dir} nor as an "
                              "artifact): its task is unknown; pass its model folder as checkpoint=<path>") from None
        return _load(Path(path), f"MLflow run '{run_id}': artifact {RESOLVED_CONFIG}")


def _load(path: Path, where: str) -> DictConfig:
    try:
        config = OmegaConf.load(path)
    except (yaml.YAMLError, OmegaConfBaseException, UnicodeDecodeError, ValueError) as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:120]
        raise ConfigError(f"{where} is not a readable config ({reason})") from None
    if not isinstance(config, DictConfig):
        raise ConfigError(f"{where} is not a config mapping")
    return config


def _checked(config: DictConfig, origin: str) -> DictConfig:
    """The stored config, once nothing in it can run (no interpolation anywhere, only hicra's own task classes) and
    the values hicra-eval reads from it have their types."""
    refuse_interpolations(config, origin, "config")
    if "task" in config:
        refuse_foreign_targets(config.task, STORED_TASK_TARGETS, origin, "task")
    budget = OmegaConf.select(config, "rollout.max_new_tokens")
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget < 1):
        raise ConfigError(f"{origin}: rollout.max_new_tokens={budget!r} is not an integer >= 1")
    prompt = config.get("system_prompt")
    if prompt is not None and not isinstance(prompt, str):
        raise ConfigError(f"{origin}: system_prompt is a {type(prompt).__name__}, not text")
    shots = config.get("demonstrations")
    if shots is not None and not worked_examples()(OmegaConf.to_container(shots) if OmegaConf.is_config(shots)
                                                   else shots):
        raise ConfigError(f"{origin}: demonstrations is not {worked_examples().allowed}")
    return config


def resolve(checkpoint: str | None, model_cfg: DictConfig, model_choice: str, client) -> tuple[list[Source], list[str]]:
    """(sources, notes) for a `checkpoint` value; `client` is None when logging is off (logger=none)."""
    if checkpoint is None:
        return [base_model(model_cfg, model_choice)], []
    if needs_store(checkpoint) and client is None:
        raise ConfigError(f"checkpoint={checkpoint} names MLflow runs, which logger=none cannot read; use "
                          "logger=mlflow, or pass a model folder as checkpoint=<path>")
    if checkpoint.startswith(EXPERIMENT_PREFIX):
        name = checkpoint[len(EXPERIMENT_PREFIX):]
        if not name:
            raise ConfigError("checkpoint=experiment: needs an experiment name, e.g. experiment:hicra_vs_grpo")
        return experiment_runs(client, name)
    if needs_store(checkpoint):
        return [training_run(client, checkpoint)], []
    looks_like_path = "/" in checkpoint or checkpoint.startswith((".", "~")) or Path(checkpoint).exists()
    if not looks_like_path:
        raise ConfigError(f"checkpoint '{checkpoint}' is neither an existing model folder, an MLflow run id "
                          "(32 hex characters) nor experiment:<name>")
    return [model_folder(checkpoint)], []
