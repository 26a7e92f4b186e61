"""Arms interleaved step by step in one process: A B C D, B C D A, C D A B, ... so the machine's drift over an hour
falls on every arm alike and each round gives a paired comparison.

Each arm's own training loop (Lightning's fit, TRL's train) runs unchanged in a thread of its own; its step-start hook
calls `take(arm)`, which hands the turn back and blocks until the scheduler gives this arm the next one. Whatever an
arm runs between two steps (logging, fetching the next batch) therefore runs in its own turn, untimed, and never
beside another arm's timed step. Only one arm computes at any moment.

Memory: four arms hold four policies and optimizers, and glibc keeps each thread's freed memory in that thread's own
arena, so the process grew to 20 GiB of the VM's 23 within two rounds. An arm parking for its next turn therefore
hands its freed memory back to the kernel (`malloc_trim`), untimed, and so does an arm whose loop has ended; every
arm's next step starts from the same state.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading


def release_freed_memory() -> None:
    """glibc's malloc_trim(0): give every arena's free memory back to the kernel; nothing where libc lacks it."""
    try:
        ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim(0)
    except (OSError, AttributeError, TypeError):
        pass


class Turns:
    def __init__(self, release=release_freed_memory):
        self._release = release  # called by an arm before it parks (untimed)
        self._cond = threading.Condition()
        self._holder: str | None = None  # the arm whose turn it is
        self._waiting: set[str] = set()  # arms parked at a step start
        self._ended: set[str] = set()

    def take(self, arm: str) -> None:
        """Arm thread, at every step start: end the current turn (if this arm held it), then wait for the next."""
        self._release()
        with self._cond:
            if self._holder == arm:
                self._holder = None
            self._waiting.add(arm)
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._holder == arm)
            self._waiting.discard(arm)

    def end(self, arm: str) -> None:
        """Arm thread, when its loop returns or fails: it takes no more turns. Its freed memory goes back first: an
        arm that ended without it kept its last step's peak in its arena, and two such arms left the next arm's step
        without room (the checkpointing-off runs were OOM-killed in TRL's last step, after both hicra arms ended)."""
        self._release()
        with self._cond:
            self._ended.add(arm)
            if self._holder == arm:
                self._holder = None
            self._cond.notify_all()

    def wait_ready(self, arm: str) -> None:
        """Scheduler: until `arm` has built everything and parked at its first step (or failed)."""
        with self._cond:
            self._cond.wait_for(lambda: arm in self._waiting or arm in self._ended)

    def give(self, arm: str) -> bool:
        """Scheduler: let `arm` run one step; returns once it is parked again or ended (False: it had ended)."""
        with self._cond:
            if arm in self._ended:
                return False
            self._holder = arm
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._holder is None)
        return True


def rotations(arms: list[str], rounds: int) -> list[list[str]]:
    """The order of each round: round r starts at arm r (mod the number of arms)."""
    return [arms[r % len(arms):] + arms[:r % len(arms)] for r in range(rounds)]
