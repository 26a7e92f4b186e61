"""A tracking server that stops answering: training goes on, keeps its metrics, and stops with a checkpoint only when
the server has been away `logger.outage_timeout_s`.

MLflow's HTTP client retries every call with exponential backoff (7 retries, 120 s per request: about 4 minutes a
call), so a server gone for good used to stall training for over 12 minutes with no message, hold back SIGTERM for
minutes and end in a traceback. Here each call gives up within seconds (`bound_http_wait`), and what could not be
sent is kept by the logger (ResumableMLFlowLogger): metrics in memory and in every checkpoint, sent in order as
soon as the server answers again; artifacts are not retried (their files stay in the run folder, and the run's
description lists them). `StopOnOutage` stops the run at a safe point, with a checkpoint, once the outage has
lasted `logger.outage_timeout_s`.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

from pytorch_lightning.callbacks import Callback
from pytorch_lightning.trainer.states import TrainerFn

from hicra.errors import UserError

# Each MLflow HTTP call: one retry, at most 10 s waiting for an answer. A user's own MLFLOW_HTTP_* values win.
HTTP_LIMITS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
               "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
RETRY_EVERY_S = 5.0  # during an outage, one try per this many seconds (a hung server costs up to 20 s a try)


class TrackingUnavailable(UserError):
    """The tracking store did not answer for `logger.outage_timeout_s`; the message says what was kept where."""


def bound_http_wait() -> None:
    """Make every MLflow HTTP call of this process fail within seconds instead of minutes (the logger retries)."""
    for name, value in HTTP_LIMITS.items():
        os.environ.setdefault(name, value)


def is_unreachable(err: BaseException) -> bool:
    """The store did not answer (refused, reset, timed out, overloaded), as opposed to refusing the request itself:
    only the first is worth keeping the data and trying again for. MLflow wraps the network error it gave up on."""
    import requests
    from mlflow.exceptions import MlflowException

    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, requests.RequestException | ConnectionError | TimeoutError):
            return True
        if isinstance(seen, MlflowException) and seen.error_code in ("TEMPORARILY_UNAVAILABLE",
                                                                     "REQUEST_LIMIT_EXCEEDED"):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def first_line(err: BaseException) -> str:
    return (str(err) or type(err).__name__).splitlines()[0][:300]


class Outage:
    """When the store stopped answering and when to try it again; says so once when it goes and once when it is back."""

    def __init__(self, uri: str, timeout_s: float, clock=time.monotonic):
        self.uri, self.timeout_s, self.clock = uri, float(timeout_s), clock
        self.since: float | None = None
        self._last_try = -math.inf

    @property
    def active(self) -> bool:
        return self.since is not None

    def may_try(self) -> bool:
        return self.since is None or self.clock() - self._last_try >= min(RETRY_EVERY_S, self.timeout_s / 4)

    def expired(self) -> bool:
        return self.since is not None and self.clock() - self.since >= self.timeout_s

    def failed(self, err: BaseException) -> None:
        self._last_try = self.clock()
        if self.since is None:
            self.since = self._last_try
            say(f"tracking server {self.uri} does not answer ({first_line(err)}); training goes on: metrics are "
                f"kept (in memory and in each checkpoint) and sent when it answers, artifacts stay in the run folder; "
                f"the run stops with a checkpoint if it stays away {self.timeout_s:g} s (logger.outage_timeout_s)")

    def recovered(self, sent: int) -> None:
        if self.since is not None:
            say(f"tracking server {self.uri} answers again after {self.clock() - self.since:.0f} s; "
                f"{sent} kept metric values sent")
            self.since = None

    def elapsed_s(self) -> float:
        return 0.0 if self.since is None else self.clock() - self.since


def say(line: str) -> None:
    print(f"hicra-train: {line}", file=sys.stderr, flush=True)


def steps_of(unsent: list) -> str:
    steps = [entry[3] for entry in unsent]
    return f"steps {min(steps)}-{max(steps)}" if steps else "no steps"


def write_unsent(unsent: list, path: Path) -> None:
    """The metric values the store never got, one JSON object a line (key, value, step, timestamp in ms): what
    `MlflowClient.log_batch` takes, should the run's history need them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        for key, value, timestamp, step in unsent:
            out.write(json.dumps({"key": key, "value": value, "step": step, "timestamp": timestamp}) + "\n")


class StopOnOutage(Callback):
    """Carries the logger's unsent metrics in every checkpoint (a resume sends them first) and, once the store has
    been away `logger.outage_timeout_s`, stops at the next safe point (as a SIGTERM does, hicra/training/preemption.py)
    with a checkpoint at `checkpoint` (None: checkpointing off, the values go to `<run dir>/unsent_metrics.jsonl`)."""

    def __init__(self, logger, checkpoint: Path | None, run_dir: Path):
        self.logger, self.checkpoint, self.run_dir = logger, checkpoint, run_dir
        self._saved_step: int | None = None

    def state_dict(self) -> dict:
        return {"unsent": list(self.logger.unsent) if self.logger is not None else []}

    def load_state_dict(self, state_dict: dict) -> None:
        if self.logger is not None:
            self.logger.keep(state_dict.get("unsent", []))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        every = trainer.val_check_batch  # a validation due at this step runs first: a resume would skip it
        if not (trainer.enable_validation and isinstance(every, int) and (batch_idx + 1) % every == 0):
            self._stop_if_expired(trainer)

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            self._stop_if_expired(trainer)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        self._saved_step = trainer.global_step

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if isinstance(exception, TrackingUnavailable) and self.checkpoint is not None \
                and self._saved_step != trainer.global_step:
            trainer.save_checkpoint(self.checkpoint)

    def _stop_if_expired(self, trainer) -> None:
        expired = self.logger is not None and self.logger.outage.expired()
        if trainer.strategy.reduce_boolean_decision(expired, all=False):  # every rank stops at the same step
            raise TrackingUnavailable(self._stop_line(trainer.global_step))

    def _stop_line(self, step: int) -> str:
        if self.logger is None:  # another rank than 0, which holds the MLflow run and says why
            return f"stopped at step {step}: the tracking server does not answer rank 0"
        outage, unsent = self.logger.outage, self.logger.unsent
        head = (f"tracking server {outage.uri} has not answered for {outage.elapsed_s():.0f} s "
                f"(logger.outage_timeout_s={outage.timeout_s:g}); stopped at step {step}")
        if self.checkpoint is None:
            write_unsent(unsent, self.run_dir / "unsent_metrics.jsonl")
            return (f"{head} with no checkpoint (checkpoint_every_n_steps=0); {len(unsent)} unsent metric values "
                    f"({steps_of(unsent)}) are in {self.run_dir / 'unsent_metrics.jsonl'}")
        return (f"{head} with checkpoint {self.checkpoint}, which keeps the {len(unsent)} unsent metric values "
                f"({steps_of(unsent)}); once the server answers, continue with ckpt_path={self.checkpoint}: "
                f"they are sent first")
