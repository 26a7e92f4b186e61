"""Arms interleaved step by step: A B C D, B C D A, C D A B, ... so the machine's drift over an hour falls on every
arm alike and each round gives a paired comparison. The arms run as threads of one process (`Turns`) or each in a
process of its own (`ProcessTurns`, `bench_step.py --isolation process`), the way each framework runs when used.

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
import multiprocessing
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
        self._threads: list[threading.Thread] = []
        self.results: dict[str, dict] = {}

    def start(self, arm: str, target, *args) -> None:
        """Run `target(*args, self)` (the arm's loop, which calls `take` at every step start) in a thread of its own;
        its return value goes to `results[arm]`."""
        def loop():
            self.results[arm] = target(*args, self)

        self._threads.append(threading.Thread(target=loop, name=arm, daemon=True))
        self._threads[-1].start()

    def join(self) -> None:
        for thread in self._threads:
            thread.join()

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


class ArmTurns:
    """The arm's side of `ProcessTurns`, inside the arm's own process: the same `take`/`end` as `Turns`. It keeps its
    freed memory between steps, as a training process does: nothing else allocates in its heap."""

    def __init__(self, conn):
        self._conn = conn

    def take(self, arm: str) -> None:
        self._conn.send(("parked", None))
        self._conn.recv()  # "go"

    def end(self, arm: str) -> None:
        pass  # the process's result, sent by `_arm_process`, ends it


def _arm_process(conn, arm: str, target, args: tuple) -> None:
    result = target(*args, ArmTurns(conn))
    conn.send(("ended", result))
    conn.close()


class ProcessTurns:
    """Scheduler of arms that each run in a spawned process of their own and take turns over a pipe; `wait_ready` and
    `give` as in `Turns`. `target(*args, turns)` runs the arm's loop and returns its result (a picklable dict), kept in
    `results`. An arm whose process dies (out of memory) ends with an error result; the others go on."""

    def __init__(self):
        self._context = multiprocessing.get_context("spawn")  # a fresh interpreter: nothing inherited from the others
        self._conns, self._processes, self._ended = {}, {}, set()
        self.results: dict[str, dict] = {}

    def start(self, arm: str, target, *args) -> None:
        parent, child = self._context.Pipe()
        process = self._context.Process(target=_arm_process, args=(child, arm, target, args), name=arm)
        process.start()
        child.close()
        self._conns[arm], self._processes[arm] = parent, process

    def _until_parked(self, arm: str) -> None:
        try:
            kind, payload = self._conns[arm].recv()
        except EOFError:  # the process died without a word
            self._processes[arm].join()
            kind, payload = "ended", {"error": f"process exited with code {self._processes[arm].exitcode}"}
        if kind == "ended":
            self._ended.add(arm)
            self.results[arm] = payload
            self._processes[arm].join()

    def wait_ready(self, arm: str) -> None:
        self._until_parked(arm)

    def give(self, arm: str) -> bool:
        if arm in self._ended:
            return False
        self._conns[arm].send("go")
        self._until_parked(arm)
        return True

    def join(self) -> None:
        """Let every arm finish its loop (after its last step it asks for no turn) and collect its result."""
        for arm in self._conns:
            while arm not in self._ended:
                self.give(arm)
