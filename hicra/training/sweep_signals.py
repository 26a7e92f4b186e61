"""Ctrl-C and SIGTERM on a sweep whose jobs run in joblib's worker processes (`hydra/launcher=joblib`).

Left to joblib, Ctrl-C (which reaches every process of the terminal's foreground group) printed a KeyboardInterrupt
traceback and SIGKILLed the workers: loky kills the whole pool as soon as one worker dies, so runs stayed RUNNING.
SIGTERM sent to the launching process alone (`kill`, Kubernetes) killed it and left its workers training as orphans.

Here the launching process turns either signal into SIGTERM for its workers and lets the sweep drain: each job in
progress stops at its next safe point as a single run does (checkpoint, MLflow run KILLED; preemption.py), each job
not started yet is skipped, and the sweep ends with one line and exit status 128 + the signal number; the workers end
with it. A worker ignores Ctrl-C itself (the launching process decides for the sweep) and, between jobs, remembers
SIGTERM instead of dying: a worker that died would make loky kill its siblings in the middle of their stop.

Jobs that run in the launching process itself (the basic launcher, or joblib with one job at a time) keep the
handling of a single run. Nothing here imports torch: the CLI enters it before anything heavy loads.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import signal
import sys
import threading
from typing import Self

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_stopped_by: int | None = None  # in a worker: the signal that stopped the sweep


# --- in each worker process ---------------------------------------------------------------------------------------

def worker_started() -> None:
    """loky's initializer of every worker of the sweep's pool (see `SweepSignals`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda signum, frame: mark_stopped(signum))


def in_pool_worker() -> bool:
    return multiprocessing.current_process().name.startswith("LokyProcess")


def mark_stopped(signum: int) -> None:
    """This worker's sweep was stopped: the jobs it is handed from now on are skipped."""
    global _stopped_by
    _stopped_by = _stopped_by or signum


def stopped_by() -> int | None:
    """The signal that stopped this worker's sweep (None: not stopped, or not a worker)."""
    return _stopped_by


# --- in the process that launches the sweep ----------------------------------------------------------------------

class SweepSignals:
    """`with SweepSignals():` around a multirun. While joblib workers exist, SIGINT and SIGTERM are forwarded to them
    as SIGTERM and the sweep drains; on leaving, a stopped sweep prints its one line and exits 128 + the signal. A
    second signal does not wait: the workers are killed at once (their runs may stay RUNNING, as the line says)."""

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict = {}
        self._loky = None

    def __enter__(self) -> Self:
        if threading.current_thread() is threading.main_thread():
            self._previous = {signum: signal.signal(signum, self._receive) for signum in STOP_SIGNALS}
            self._loky = _use_worker_initializer()
        return self

    def _receive(self, signum, frame) -> None:
        workers = pool_workers()
        if not workers:  # the jobs run here: as for a single run
            return _call_previous(self._previous.get(signum), signum, frame)
        if self.signum is not None:
            _send(workers, signal.SIGKILL)
            _print_and_exit(signum, f"sweep killed by a second {signal.Signals(signum).name}: its jobs did not reach "
                                    f"a safe point, and their MLflow runs may stay RUNNING")
        self.signum = signum
        _send(workers, signal.SIGTERM)

    def __exit__(self, exc_type, exc, tb) -> bool:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        if self._loky is not None:
            _restore_backend(self._loky)
        if self.signum is None or (exc is not None and not isinstance(exc, Exception | SystemExit)):
            return False
        _print_and_exit(self.signum, f"sweep stopped by {signal.Signals(self.signum).name}: the jobs in progress "
                                     f"stopped at a safe point (their MLflow runs marked KILLED, their checkpoints "
                                     f"above), the jobs not started were skipped; continue the sweep with the same "
                                     f"command and ckpt_path=last")


def pool_workers() -> list[int]:
    """The pids of joblib's loky worker processes in this process (none unless joblib has started a pool)."""
    module = sys.modules.get("joblib.externals.loky.reusable_executor")
    processes = getattr(getattr(module, "_executor", None), "_processes", None) or {}
    return [pid for pid, process in list(processes.items()) if process.is_alive()]


def _send(pids: list[int], signum: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


def _call_previous(handler, signum, frame) -> None:
    if callable(handler):
        handler(signum, frame)
    elif handler == signal.SIG_DFL:  # die of it, as this process would have without us
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


def _print_and_exit(signum: int, line: str) -> None:
    print(f"hicra-train: {line}", file=sys.stderr, flush=True)
    sys.exit(128 + signum)


def _use_worker_initializer():
    """joblib's "loky" backend (the one Hydra's joblib launcher names) built with `worker_started` as the initializer
    of its workers; returns what to restore."""
    from joblib import parallel
    from joblib._parallel_backends import LokyBackend

    previous = parallel.BACKENDS.get("loky")
    parallel.register_parallel_backend("loky", functools.partial(LokyBackend, initializer=worker_started))
    return previous


def _restore_backend(previous) -> None:
    from joblib import parallel

    parallel.BACKENDS["loky"] = previous
