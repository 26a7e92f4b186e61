"""MLflow plumbing: everything needed to reproduce a run is logged with it.

Per run: the full resolved config (flattened params + `config/resolved.yaml` artifact + Hydra's own `.hydra/`
files), the Hydra choices as `choice.<group>` tags, the git SHA and dirty flag, the seed, the command line and the
machine (CPU, cores, RAM, GPU, torch), so a time read from a run names where it was measured.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from hicra.errors import ConfigError
from hicra.tracking.artifacts import log_artifacts

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def absolute_tracking_uri(uri: str) -> str:
    """`sqlite:///outputs/mlflow.db` -> `sqlite:////abs/outputs/mlflow.db`; plain paths -> file URIs; URLs as is."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{Path(uri[len('sqlite:///'):]).expanduser().resolve()}"
    if "://" not in uri:
        return Path(uri).expanduser().resolve().as_uri()
    return uri


def absolute_artifact_location(location: str | None) -> str | None:
    if location is None or "://" in location:
        return location
    return Path(location).expanduser().resolve().as_uri()


_GIT_STATES: dict[Path, dict[str, str]] = {}


def git_state(root: Path = PROJECT_ROOT) -> dict[str, str]:
    """SHA and dirty flag of the checkout the code runs from ('unknown' outside git), read once per process: the jobs
    of a multirun in one process run the code imported at its first job, so a commit made while the sweep runs must
    not be credited to its later jobs."""
    if root not in _GIT_STATES:
        _GIT_STATES[root] = _read_git_state(root)
    return dict(_GIT_STATES[root])


def _read_git_state(root: Path) -> dict[str, str]:
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=False)
        return done.stdout.strip()

    try:
        sha = git("rev-parse", "HEAD") or "unknown"
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return {"git.sha": "unknown", "git.dirty": "unknown"}
    return {"git.sha": sha, "git.dirty": str(dirty).lower()}


def machine_description() -> str:
    """"AMD EPYC 9B14, 2 cores, 24 GiB RAM, no GPU, torch 2.13.0+cpu": the machine a measurement was taken on."""
    import platform

    cpu = platform.processor() or "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = re.findall(r"model name\s*:\s*(.+)", cpuinfo.read_text())
        cpu = names[0].strip() if names else cpu
    text = f"{cpu}, {os.cpu_count()} cores"
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        kb = int(re.search(r"MemTotal:\s+(\d+)", meminfo.read_text()).group(1))
        text += f", {kb / 2**20:.0f} GiB RAM"
    import torch

    text += f", GPU: {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"
    return text + f", torch {torch.__version__}"


# Short names of conf/planner/ options in run names (tests/training/test_cli.py checks the keys are real options)
PLANNER_SHORT = {"strategic_grams": "grams", "placebo_grams": "placebo", "random": "placebo_spans",
                 "high_entropy": "entropy", "authors_rule": "authors", "none": ""}
NAMED_ELSEWHERE = ("seed", "algorithm", "planner")  # already in the name's first words


def default_run_name(choices: dict[str, str], seed: int, swept: dict[str, str] | None = None,
                     uses_planner: bool = True) -> str:
    """`s1 hicra grams alpha=0.1`: the seed first (MLflow's runs table cuts long names), then the algorithm, the
    planner and the values of the keys a sweep varies (their last dotted part), so the arms of a sweep read apart.
    The planner is named only where it changes training (`uses_planner`: the algorithm reads the planning mask) or is
    swept: `s1 grpo grams` beside `s1 hicra grams` read as if GRPO used the grams."""
    planner = choices.get("planner", "none")
    named_planner = PLANNER_SHORT.get(planner, planner) if uses_planner or "planner" in (swept or {}) else ""
    words = [f"s{seed}", choices.get("algorithm", "run"), named_planner]
    words += [f"{key.rsplit('.', 1)[-1]}={value}" for key, value in (swept or {}).items()
              if key.rsplit(".", 1)[-1] not in NAMED_ELSEWHERE]
    return " ".join(w for w in words if w)[:120]


IDENTITY_PARAMS = ("algorithm", "planner", "task", "model")  # top-level params: MLflow's compare views plot these
PURE_COPY = re.compile(r"\$\{[\w.]+\}")  # `${algorithm.alpha}`, `${..alpha}`; not a resolver like `${oc.env:X}`


def loggable_params(cfg: DictConfig, choices: dict[str, str]) -> dict[str, str]:
    """The flattened resolved config as MLflow params, minus what only adds noise to the params table: Hydra's
    `_target_`/`_partial_` plumbing and pure `${...}` copies of another key (`algorithm.token_advantage_fn.alpha`
    repeats `algorithm.alpha`, `model.lora` repeats `lora`); plus the Hydra choices that identify a run as top-level
    params. `config/resolved.yaml` keeps everything."""
    raw = flatten(OmegaConf.to_container(cfg, resolve=False))
    copies = [key for key, value in raw.items() if PURE_COPY.fullmatch(value)]
    params = {key: value for key, value in flatten(OmegaConf.to_container(cfg, resolve=True)).items()
              if key.rsplit(".", 1)[-1] not in ("_target_", "_partial_")
              and not any(key == c or key.startswith(f"{c}.") for c in copies)}
    return params | {key: choices[key] for key in IDENTITY_PARAMS if key in choices and key not in params}


def run_tags(cfg: DictConfig, choices: dict[str, str]) -> dict[str, str]:
    tags = {f"choice.{group}": str(option) for group, option in choices.items()}
    tags |= git_state() | {"machine": machine_description()}
    tags |= {"seed": str(cfg.seed), "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:5000]}
    return tags


def flatten(cfg: dict, prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat |= flatten(value, name + ".")
        else:
            flat[name] = str(value)[:6000]  # MLflow's param limit; the YAML artifact keeps the full value
    return flat


def log_run_metadata(logger, cfg: DictConfig, choices: dict[str, str], run_dir: Path | None,
                     resumed_from: Path | None = None, resume_changes: str = "") -> None:
    """Params, tags and config artifacts on the logger's run (Lightning's MLFlowLogger).

    A resumed run keeps the params of its first start (MLflow params are write-once); the resuming config goes
    to `config/resumed-<checkpoint mtime>/`, the tags say where the run lives now, and `hicra.resume_changes` names
    the keys this resume changed (hicra/training/resume.py allows only those that leave the experiment as it is).
    """
    client, run_id = logger.experiment, logger.run_id
    resolved = OmegaConf.to_container(cfg, resolve=True)
    tags = run_tags(cfg, choices)
    # Where the run's files live (final_model/, completions/): `hicra-eval <run id>` finds the checkpoint here.
    tags |= {"hicra.run_kind": "train", "hicra.run_dir": str(Path(run_dir or ".").resolve())}
    artifact_dir = "config"
    if resumed_from is None:
        logger.log_hyperparams(loggable_params(cfg, choices))
    else:
        tags |= {"hicra.resumed_from": str(resumed_from.resolve()), "hicra.resume_changes": resume_changes or "none"}
        artifact_dir = f"config/resumed-{int(resumed_from.stat().st_mtime)}"
    for key, value in tags.items():
        client.set_tag(run_id, key, value)
    config_dir = Path(run_dir or ".") / "config"
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "resolved.yaml").write_text(OmegaConf.to_yaml(resolved))
    log_artifacts([logger], [config_dir / "resolved.yaml"], artifact_dir)  # a full artifact store: said, named
    hydra_dir = Path(run_dir or ".") / ".hydra"
    log_artifacts([logger], [hydra_dir / name for name in ("config.yaml", "overrides.yaml", "hydra.yaml")
                             if (hydra_dir / name).is_file()], f"{artifact_dir}/hydra")


def run_description(name: str, choices: dict[str, str], seed: int, overrides: list[str], steps: int,
                    val_history: list[dict], completions: str | None, run_url: str) -> str:
    """The run page's description (MLflow's `mlflow.note.content`, Markdown): what the run was, how it did on the
    held-out split (with the Wilson interval and the two fractions to read before an accuracy), where its last
    completions are, then the overrides. The outcome comes before the overrides: the run page shows the first few
    lines and folds the rest behind "Show more", and a sweep's overrides (paths, URIs) fill those lines."""
    what = ", ".join(f"{k} `{choices[k]}`" for k in IDENTITY_PARAMS if k in choices)
    lines = [f"**{name}**: {what}, seed {seed}, {steps} policy updates.", ""]
    if val_history:
        first, last = val_history[0], val_history[-1]
        interval = (f" [{last['val/accuracy_low']:.3f}, {last['val/accuracy_high']:.3f}] (95% Wilson)"
                    if "val/accuracy_low" in last else "")
        lines += [(f"Held-out accuracy at step {last['step']}: **{last['val/accuracy']:.3f}**{interval} on "
                   f"{last.get('num_prompts', '?')} questions, from {first['val/accuracy']:.3f} at step "
                   f"{first['step']}; "
                   f"boxed {last.get('val/boxed_frac', float('nan')):.2f}, truncated "
                   f"{last.get('val/truncated_frac', float('nan')):.2f} (read these before the accuracy)."), ""]
    if completions:
        lines += [f"Last completions: [{completions}]({run_url}/artifactPath/{completions})", ""]
    lines += [f"Overrides: `{' '.join(overrides)}`" if overrides else "Overrides: none (the defaults)."]
    return "\n".join(lines)


MAX_DESCRIPTION_CHARS = 60_000  # a run description is a tag: MLflow stores up to 65,535 characters (sqlite/MySQL)


def describe_run(client, run_id: str, text: str) -> None:
    """The run page's description (MLflow renders the `mlflow.note.content` tag as Markdown there)."""
    client.set_tag(run_id, "mlflow.note.content", text[:MAX_DESCRIPTION_CHARS])


def not_stored_note(logger) -> str:
    """The end of a run's description naming the artifacts the store refused (a full artifact store), also set as tag
    `hicra.artifacts_not_stored`; empty when all were stored."""
    missing = list(dict.fromkeys(getattr(logger, "not_stored", [])))
    if not missing:
        return ""
    listed = ", ".join(missing)[:4000]
    logger.experiment.set_tag(logger.run_id, "hicra.artifacts_not_stored", listed)
    return f"\n\nNot stored in MLflow (the files stay in the run folder): {listed}"


def mark_running(logger) -> None:
    """Set the run's status back to RUNNING (Lightning's `validate` finalises the logger when it ends)."""
    if logger is not None:
        logger.experiment.update_run(logger.run_id, status="RUNNING")


def mark_killed(logger) -> str:
    """KILLED: stopped from outside (SIGTERM, SIGUSR1), resumable; not FAILED, which Lightning sets on any exception.
    Returns what became of the run, for the stop's line: a store that does not answer cannot be told."""
    if logger is None:
        return ""
    outage = getattr(logger, "outage", None)
    if outage is None or not outage.active:
        try:
            logger.experiment.set_terminated(logger.run_id, "KILLED")
            return f"MLflow run {logger.run_id} marked KILLED"
        except Exception as err:
            from hicra.tracking.outage import is_unreachable

            if not is_unreachable(err):
                raise
    unsent = len(getattr(logger, "unsent", []))
    return (f"MLflow run {logger.run_id} not marked KILLED: the tracking server does not answer (its {unsent} unsent "
            f"metric values are in the checkpoint, sent when the run resumes)")


def quiet_mlflow() -> None:
    """No artifact progress bars, no INFO lines from MLflow's store migrations ("Creating initial MLflow database
    tables...", "Updating database tables"): a new store is not news. MLflow sets its loggers' levels when it is
    imported, so it is imported here first and the levels set after."""
    import logging
    import os

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow  # noqa: F401

    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def check_tracking_uri(uri: str) -> None:
    """Fail before any model loads when the store cannot be opened (bad scheme, unwritable folder, no server)."""
    import mlflow

    if uri.startswith(("http://", "https://")):
        check_server_reachable(uri)
    try:
        if uri.startswith("sqlite:///"):
            Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)  # sqlite makes the file only
        mlflow.MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    except Exception as err:  # any failure here means the URI is unusable
        raise ConfigError(f"logger.tracking_uri '{uri}' cannot be used: {str(err).splitlines()[0][:200]}") from err


@contextlib.contextmanager
def store_lock(uri: str):
    """Exclusive lock on `<db>.lock` for a sqlite store: parallel jobs on one machine (hydra/launcher=joblib) would
    otherwise race to create and migrate the same fresh database ("Online migration expected to match one row")."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    import fcntl

    lock = Path(uri[len("sqlite:///"):] + ".lock")
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        handle = open(lock, "a")  # noqa: SIM115 - closed by the with below
    except OSError as err:
        raise ConfigError(f"logger.tracking_uri '{uri}' cannot be used: {err.strerror} ({lock.parent})") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes
        except OSError as err:  # a filesystem without flock (NFS without lockd, Lustre without -o flock)
            print(f"hicra-train: {lock} cannot be locked ({err.strerror}); going on without the lock: parallel jobs "
                  f"creating this store at once may clash", file=sys.stderr, flush=True)
        yield


# MLflow 3's UI opens an experiment of this kind in its model-training view (runs table, charts), not the GenAI one.
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}


def ensure_experiment(uri: str, name: str, artifact_location: str | None) -> str:
    """Id of the MLflow experiment `name`, created unless it exists; a job that loses the creation race uses the
    winner's."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=uri)
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        check_experiment_active(existing, uri)
        return existing.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location, tags=EXPERIMENT_TAGS)
    except MlflowException:
        existing = client.get_experiment_by_name(name)
        if existing is None:
            raise
        return existing.experiment_id


def check_experiment_active(experiment, uri: str) -> None:
    """An experiment deleted in the MLflow UI keeps its name: MLflow would refuse every run logged to it."""
    if experiment.lifecycle_stage == "deleted":
        raise ConfigError(f"logger.experiment_name={experiment.name} names an MLflow experiment that was deleted "
                          f"(in the MLflow UI); restore it there (or `mlflow experiments restore --experiment-id "
                          f"{experiment.experiment_id}` with MLFLOW_TRACKING_URI={uri}) or choose another "
                          f"logger.experiment_name")


def check_run_resumable(uri: str, run_id: str) -> None:
    """The MLflow run a checkpoint continues is in the store and not deleted (MLflow refuses to log to a deleted run)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        run = MlflowClient(tracking_uri=uri).get_run(run_id)
    except MlflowException:
        raise ConfigError(f"the checkpoint belongs to MLflow run {run_id}, which is not in logger.tracking_uri={uri}; "
                          f"pass the tracking URI the run was logged to") from None
    if run.info.lifecycle_stage == "deleted":
        raise ConfigError(f"the checkpoint belongs to MLflow run {run_id}, which was deleted (in the MLflow UI); "
                          f"nothing was changed: restore it there (or `mlflow runs restore --run-id {run_id}` with "
                          f"MLFLOW_TRACKING_URI={uri}) and resume again, or start a new run without ckpt_path")


def check_store(logger_cfg, run_id: str | None) -> None:
    """Before any model loads (seconds, not minutes): the store opens, `logger.experiment_name` is not a deleted
    experiment, and the run a checkpoint continues exists and is not deleted. Reads only; creates nothing but a
    fresh sqlite store's tables."""
    from mlflow import MlflowClient

    quiet_mlflow()
    uri = absolute_tracking_uri(logger_cfg.tracking_uri)
    with store_lock(uri):
        check_tracking_uri(uri)
        experiment = MlflowClient(tracking_uri=uri).get_experiment_by_name(logger_cfg.experiment_name)
        if experiment is not None:
            check_experiment_active(experiment, uri)
        if run_id is not None:
            check_run_resumable(uri, run_id)


def check_server_reachable(uri: str, timeout_s: float = 5.0) -> None:
    """One quick request to the server's /health: MLflow's client would retry an absent server for minutes."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s):
            pass
    except urllib.error.HTTPError:
        return  # the server answered (a proxy may not serve /health): reachable
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise ConfigError(f"logger.tracking_uri={uri} is unreachable ({reason}); start the MLflow server or use "
                          f"a local store, e.g. logger.tracking_uri=sqlite:///outputs/mlflow.db") from None

