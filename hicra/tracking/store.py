"""MLflow plumbing: everything needed to reproduce a run is logged with it.

Per run: the full resolved config (flattened params + `config/resolved.yaml` artifact + Hydra's own `.hydra/`
files), the Hydra choices as `choice.<group>` tags, the git SHA and dirty flag, the seed, the command line and the
machine (CPU, cores, RAM, GPU, torch), so a time read from a run names where it was measured.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from hicra.errors import ConfigError

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


def git_state(root: Path = PROJECT_ROOT) -> dict[str, str]:
    """SHA and dirty flag of the checkout the code runs from ('unknown' outside git)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()

    try:
        sha = git("rev-parse", "HEAD") or "unknown"
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return {"git.sha": "unknown", "git.dirty": "unknown"}
    return {"git.sha": sha, "git.dirty": str(dirty).lower()}


def machine_description() -> str:
    """"AMD EPYC 9B14, 2 cores, 24 GiB RAM, no GPU, torch 2.13.0+cpu": the machine a measurement was taken on."""
    import platform
    import re

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


def default_run_name(choices: dict[str, str], seed: int) -> str:
    """`hicra__strategic_grams__s1`: what differs between the arms of a sweep, readable in the MLflow UI."""
    return f"{choices.get('algorithm', 'algo')}__{choices.get('planner', 'planner')}__s{seed}"


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
        logger.log_hyperparams(flatten(resolved))
    else:
        tags |= {"hicra.resumed_from": str(resumed_from.resolve()), "hicra.resume_changes": resume_changes or "none"}
        artifact_dir = f"config/resumed-{int(resumed_from.stat().st_mtime)}"
    for key, value in tags.items():
        client.set_tag(run_id, key, value)
    config_dir = Path(run_dir or ".") / "config"
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "resolved.yaml").write_text(OmegaConf.to_yaml(resolved))
    client.log_artifact(run_id, str(config_dir / "resolved.yaml"), artifact_dir)
    hydra_dir = Path(run_dir or ".") / ".hydra"
    for name in ("config.yaml", "overrides.yaml", "hydra.yaml"):
        if (hydra_dir / name).is_file():
            client.log_artifact(run_id, str(hydra_dir / name), f"{artifact_dir}/hydra")


def mark_running(logger) -> None:
    """Set the run's status back to RUNNING (Lightning's `validate` finalises the logger when it ends)."""
    if logger is not None:
        logger.experiment.update_run(logger.run_id, status="RUNNING")


def mark_killed(logger) -> None:
    """KILLED: stopped from outside (SIGTERM, SIGUSR1), resumable; not FAILED, which Lightning sets on any exception."""
    if logger is not None:
        logger.experiment.set_terminated(logger.run_id, "KILLED")


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
    except Exception as err:  # noqa: BLE001 - any failure here means the URI is unusable
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
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes
        yield


def ensure_experiment(uri: str, name: str, artifact_location: str | None) -> str:
    """Id of the MLflow experiment `name`, created unless it exists; a job that loses the creation race uses the
    winner's."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=uri)
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        return existing.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location)
    except MlflowException:
        existing = client.get_experiment_by_name(name)
        if existing is None:
            raise
        return existing.experiment_id


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

