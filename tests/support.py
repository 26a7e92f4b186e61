"""Helpers shared by tests: paths and running the real `hicra-train` CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = PROJECT_ROOT / "conf"
HICRA_TRAIN = Path(sys.executable).parent / "hicra-train"

# Overrides that make a real end-to-end run take seconds: tiny model, tiny batches, short generations.
TINY_RUN = ["experiment=smoke"]


def composer(config_name: str):
    """composer("train")(*overrides) -> DictConfig composed from conf/<config_name>.yaml with Hydra's compose API
    (callers clear GlobalHydra when done; the fixtures in conftest.py do)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    def _compose(*overrides: str):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name=config_name, overrides=list(overrides))

    return _compose


def exit_code(main, args: list[str]) -> int:
    """Run an argparse CLI's `main(args)` in-process; its return value or SystemExit code."""
    try:
        return main(args)
    except SystemExit as exc:
        return exc.code


def cli_env() -> dict[str, str]:
    """Environment of a CLI subprocess: quiet, and `support.*` targets (test tasks) importable."""
    return dict(os.environ, PYTHONWARNINGS="ignore", PYTHONPATH=str(PROJECT_ROOT / "tests"))


def run_cli(args: list[str], tmp_path: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run `hicra-train` in a subprocess with outputs and the MLflow store under tmp_path."""
    env = cli_env()
    full = [str(HICRA_TRAIN), *args]
    if not any(a.startswith(("hydra.run.dir", "hydra.sweep.dir")) for a in args):
        full += [f"hydra.run.dir={tmp_path}/run", f"hydra.sweep.dir={tmp_path}/sweep"]
    if not any(a.startswith("logger") for a in args):
        full += [f"logger.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
                 f"logger.artifact_location={tmp_path}/mlartifacts"]
    return subprocess.run(full, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


class ParityTask:
    """A test task on which a random-init model earns mixed rewards, so the updates are not zero.

    Reward 1 when the completion has an even number of characters. Questions come from chain_sum-like text.
    """

    name = "parity"
    instruction = "Answer."

    def __init__(self, train_size: int = 32, val_size: int = 4, **_ignored):
        from hicra.tasks import Example

        self._train = [Example(f"What is {i} + {i + 1}?", str(2 * i + 1)) for i in range(train_size)]
        self._val = [Example(f"What is {i} - 1?", str(i - 1)) for i in range(1000, 1000 + val_size)]

    def train_examples(self):
        return self._train

    def val_examples(self):
        return self._val

    def score(self, completion: str, example) -> float:
        return float(len(completion) % 2 == 0)


class FlakyTask(ParityTask):
    """ParityTask whose scorer raises on every completion of length divisible by 3 (a buggy reward function)."""

    def score(self, completion: str, example) -> float:
        if len(completion) % 3 == 0:
            raise ValueError("cannot parse this completion")
        return super().score(completion, example)
