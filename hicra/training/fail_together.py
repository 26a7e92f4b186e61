"""Ranks fail together: an exception on one rank ends every rank within seconds, with one line naming that rank.

Without this, a rank that raises (an OOM in generation, a bug in a reward function) exits alone and the others wait
in their next collective (DDP's gradient all-reduce, a metric reduction, FSDP's all-gather) until the process group
times out: 30 minutes by Lightning's default, every GPU of the job held. A failure flag all-reduced before each
collective cannot end that wait: the other ranks are already inside a collective when one rank fails, and a rank
blocked in one runs no Python. So the news travels beside the collectives, through the rendezvous store every rank
already reaches (torch.distributed's TCPStore at MASTER_ADDR:MASTER_PORT), as torchrun's agent watches its workers:

- the failing rank's `on_exception` (Lightning calls it for any exception in fit or validate) writes
  `<rank>\\t<error's first line>` there (the first failure wins), and waits, bounded, until the others have read it:
  rank 0 hosts the store, which ends with its process;
- a thread on every rank polls that key every `poll_s`; on a peer's failure the lowest surviving rank prints the one
  line (`hicra-train: error: rank 1 of 2 failed: ...`), rank 0 ends the MLflow run FAILED, and each such rank ends
  its process with `os._exit(1)`: the only exit that works while the main thread is blocked inside a collective;
- a store that stops answering means that rank 0's process is gone: the same exit, naming rank 0.

A stop (SIGTERM/SIGUSR1/SIGUSR2: hicra/training/preemption.py) is no failure: every rank stops at the same boundary.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from datetime import timedelta

from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities.exceptions import SIGTERMException

from hicra.errors import Preempted
from hicra.tracking.run_end import end_if_running

log = logging.getLogger(__name__)

FAILED_KEY = "hicra/failed_rank"  # "<rank>\t<first line>", set once by the first rank that fails
SEEN_KEY = "hicra/failure_seen"  # how many other ranks have read it (the failing rank waits for them)
EXIT_CODE = 1
MISSED_POLLS = 3  # polls of a store that does not answer before rank 0 counts as gone (a hiccup is not a death)


def connect_store(timeout_s: float = 10.0):
    """A client of the run's rendezvous store of its own (the process group's stays untouched by this thread); None
    when the processes were not started with MASTER_ADDR/MASTER_PORT (a single process)."""
    import torch.distributed as dist

    host, port = os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT")
    if not host or not port:
        return None
    return dist.TCPStore(host, int(port), is_master=False, timeout=timedelta(seconds=timeout_s),
                         wait_for_workers=False)


def failure_line(exception: BaseException) -> str:
    text = (str(exception).strip().splitlines() or [""])[0][:300]
    return f"{type(exception).__name__}: {text}" if text else type(exception).__name__


class FailTogether(Callback):
    """Lightning callback: a watch thread per rank while fit or validate runs with more than one rank."""

    def __init__(self, poll_s: float = 0.5, wait_for_peers_s: float = 5.0):
        self.poll_s, self.wait_for_peers_s = poll_s, wait_for_peers_s
        self._store = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._rank, self._world, self._logger = 0, 1, None

    # --- Lightning hooks ---------------------------------------------------------------------------------------

    def setup(self, trainer, pl_module, stage: str) -> None:
        if trainer.world_size <= 1 or self._thread is not None:
            return
        self._store = connect_store()
        if self._store is None:
            return
        self._rank, self._world = trainer.global_rank, trainer.world_size
        self._logger = trainer.logger if trainer.global_rank == 0 else None  # rank 0 owns the MLflow run
        self._stop.clear()
        self._thread = threading.Thread(target=self._watch, name="hicra-fail-together", daemon=True)
        self._thread.start()

    def teardown(self, trainer, pl_module, stage: str) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2 * self.poll_s)
        self._thread = None

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if self._store is None or not isinstance(exception, Exception):
            return
        if isinstance(exception, (Preempted, SIGTERMException)):  # a stop all ranks agreed on, not a failure
            return
        try:
            self._store.compare_set(FAILED_KEY, "", f"{self._rank}\t{failure_line(exception)}")
            deadline = time.monotonic() + self.wait_for_peers_s
            while self._store.add(SEEN_KEY, 0) < self._world - 1 and time.monotonic() < deadline:
                time.sleep(self.poll_s / 5)
        except Exception as err:  # noqa: BLE001 - the store gone too: the failure itself is what must be reported
            log.warning("could not tell the other ranks that rank %d failed: %s", self._rank, err)

    # --- the watch thread -------------------------------------------------------------------------------------

    def _watch(self) -> None:
        missed = 0
        while not self._stop.wait(self.poll_s):
            try:
                if not self._store.check([FAILED_KEY]):
                    missed = 0
                    continue
                failed, _, line = self._store.get(FAILED_KEY).decode().partition("\t")
            except Exception:  # noqa: BLE001 - connection refused or reset: the store's host may be gone
                missed += 1
                if missed < MISSED_POLLS:
                    continue
                failed, line = "0", "its process ended (the rendezvous store it hosts stopped answering)"
            if int(failed) == self._rank or self._stop.is_set():
                return  # this rank's own failure: its own error path reports it
            self._end(int(failed), line)

    def _end(self, failed: int, line: str) -> None:
        with contextlib.suppress(Exception):  # rank 0 gone: nobody waits for this
            self._store.add(SEEN_KEY, 1)
        if self._rank == (1 if failed == 0 else 0):  # the lowest surviving rank speaks for all
            print(f"hicra-train: error: rank {failed} of {self._world} failed: {line}; every rank stopped "
                  f"(the others would have waited in their next collective until its timeout)",
                  file=sys.stderr, flush=True)
        end_if_running(self._logger, "FAILED")
        sys.stdout.flush()
        os._exit(EXIT_CODE)
