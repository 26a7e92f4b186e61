"""A training run's stored config is data someone else wrote: hicra-eval builds only hicra's own task classes from it.

Each planted config below tries to make hicra-eval run code (a `_target_`, a nested one, `_args_`, an interpolation
that builds a node); the marker file it would write must not exist afterwards, and the refusal is one line naming
the run and what was refused.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import mlflow
import pytest
import yaml
from omegaconf import OmegaConf
from support import PROJECT_ROOT

from hicra.config.instantiate import build_stored
from hicra.errors import ConfigError
from hicra.evaluation import sources


def one_error_line(result) -> str:
    assert result.returncode == 2 and "Traceback" not in result.stderr + result.stdout, result.stderr[-2000:]
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("hicra-eval: error:")]
    return line


class _Payload:
    """A pickle that writes a marker file when loaded (what a planted `pandas.read_pickle` URL would carry)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "ran"))


def _planted(marker: Path, pickle_file: Path) -> dict[str, tuple]:
    """name -> (task node, other resolved values) of a hostile stored config."""
    # Hydra's own blocklist stops os.system and exec, not the loaders that unpickle (pandas, numpy, joblib)
    unpickle = {"_target_": "pandas.read_pickle", "filepath_or_buffer": str(pickle_file)}
    return {
        "os.system": ({"_target_": "os.system", "_args_": [f"touch {marker}"]}, {}),
        "builtins.exec": ({"_target_": "builtins.exec", "_args_": [f"open({str(marker)!r}, 'w')"]}, {}),
        "pandas.read_pickle": (unpickle, {}),
        "numpy.load": ({"_target_": "numpy.load", "file": str(pickle_file), "allow_pickle": True}, {}),
        "nested": ({"_target_": "hicra.tasks.LocalFileTask", "path": unpickle}, {}),
        "args": ({"_target_": "hicra.tasks.ReasoningGymTask", "_args_": [unpickle]}, {}),
        "partial": ({"_target_": "hicra.tasks.ReasoningGymTask", "_partial_": True, "dataset": "chain_sum"}, {}),
        "oc.create": ({"_target_": "hicra.tasks.LocalFileTask",
                       "path": f"${{oc.create:{{_target_: pandas.read_pickle, filepath_or_buffer: '{pickle_file}'}}}}"},
                      {}),
        "system_prompt": (None, {"system_prompt": "${oc.env:HOME}"}),  # the environment into every prompt
    }


EXPECTED = {"os.system": "task._target_='os.system' is not one of hicra's own classes",
            "builtins.exec": "task._target_='builtins.exec'", "pandas.read_pickle": "task._target_='pandas.read_pickle'",
            "numpy.load": "task._target_='numpy.load'", "nested": "task.path._target_='pandas.read_pickle'", "args": "task._args_ is set", "partial": "task._partial_ is set",
            "oc.create": "task.path=", "system_prompt": "config.system_prompt='${oc.env:HOME}' is an interpolation"}


@pytest.fixture(scope="module")
def planted(tmp_path_factory, log_training_run):
    """(uri, {case: run id}, marker): one planted training run per case, all in experiment 'planted', plus a clean
    run 'clean'; run folders hold a final_model/config.json only (nothing may load that far). Read only."""
    tmp_path = tmp_path_factory.mktemp("planted")
    marker = tmp_path / "marker"
    pickle_file = tmp_path / "payload.pkl"
    pickle_file.write_bytes(pickle.dumps(_Payload(marker)))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = mlflow.MlflowClient(tracking_uri=uri)
    runs = {}
    for case, (task, values) in [*_planted(marker, pickle_file).items(), ("clean", (None, {}))]:
        run_dir = tmp_path / "runs" / case.replace(".", "_")
        (run_dir / "final_model").mkdir(parents=True)
        (run_dir / "final_model" / "config.json").write_text("{}")
        runs[case] = log_training_run(client, "planted", case, run_dir, None, task=task, **values)
    return uri, runs, marker


@pytest.mark.parametrize("case", list(EXPECTED))
def test_a_planted_config_is_refused_before_anything_is_built(case, planted):
    uri, runs, marker = planted
    client = mlflow.MlflowClient(tracking_uri=uri)
    with pytest.raises(ConfigError) as err:
        sources.training_run(client, runs[case])
    assert not marker.exists()
    assert f"MLflow run '{runs[case]}' ({case})" in str(err.value) and EXPECTED[case] in str(err.value), err.value
    task, _ = _planted(marker, Path(uri[len("sqlite:///"):]).parent / "payload.pkl")[case]
    if task is not None:  # the builder checks on its own too, whoever calls it
        with pytest.raises(ConfigError, match="run X"):
            build_stored(OmegaConf.create(task), sources.STORED_TASK_TARGETS, "run X", "task")
        assert not marker.exists()


def test_the_refusal_is_one_line_of_hicra_eval(planted, eval_cli, tmp_path):
    uri, runs, marker = planted
    result = eval_cli(["model=tiny", f"checkpoint={runs['pandas.read_pickle']}", f"logger.tracking_uri={uri}",
                       "protocol=greedy", "limit=1"], tmp_path)
    assert not marker.exists()  # checked first: the payload must not have run, whatever the exit
    line = one_error_line(result)
    assert runs["pandas.read_pickle"] in line and "pandas.read_pickle" in line and "hicra.tasks.LocalFileTask" in line


def test_a_planted_run_in_a_study_is_skipped_with_a_line(planted):
    uri, runs, marker = planted
    found, notes = sources.resolve("experiment:planted", OmegaConf.create({}), "tiny",
                                   mlflow.MlflowClient(tracking_uri=uri))
    assert [s.label for s in found] == ["clean"] and not marker.exists()
    assert len(notes) == len(EXPECTED)
    assert any("os.system" in note and runs["os.system"] in note for note in notes)


def test_a_config_that_is_not_yaml_is_one_line(log_training_run, tmp_path):
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    (tmp_path / "run" / "final_model").mkdir(parents=True)
    (tmp_path / "run" / "final_model" / "config.json").write_text("{}")
    run_id = log_training_run(client, "study", "garbled", tmp_path / "run", None)
    (tmp_path / "run" / sources.RESOLVED_CONFIG).write_text("task: [unclosed\n")
    with pytest.raises(ConfigError, match=f"MLflow run '{run_id}': .*resolved.yaml is not a readable config"):
        sources.training_run(client, run_id)


def _shipped_task_targets() -> set[str]:
    """Every `_target_` under a `task` option of conf/task and the `task` node of conf/benchmark."""
    targets = set()
    for file in (PROJECT_ROOT / "conf" / "task").glob("*.yaml"):
        targets.add(yaml.safe_load(file.read_text())["_target_"])
    for file in (PROJECT_ROOT / "conf" / "benchmark").glob("*.yaml"):
        task = yaml.safe_load(file.read_text()).get("task")
        if task is not None:
            targets.add(task["_target_"])
    return targets


def test_every_shipped_task_option_may_be_built_from_a_store():
    from hydra.utils import get_class

    from hicra.tasks import Task

    shipped = _shipped_task_targets()
    assert len(shipped) >= 3 and shipped <= sources.STORED_TASK_TARGETS
    for target in sources.STORED_TASK_TARGETS:  # nothing else: each entry is one of hicra's task classes
        assert target.startswith("hicra.tasks.") and issubclass(get_class(target), Task), target


def test_a_clean_stored_task_still_builds(fake_store):
    client = mlflow.MlflowClient(tracking_uri=fake_store[0])
    source = sources.training_run(client, fake_store[1]["grpo__none__s0"])
    task = build_stored(source.resolved.task, sources.STORED_TASK_TARGETS, source.origin, "task")
    assert task.name == "chain_sum" and len(task.val_examples()) == 4
