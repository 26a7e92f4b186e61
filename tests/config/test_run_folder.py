"""One run folder for all ranks: torchrun and srun start every rank as its own command, and a time-based
hydra.run.dir would be read from each rank's clock; such a launch must name the folder (hicra.config.placement)."""

from __future__ import annotations

import pytest
from support import TINY_RUN, run_in_process

from hicra.config.placement import check_one_run_folder
from hicra.errors import ConfigError

DEFAULT = "${paths.output_dir}/runs/${now:%Y-%m-%d}/${now:%H-%M-%S}"


@pytest.mark.parametrize("environ, launcher", [({"WORLD_SIZE": "4"}, "torchrun"),
                                               ({"SLURM_NTASKS": "8", "SLURM_JOB_NAME": "grpo"}, "srun")])
def test_a_clock_based_run_folder_under_an_outside_launcher_is_refused(environ, launcher):
    with pytest.raises(ConfigError, match=f"each rank's own clock under {launcher}.*hydra.run.dir=<folder>"):
        check_one_run_folder([], DEFAULT, environ)
    with pytest.raises(ConfigError):  # a named folder that still reads the clock
        check_one_run_folder(["hydra.run.dir=out/${now:%H-%M-%S}"], DEFAULT, environ)


@pytest.mark.parametrize("args, environ", [
    ([], {}),  # one process
    ([], {"WORLD_SIZE": "1", "SLURM_NTASKS": "1"}),
    ([], {"SLURM_NTASKS": "4", "SLURM_JOB_NAME": "interactive"}),  # an salloc shell: Lightning ignores it too
    (["hydra.run.dir=outputs/runs/1234"], {"WORLD_SIZE": "4"}),  # named: every rank gets it
    (['hydra.run.dir="/tmp/x"'], {"WORLD_SIZE": "2", "LOCAL_RANK": "1"}),  # as Lightning's launcher starts ranks
])
def test_one_process_or_a_named_folder_passes(args, environ):
    check_one_run_folder(args, DEFAULT, environ)


def test_hicra_train_under_torchrun_without_a_run_folder_fails_in_one_line_before_any_folder(tmp_path, monkeypatch):
    from hicra.training.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    result = run_in_process(main, "hicra-train", [*TINY_RUN, f"paths.output_dir={tmp_path}", "logger=none"])
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("hicra-train: error:")]
    assert len(errors) == 1 and "under torchrun" in errors[0] and "hydra.run.dir=" in errors[0]
    assert not (tmp_path / "runs").exists()  # refused before Hydra made a folder
