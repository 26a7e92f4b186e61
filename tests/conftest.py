"""Shared fixtures: the real tokenizer, Hydra composition, and one real tiny training run shared by every test that
reads a finished run (CLI read-back, hicra-eval, hicra-analyze). Helpers shared by tests live in support.py."""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import TINY_RUN, composer, run_cli, seed_new_sqlite_stores, shared_by_workers


def _split_cores_between_workers() -> None:
    """torch runs each process's CPU ops on an OpenMP team as wide as the machine. Two xdist workers on 2 cores (and
    the `hicra-train` subprocesses and gloo ranks they start) then ask for 4+ threads: a tiny op waits milliseconds at
    its OpenMP barrier for a descheduled teammate, and a smoke run took 11 s instead of 2-3 s beside one busy process.
    Each worker gets its share of the cores; OMP_NUM_THREADS carries it to the subprocesses. A value the caller set
    wins; without xdist (`make test TEST_WORKERS=0`) nothing changes."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1 and "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = str(max(1, len(os.sched_getaffinity(0)) // workers))
        if "torch" in sys.modules:  # a plugin imported it first: torch read the variable at its import
            sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


_split_cores_between_workers()


@pytest.fixture(scope="session", autouse=True)
def migrated_sqlite_stores():
    """New sqlite MLflow stores opened in the test process start from one migrated template (support.py says why)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        seed_new_sqlite_stores(monkeypatch)
        yield


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    """The real SmolLM2-135M-Instruct tokenizer (byte-level BPE, eos = pad = id 2), loaded offline once."""
    from hicra.models.loaders import load_tokenizer

    return load_tokenizer("bundled://smollm2-135m-instruct")


@pytest.fixture
def compose_cfg():
    """compose_cfg(*overrides) -> DictConfig composed from conf/train.yaml with Hydra's compose API."""
    from hydra.core.global_hydra import GlobalHydra

    yield composer("train")
    GlobalHydra.instance().clear()


@dataclass(frozen=True)
class TrainedRun:
    """A finished `hicra-train` run: its folder (final_model inside), MLflow store and run id."""

    root: Path
    run_dir: Path
    tracking_uri: str
    run_id: str
    result: dict  # returncode, stdout, stderr of the CLI

    def store_args(self) -> list[str]:
        return [f"logger.tracking_uri={self.tracking_uri}", f"logger.artifact_location={self.root}/mlartifacts"]


# HICRA with the paper's grams on the tiny model, 3 steps, final model saved: what the read-back tests need.
TRAINED_RUN_ARGS = [*TINY_RUN, "algorithm=hicra", "planner=strategic_grams", "seed=1", "trainer.max_steps=3",
                    "save_final_model=true"]


def _train_once(root: Path) -> dict:
    """Run the real console script once into `root` (a fresh interpreter: what a user types)."""
    record = root / "result.json"
    if not record.exists():
        root.mkdir(parents=True, exist_ok=True)
        # run_cli puts the store at root/mlflow.db, a copy of the migrated template: a store created from scratch by
        # the real CLI (two jobs at once) is tests/cli/test_sweeps.py's joblib sweep.
        result = run_cli(TRAINED_RUN_ARGS, root)
        if result.returncode == 0:
            record.write_text(json.dumps({"returncode": 0, "stdout": result.stdout, "stderr": result.stderr}))
        else:  # leave no record: the next worker retries and every user sees the failure
            shutil.rmtree(root / "run", ignore_errors=True)
            return {"returncode": result.returncode, "stdout": result.stdout, "stderr": result.stderr}
    return json.loads(record.read_text())


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> TrainedRun:
    """One tiny training run per test session, shared by pytest-xdist workers through a file lock (the first worker
    trains, the others wait and read). Tests that write to its store (eval runs, analysis artifacts) add runs or
    artifacts of their own and never change the training run's own records."""
    import mlflow

    with shared_by_workers(tmp_path_factory, "trained_run") as root:
        result = _train_once(root)
    assert result["returncode"] == 0, result["stderr"][-3000:]
    uri = f"sqlite:///{root}/mlflow.db"
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("hicra")
    (run,) = client.search_runs([experiment.experiment_id], "tags.`hicra.run_kind` = 'train'")
    return TrainedRun(root, root / "run", uri, run.info.run_id, result)


def pytest_collection_modifyitems(config, items):
    """Tests marked `slow` (real processes, tens of seconds each) run first, so that under pytest-xdist the longest
    jobs start early on both workers instead of trailing alone at the end (a stable sort: order otherwise kept).
    Tests marked `gpu` are skipped where no CUDA device is visible (HICRA_GPU_TIER_DEVICE=cpu runs them on the CPU,
    see tests/gpu/)."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
    gpu = [item for item in items if item.get_closest_marker("gpu")]
    if gpu and os.environ.get("HICRA_GPU_TIER_DEVICE") != "cpu":
        import torch

        if not torch.cuda.is_available():
            for item in gpu:
                item.add_marker(pytest.mark.skip(reason="needs a CUDA device"))


@pytest.fixture
def one_rank_mesh(tmp_path):
    """A gloo process group of one rank in this process (file store), and its CPU device mesh; torn down after."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    assert not dist.is_initialized()
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    try:
        yield init_device_mesh("cpu", (1,))
    finally:
        dist.destroy_process_group()
