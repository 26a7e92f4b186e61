"""`hicra-train`: compose the config, check it, build the pieces, fit, summarise.

    hicra-train                                   # HICRA on SmolLM2-135M-Instruct, reasoning-gym chain_sum, MLflow
    hicra-train algorithm=grpo planner=none trainer.max_steps=50
    hicra-train -m algorithm=grpo,hicra,entropy_reg seed=0,1,2   # 9 runs in one MLflow experiment
    hicra-train -m hparams_search=hicra_optuna experiment=cpu_small     # Optuna over alpha, clip, aggregation
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from hicra.config.checks import run_checked
from hicra.config.schema import TRAIN
from hicra.errors import Preempted, UserError
from hicra.tracking.store import PROJECT_ROOT
from hicra.training import sweep_signals
from hicra.training.hydra_job import COMMAND_LINE_ENV

CONF_DIR = PROJECT_ROOT / "conf"
JOB_NAME = Path(__file__).stem  # hydra.job.name, as Hydra's main names it


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def _hydra_main(cfg: DictConfig) -> float | None:
    """Returns `optimized_metric` so that `hparams_search=...` (the Optuna sweeper) can optimise it."""
    if sweep_signals.stopped_by() is not None:  # a joblib worker of a stopped sweep: its remaining jobs never start
        print(f"hicra-train: job skipped: the sweep was stopped by "
              f"{signal.Signals(sweep_signals.stopped_by()).name}", file=sys.stderr, flush=True)
        return None
    try:
        _check_tracking_server(cfg)
        from hicra.training.run import train  # torch, Lightning, transformers: only for a checked config
        from hicra.training.summary import objective

        return objective(train(cfg), cfg.get("optimized_metric"))
    except (UserError, OmegaConfBaseException) as err:
        print(f"hicra-train: error: {str(err).strip().splitlines()[0]}", file=sys.stderr, flush=True)
        sys.exit(2)
    except Preempted as stop:  # SIGTERM/SIGUSR1: stopped at a safe point; 128 + signal number, as a shell reports it
        print(f"hicra-train: {stop}", file=sys.stderr, flush=True)
        if sweep_signals.in_pool_worker():  # the launching process ends the sweep (sweep_signals.py): no exit here,
            sweep_signals.mark_stopped(stop.signum)  # which joblib would answer by killing the other workers
            return None
        sys.exit(128 + stop.signum)


def _check_tracking_server(cfg: DictConfig) -> None:
    """A tracking server that does not answer is named in under a second, before torch and Lightning load (~8 s on 2
    cores); the store's other checks need MLflow and run inside `train` (hicra/tracking/store.py)."""
    uri = str(cfg.logger.get("tracking_uri") or "") if cfg.get("logger") else ""
    if uri.startswith(("http://", "https://")):
        from hicra.tracking.store import check_server_reachable

        check_server_reachable(uri)


def main() -> None:
    """Console entry point: one-line errors for bad options and values (every job of a sweep), `--help`, then Hydra.
    Nothing before the `_target_`s' argument check imports torch, Lightning or transformers (seconds): a mistake
    in an option or a value, or `--help`, is answered before they load."""
    # The command line, for jobs that run in other processes (joblib, submitit): run names show the swept keys.
    os.environ[COMMAND_LINE_ENV] = json.dumps(sys.argv[1:])  # this command's own, never one inherited
    multirun = bool({"-m", "--multirun"} & set(sys.argv[1:]))
    with sweep_signals.SweepSignals() if multirun else contextlib.nullcontext():
        run_checked("hicra-train", _launch if multirun else _hydra_main, CONF_DIR, "train", JOB_NAME,
                    output_folder=True, schema=TRAIN)


def _launch() -> None:
    """A sweep continued with `ckpt_path=...`: which job resumes which checkpoint and which starts, checked for every
    job before the first starts (hicra/training/sweep_resume.py); then Hydra's main."""
    if any(arg.startswith("ckpt_path=") for arg in sys.argv[1:]):
        from hicra.training.sweep_resume import check_sweep_resume

        try:
            print(f"hicra-train: {check_sweep_resume(sys.argv[1:], CONF_DIR, 'train')}", flush=True)
        except UserError as err:
            print(f"hicra-train: error: {err}", file=sys.stderr, flush=True)
            sys.exit(2)
    _hydra_main()


if __name__ == "__main__":
    main()
