"""SIGTERM, SIGUSR1 and SIGUSR2 the way schedulers mean them: stop soon, keep the work, say so.

Kubernetes and SLURM stop a job with SIGTERM and SIGKILL it after a grace period (30 s by default on both); SLURM's
`--signal=[B:]<sig>@<seconds>` warns that many seconds before a job's time ends (or at preemption, where the cluster
sets PreemptParameters=send_user_signal): SIGUSR1 by hand, SIGUSR2 under submitit (hydra/launcher=slurm_gpu). On any
of them the run stops at the next safe point, the end of the training step (and of the validation due after it) or
of the validation pass in progress (an update is never cut half-way), writes `last.ckpt` there, marks its MLflow run
KILLED and exits with 128 + the signal number (143 for SIGTERM, 138 for SIGUSR1, 140 for SIGUSR2); `ckpt_path=...`
(or `ckpt_path=auto` in the same run folder) continues it exactly. A SIGKILL before the stop leaves the previous
checkpoint intact (atomic writes).

SIGUSR2 is submitit's requeue signal: submitit's own handler re-pickles the job, `scontrol requeue`s it and exits at
once, mid-step and without a checkpoint. hicra takes the signal first and, once the checkpoint is written, hands it
on to that handler (`HANDED_ON`), which then requeues the job as it would have; the requeued job continues from the
checkpoint with `ckpt_path=auto`. SIGTERM and SIGUSR1 are not handed on: what ran before hicra (a sweep's own
SIGTERM handling, hicra/training/sweep_signals.py) already learns of the stop from the exit.

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

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)
HANDED_ON = (signal.SIGUSR2,)  # after the stop, the handler hicra replaced gets these (submitit's requeue)


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
                handed = self.hand_on(exc.signum)
                raise Preempted(exc.signum, self.describe(exc.signum, marked, handed)) from None
            return False
        finally:  # after marking: a second SIGTERM meanwhile must not kill the process half-way
            for signum, handler in self._previous.items():
                signal.signal(signum, handler)

    def hand_on(self, signum: int) -> str:
        """Calls the handler that `signum` had before this watch when it is one to hand on (`HANDED_ON`) and a
        function: submitit's checkpoint_and_try_requeue requeues the job on global rank 0 and asks to exit, returns
        on the other ranks, or raises when it will not requeue (timed out too often). Returns what it did."""
        handler = self._previous.get(signum)
        if signum not in HANDED_ON or not callable(handler):
            return ""
        name = getattr(handler, "__qualname__", type(handler).__name__)
        try:
            handler(signum, None)
        except SystemExit:  # submitit exits once the requeue is asked for: the exit code comes from hicra instead
            return f"handed on to {name}, which asked to exit (submitit: the job is requeued)"
        except Exception as err:  # noqa: BLE001 - e.g. submitit's UncompletedJobError: no requeue
            return f"handed on to {name}, which failed: {(str(err).strip().splitlines() or [repr(err)])[0]}"
        return f"handed on to {name}"

    def describe(self, signum: int, marked: str = "", handed: str = "") -> str:
        parts = [f"stopped by {signal.Signals(signum).name}"]
        if self.checkpoint is not None and self.checkpoint.exists():
            saved = f"saved at step {self.step}" if self.step is not None else "from an earlier step"
            parts.append(f"checkpoint {self.checkpoint} ({saved}); continue with ckpt_path={self.checkpoint}")
        else:
            parts.append("no checkpoint to continue from (stopped before the first one, or checkpointing is off)")
        parts += [part for part in (marked, handed) if part]
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
