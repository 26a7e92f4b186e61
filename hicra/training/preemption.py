"""SIGTERM and SIGUSR1 the way schedulers mean them: stop soon, keep the work, say so.

Kubernetes and SLURM stop a job with SIGTERM and SIGKILL it after a grace period (30 s by default on both); SLURM's
`--signal=[B:]USR1@<seconds>` warns with SIGUSR1 that many seconds before a job's time ends. On either signal the
run stops at the next safe point, the end of the training step (and of the validation due after it) or of the
validation pass in progress (an update is never cut half-way), writes `last.ckpt` there, marks its MLflow run
KILLED and exits with 128 + the signal number (143 for SIGTERM, 138 for SIGUSR1); `ckpt_path=...` continues it
exactly. A SIGKILL before the stop leaves the previous checkpoint intact (atomic writes).

Built on Lightning's handling, not beside it: while fit or validate runs, Lightning chains our handler behind its
SIGTERM notifier, and its loops still stop at their batch boundaries on `trainer.received_sigterm`
(SIGTERMException, handled here like our own stop). Alone, that exits with status 0, leaves the MLflow run FAILED
and writes no checkpoint, and a signal during the step-0 validation is forgotten (each fit/validate resets the
flag). Here `SignalWatch` remembers the signal for the whole run, `StopAtSafePoint` stops and saves at the
boundaries, and the run's status and the exit code say what happened.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Self

from pytorch_lightning.callbacks import Checkpoint
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities.exceptions import SIGTERMException

from hicra.errors import Preempted
from hicra.tracking.store import mark_killed
from hicra.training.sweep_signals import stopped_by

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class SignalWatch:
    """`with SignalWatch() as watch:` remembers the first stop signal until the block ends. Leaving the block through
    a stop marks the MLflow run (`watch.logger`, once it exists) KILLED and raises `Preempted` with the line the CLI
    prints."""

    def __init__(self):
        self.signum: int | None = None
        self.logger = None  # the run's MLflow logger, once created
        self.checkpoint: Path | None = None  # the run's last.ckpt (None: checkpointing off)
        self.step: int | None = None  # the step saved at the stop
        self._previous: dict = {}

    def __enter__(self) -> Self:
        if threading.current_thread() is threading.main_thread():  # only the main thread may set handlers
            self._previous = {signum: signal.signal(signum, self._receive) for signum in STOP_SIGNALS}
        self.signum = stopped_by()  # a joblib worker whose sweep was stopped while this job was being set up
        return self

    def _receive(self, signum, frame) -> None:
        # A flag only: printing here could re-enter a write to stderr that the progress bar was making.
        self.signum = self.signum or signum

    def raise_if_signalled(self) -> None:
        if self.signum is not None:
            raise Preempted(self.signum)

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            if isinstance(exc, SIGTERMException):  # Lightning's loops saw the signal first
                exc = Preempted(signal.SIGTERM)
            if isinstance(exc, Preempted):
                marked = mark_killed(self.logger)  # or why not: a tracking server that does not answer
                raise Preempted(exc.signum, self.describe(exc.signum, marked)) from None
            return False
        finally:  # after marking: a second SIGTERM meanwhile must not kill the process half-way
            for signum, handler in self._previous.items():
                signal.signal(signum, handler)

    def describe(self, signum: int, marked: str = "") -> str:
        parts = [f"stopped by {signal.Signals(signum).name}"]
        if self.checkpoint is not None and self.checkpoint.is_file():
            saved = f"saved at step {self.step}" if self.step is not None else "from an earlier step"
            parts.append(f"checkpoint {self.checkpoint} ({saved}); continue with ckpt_path={self.checkpoint}")
        else:
            parts.append("no checkpoint to continue from (stopped before the first one, or checkpointing is off)")
        if marked:
            parts.append(marked)
        return "; ".join(parts)


class StopAtSafePoint(Checkpoint):
    """After a stop signal: raises `Preempted` at the end of the training step or validation pass in progress, and
    writes `last.ckpt` while Lightning handles it (`on_exception`, as Lightning's OnExceptionCheckpoint does).

    A `Checkpoint`, so that Lightning runs it after ModelCheckpoint: a signal that arrives while ModelCheckpoint writes
    is acted on as soon as that write ends, and the same step is not written twice.
    """

    def __init__(self, watch: SignalWatch, checkpoint: Path | None):
        self.watch, self.checkpoint = watch, checkpoint
        self._saved_step: int | None = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # Before a validation due at this step the stop waits for its end: Lightning counts a validation due at a
        # restored step as done, so a resume from here would never run it.
        every = trainer.val_check_batch  # batches between validations (None or inf: not batch-based)
        validation_follows = trainer.enable_validation and isinstance(every, int) and (batch_idx + 1) % every == 0
        if not validation_follows:
            self._stop_if_signalled(trainer)

    def on_validation_end(self, trainer, pl_module) -> None:
        self._stop_if_signalled(trainer)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        self._saved_step = trainer.global_step

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if not isinstance(exception, (Preempted, SIGTERMException)) or self.checkpoint is None:
            return
        if trainer.state.fn != TrainerFn.FITTING or trainer.global_step == 0:
            return  # a validation alone (step 0, the final one) changes nothing a checkpoint holds
        if self._saved_step != trainer.global_step:
            trainer.save_checkpoint(self.checkpoint)
        self.watch.step = trainer.global_step

    def _stop_if_signalled(self, trainer) -> None:
        # Every rank stops at the same boundary: one that stopped alone would leave the others waiting in a collective.
        if trainer.strategy.reduce_boolean_decision(self.watch.signum is not None, all=False):
            raise Preempted(self.watch.signum or signal.SIGTERM)
