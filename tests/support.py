"""Helpers shared by tests: paths and running the real `hicra-train` CLI."""

from __future__ import annotations

import contextlib
import io
import logging
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
    """Environment of a CLI subprocess: quiet, `support.*` targets (test tasks) importable, and `hicra` imported
    from this checkout (not from wherever the package was installed editable, e.g. another worktree)."""
    path = os.pathsep.join([str(PROJECT_ROOT), str(PROJECT_ROOT / "tests")])
    return dict(os.environ, PYTHONWARNINGS="ignore", PYTHONPATH=path)


def with_test_outputs(args: list[str], tmp_path: Path, run_folder: str = "run") -> list[str]:
    """`args` plus run/sweep folders and an MLflow store under tmp_path, unless the caller chose them."""
    full = list(args)
    if not any(a.startswith(("hydra.run.dir", "hydra.sweep.dir")) for a in args):
        full += [f"hydra.run.dir={tmp_path}/{run_folder}", f"hydra.sweep.dir={tmp_path}/sweep"]
    if not any(a.startswith("logger") for a in args):
        Path(tmp_path).mkdir(parents=True, exist_ok=True)
        seed_store(Path(tmp_path) / "mlflow.db")
        full += [f"logger.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
                 f"logger.artifact_location={tmp_path}/mlartifacts"]
    return full


def run_cli(args: list[str], tmp_path: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run the real `hicra-train` in a subprocess with outputs and the MLflow store under tmp_path.

    A fresh interpreter pays the torch / Lightning / transformers imports (seconds): keep it for what only a real
    process proves (the console script, SIGKILL, environment read at import time); use `run_train` otherwise.
    """
    return subprocess.run([str(HICRA_TRAIN), *with_test_outputs(args, tmp_path)], cwd=PROJECT_ROOT, env=cli_env(),
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False)


def run_in_process(main, prog: str, args: list[str]) -> subprocess.CompletedProcess:
    """Call a console script's `main()` as the shell would (sys.argv patched), capturing its exit code and output.

    The result looks like `subprocess.run`'s. An unexpected exception still ends as Hydra ends it in a real process
    (a stack trace on stderr, exit 1), so "no Traceback" checks mean the same in both.
    """
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    out, err = io.StringIO(), io.StringIO()
    argv, root = sys.argv, logging.getLogger()
    handlers, level = list(root.handlers), root.level
    sys.argv = [prog, *args]
    code: int | str | None = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main()
            except SystemExit as exc:
                code = exc.code
    finally:
        sys.argv = argv
        GlobalHydra.instance().clear()
        HydraConfig.instance().cfg = None  # as in a fresh process: later in-process `train(cfg)` calls see no job
        for handler in set(root.handlers) - set(handlers):  # Hydra's per-run log file and console handlers
            handler.close()
        root.handlers[:], root.level = handlers, level
    returncode = code if isinstance(code, int) else (0 if code is None else 1)
    return subprocess.CompletedProcess([prog, *args], returncode, out.getvalue(), err.getvalue())


def run_train(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    """`hicra-train args` in this process (see run_in_process), outputs and MLflow store under tmp_path."""
    from hicra.training.cli import main

    return run_in_process(main, "hicra-train", with_test_outputs(args, tmp_path))


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

    def answer_in_form(self, completion: str) -> bool:
        """A stand-in answer form, independent of the reward, that a random model meets about a third of the time."""
        return len(completion) % 3 == 0


class HalfSolvableTask(ParityTask):
    """ParityTask on odd-numbered questions; an even-numbered one scores 0 whatever the reply, so its group's rewards
    are all equal (no learning signal): what dynamic sampling must drop. With `rank1_solvable_every=k`, rank 1
    (Lightning's LOCAL_RANK=1) finds only every k-th odd question solvable: ranks find different counts."""

    name = "half_solvable"

    def __init__(self, train_size: int = 32, val_size: int = 4, rank1_solvable_every: int = 1, **_ignored):
        super().__init__(train_size, val_size)
        self.rank1_solvable_every = rank1_solvable_every

    def solvable(self, example) -> bool:
        number = int(example.question.split()[2])
        every = self.rank1_solvable_every if os.environ.get("LOCAL_RANK") == "1" else 1
        return number % 2 == 1 and (number // 2) % every == 0

    def score(self, completion: str, example) -> float:
        return super().score(completion, example) if self.solvable(example) else 0.0

    def answer_in_form(self, completion: str) -> bool:
        return False  # no format term: only correctness can tell a group's replies apart


def trainer_failing_at_fit(interrupt: bool = False, **trainer_args):
    """A Lightning Trainer whose `fit` raises (KeyboardInterrupt with `interrupt`, else RuntimeError) before training:
    a failure after the MLflow run exists and the step-0 validation ran, outside Lightning's own handlers."""
    import pytorch_lightning as pl

    trainer = pl.Trainer(**trainer_args)

    def fit(*args, **kwargs):
        raise KeyboardInterrupt if interrupt else RuntimeError("injected failure before fit")

    trainer.fit = fit
    return trainer


class FlakyTask(ParityTask):
    """ParityTask whose scorer raises on every completion of length divisible by 3 (a buggy reward function)."""

    def score(self, completion: str, example) -> float:
        if len(completion) % 3 == 0:
            raise ValueError("cannot parse this completion")
        return super().score(completion, example)


# --- MLflow stores -----------------------------------------------------------------------------------------------
# Creating a sqlite store runs MLflow's ~50 schema migrations: 2-7 s on 2 cores, paid by every test that opens a new
# store. A copy of one migrated empty store is the same database in ~0.1 s. The real creation path stays covered by
# the console-script runs that name their own store (fresh interpreters, no copy): the joblib sweep of
# tests/cli/test_sweeps.py creates one from two jobs at once.

def _empty_store_template() -> Path:
    """One migrated, empty sqlite store per MLflow version, built once (shared by xdist workers via a file lock)."""
    import tempfile

    import mlflow
    from filelock import FileLock

    template = Path(tempfile.gettempdir()) / f"hicra-tests-empty-mlflow-{mlflow.__version__}.db"
    with FileLock(f"{template}.lock"):
        if not template.exists():
            building = template.with_suffix(f".{os.getpid()}.tmp")
            building.unlink(missing_ok=True)
            _create_store(f"sqlite:///{building}", str(building.parent))
            building.replace(template)
    return template


def _create_store(uri: str, artifact_root: str) -> None:
    """MLflow's own store creation (migrations and default experiment), bypassing the seeding patch and the tracking
    registry (its lock is held while a store is being opened: going through it from inside would deadlock)."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    init = getattr(SqlAlchemyStore.__init__, "__wrapped__", SqlAlchemyStore.__init__)
    store = SqlAlchemyStore.__new__(SqlAlchemyStore)
    init(store, uri, artifact_root)
    store.engine.dispose()


def seed_store(db_file: Path) -> None:
    """Put a migrated empty store at `db_file` unless something is there already or its folder cannot hold it."""
    import shutil

    if not db_file.exists() and db_file.parent.is_dir():
        shutil.copyfile(_empty_store_template(), db_file)


def seed_new_sqlite_stores(monkeypatch) -> None:
    """Every sqlite store MLflow opens in this process starts as a copy of the migrated template when it is new."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    original = SqlAlchemyStore.__init__

    def seeded_init(self, db_uri, *args, **kwargs):
        if isinstance(db_uri, str) and db_uri.startswith("sqlite:///"):
            seed_store(Path(db_uri.removeprefix("sqlite:///")))
        original(self, db_uri, *args, **kwargs)

    seeded_init.__wrapped__ = original
    monkeypatch.setattr(SqlAlchemyStore, "__init__", seeded_init)


def sharpened_tiny_model():
    """The tiny random model with sharpened attention: at init its attention is near uniform, so a wrong position or
    a stale cache entry would barely move a logit; scaled queries and keys make every position count."""
    import torch

    from hicra.models.loaders import build_tiny_model

    torch.manual_seed(0)
    bundle = build_tiny_model(seed=0)
    with torch.no_grad():
        for name, param in bundle.model.named_parameters():
            if name.endswith(("q_proj.weight", "k_proj.weight")):
                param.mul_(25.0)
    return bundle


# --- holding a real run at a known step until a signal ------------------------------------------------------------
# A test that signals a real process used to poll for a checkpoint and signal then: on an idle machine the run could
# finish first, on a busy one the poll could be late; and the run burned CPU on steps nobody needed meanwhile.

HOLD_ENV = "HICRA_TEST_HOLD"  # set (to anything) in a process's environment: its HeldTask holds
HELD_FILE = "held"  # written in the run folder once the run holds: signal it from then on


class HeldTask(ParityTask):
    """ParityTask that, in a process whose environment has HOLD_ENV, holds its run at the first score call made once
    the run's `last.ckpt` exists (the step after its first checkpoint), idle, until the process receives SIGTERM: then
    the step finishes and the run stops at its safe point. A SIGKILL finds it holding, with steps left to replay.

    Without HOLD_ENV it is ParityTask: same config, same scores, so a reference run or a resume compares exactly."""

    name = "held"

    def __init__(self, train_size: int = 32, val_size: int = 4, **_ignored):
        super().__init__(train_size, val_size)
        from hydra.core.hydra_config import HydraConfig

        self._run_dir = Path(HydraConfig.get().runtime.output_dir) if HOLD_ENV in os.environ else None

    def score(self, completion: str, example) -> float:
        if self._run_dir is not None and (self._run_dir / "checkpoints" / "last.ckpt").exists():
            run_dir, self._run_dir = self._run_dir, None  # once: the rest of the run goes on as ParityTask
            hold_until_sigterm(run_dir / HELD_FILE)
        return super().score(completion, example)


def hold_until_sigterm(held_file: Path, limit_s: float = 600.0) -> None:
    """Write `held_file`, then sleep until this process receives SIGTERM and pass the signal to the handler it had
    (hicra's stop). A SIGTERM that came before the hold is not seen here: signal once `held_file` exists. Past
    `limit_s` raise instead: a run its test abandoned must not wait forever."""
    import signal
    import time

    received, previous = [], signal.getsignal(signal.SIGTERM)

    def release(signum, frame):
        received.append(signum)
        previous(signum, frame)  # during a run, SIGTERM's handler is hicra's (or Lightning's, which chains to it)

    signal.signal(signal.SIGTERM, release)
    try:
        held_file.touch()
        deadline = time.monotonic() + limit_s
        while not received:
            if time.monotonic() > deadline:
                raise TimeoutError(f"held {limit_s:.0f} s and no SIGTERM came")
            time.sleep(0.05)
    finally:
        signal.signal(signal.SIGTERM, previous)


# --- benchmarks/bench_turns.py: an arm for ProcessTurns ------------------------------------------------------------
# Here, not in the test module: a spawned arm process imports the module that defines its target, and this one is
# light (the test module imports torch: seconds per arm).

def logging_arm(name: str, steps: int, log_path: str, turns) -> dict:
    """Logs each step it is given (name, step, pid); the arm named `dies` exits in its second step, as an
    out-of-memory kill would."""
    for step in range(steps):
        turns.take(name)
        with open(log_path, "a") as log:
            log.write(f"{name} {step} {os.getpid()}\n")
        if name == "dies" and step == 1:
            os._exit(3)
    turns.end(name)
    return {"steps": steps, "pid": os.getpid()}


# --- probe scripts in this process -------------------------------------------------------------------------------

def load_script(path: Path):
    """The module a probe script (`python path ...`) defines, loaded in this process: a test calls its `main` where a
    fresh interpreter would prove nothing more (one rank, no process group) and only cost seconds of imports."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- one build per test session, shared by the pytest-xdist workers ------------------------------------------------

@contextlib.contextmanager
def shared_by_workers(tmp_path_factory, name: str):
    """Yields `<session folder>/name`, one path for every pytest-xdist worker (each worker's basetemp lies below one
    shared folder; without xdist, the basetemp), holding its file lock: the first worker to come builds it, the
    others wait and read."""
    from filelock import FileLock

    in_worker = "PYTEST_XDIST_WORKER" in os.environ
    shared = tmp_path_factory.getbasetemp().parent if in_worker else tmp_path_factory.getbasetemp()
    with FileLock(str(shared / f"{name}.lock")):
        yield shared / name
