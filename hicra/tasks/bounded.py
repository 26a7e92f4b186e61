"""Verifiers that read model text run in a worker process under a hard wall-clock and memory bound.

Why a process: math-verify bounds itself with SIGALRM, which only the main thread may install (a reward thread pool
gets no bound at all) and which only interrupts between Python bytecodes, so a long C-level computation (a huge
integer power, a regex, a C extension) runs to the end. A verifier that hangs would stall training; one that
allocates a 10**10**10-digit integer would take the trainer's memory with it. Killing a process is the only bound
that always holds.

Design (process side in `hicra.tasks.verifier_worker`)::

    trainer --pipes--> supervisor: imports each verifier module once; never runs a verifier
                         '--fork--> executor: runs calls one at a time; SIGKILLed when a call passes its bound,
                                    then re-forked (milliseconds: the modules are already imported and warm)

* One supervisor per trainer process, started on the first call (it imports math-verify and reasoning-gym: seconds,
  once) and not counted against any bound. It is not forked from the trainer: the trainer holds CUDA state and
  threads, which `fork` does not copy safely.
* `run_bounded(fn, *args)` sends ``fn`` (by module and name) and pickled ``args``; the reply is JSON. Past the bound
  the call raises `VerifierTimeout`; an exception inside the verifier, a MemoryError past the memory allowance or a
  dead executor raises `VerifierError`. `Task.score` turns both into a 0.0 reward and counts them
  (`VerifierFaults`). A worker that cannot start at all raises `VerifierUnavailable`: an environment problem, not
  something model text caused, so it is not swallowed.
* The bound is the ambient `time_limit` (a context variable, so each thread has its own); `Task.score` sets it from
  `Task.verify_timeout_s`. Calls are serialised by a lock: one executor, one call at a time.

Cost: a round trip adds ~0.2 ms to the verifier's own work (1-2 ms on a heavily loaded machine: three process
wake-ups); a timeout costs the bound plus a re-fork (~30 ms, paid by the next call). Figures measured on the project
VM are in the README section on untrusted model output.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import pickle
import signal
import subprocess
import sys
import threading
from contextvars import ContextVar
from pathlib import Path

from hicra.tasks.verifier_worker import read_frame, write_frame

# Per-completion bound on a verifier call. math-verify needs well under 0.1 s on a real answer and rarely 1 s on a
# long symbolic one on a loaded 2-core VM; 3 s leaves room for that and caps a 16-completion group at 48 s even if
# every completion is adversarial.
DEFAULT_TIMEOUT_S = 3.0
# Address space an executor may add on top of its size at fork: sympy on a real answer needs tens of MB; a
# giant integer or matrix fails fast with a MemoryError instead of taking memory from the trainer.
MEMORY_ALLOWANCE_MB = 1024
# Supervisor start-up (imports of sympy, math-verify, reasoning-gym) and first load of a verifier module: not
# part of any completion's bound, but bounded too.
_STARTUP_TIMEOUT_S = 180.0
# Slack on top of a call's bound before the trainer stops waiting for the supervisor itself.
_SUPERVISOR_SLACK_S = 10.0
# Not `-m hicra.tasks.verifier_worker`: importing the package imports that module first, and runpy would then run
# a second copy of it as __main__.
_WORKER_MAIN = "import sys; from hicra.tasks.verifier_worker import main; sys.exit(main(sys.argv))"

_time_limit: ContextVar[float] = ContextVar("verifier_time_limit_s", default=DEFAULT_TIMEOUT_S)


class VerifierTimeout(Exception):
    """A verifier call ran past its bound; the executor was killed."""


class VerifierError(Exception):
    """A verifier call raised, ran out of memory, or its process died."""


class VerifierUnavailable(RuntimeError):
    """The verifier worker process could not be started (an environment problem, not model text)."""


@contextlib.contextmanager
def time_limit(seconds: float):
    """Bound every `run_bounded` call inside the block (in this thread / context) to `seconds`."""
    if not seconds > 0:
        raise ValueError(f"verifier time limit must be > 0 seconds, got {seconds!r}")
    token = _time_limit.set(float(seconds))
    try:
        yield
    finally:
        _time_limit.reset(token)


def run_bounded(fn, *args):
    """``fn(*args)`` in the verifier worker, within the current `time_limit`.

    `fn` must be a module-level function (it is looked up by module and name in the worker) returning a
    JSON-serialisable value; `args` must pickle. Raises `VerifierTimeout`, `VerifierError`, `VerifierUnavailable`.
    """
    return _WORKER.call(fn.__module__, fn.__qualname__, args, _time_limit.get())


class VerifierFaults:
    """Verifier timeouts and errors since the last `read()`; one per task (``task.verifier_faults``).

    Thread-safe. The trainer logs ``read()`` as ``faults/reward_timeouts`` and ``faults/reward_errors``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._timeouts = self._errors = 0

    def add(self, *, timeouts: int = 0, errors: int = 0) -> None:
        with self._lock:
            self._timeouts += timeouts
            self._errors += errors

    def read(self) -> dict[str, int]:
        """``{"reward_timeouts": n, "reward_errors": m}`` counted since the previous read; resets both."""
        with self._lock:
            counts = {"reward_timeouts": self._timeouts, "reward_errors": self._errors}
            self._timeouts = self._errors = 0
        return counts

    def __getstate__(self) -> dict:  # a task may be pickled (checkpoints, spawn); the lock cannot
        return {"timeouts": self._timeouts, "errors": self._errors}

    def __setstate__(self, state: dict) -> None:
        self.__init__()
        self._timeouts, self._errors = state["timeouts"], state["errors"]


# --- plumbing: the trainer's end of the worker -------------------------------------------------------------------


class _WorkerClient:
    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._modules: set[str] = set()  # verifier modules the current supervisor has loaded
        self._broken: str | None = None  # why the worker could not start; not retried

    def call(self, module: str, function: str, args: tuple, timeout_s: float):
        request = json.dumps({"module": module, "function": function, "timeout_s": timeout_s}).encode()
        payload = pickle.dumps(args, protocol=pickle.HIGHEST_PROTOCOL)
        with self._lock:
            proc = self._started()
            wait_s = timeout_s + _SUPERVISOR_SLACK_S + (0.0 if module in self._modules else _STARTUP_TIMEOUT_S)
            cause = None
            try:
                write_frame(proc.stdin.fileno(), request)
                write_frame(proc.stdin.fileno(), payload)
                reply = read_frame(proc.stdout.fileno(), wait_s)
            except TimeoutError:
                self._stop()
                raise VerifierTimeout(f"verifier worker gave no answer within {wait_s:.0f} s; restarted") from None
            except (OSError, EOFError) as err:
                reply = None
                cause = err
            if reply is None:
                self._stop()
                raise VerifierError(f"verifier worker died ({proc.poll()}); restarted") from cause
            self._modules.add(module)
        try:
            message = json.loads(reply)
        except ValueError:
            message = {}
        if not isinstance(message, dict):
            message = {}
        if "value" in message:
            return message["value"]
        if message.get("timeout"):
            raise VerifierTimeout(f"{module}.{function} ran past {timeout_s:g} s")
        raise VerifierError(str(message.get("error", "malformed reply from the verifier worker")))

    def _started(self) -> subprocess.Popen:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        if self._broken is not None:
            raise VerifierUnavailable(self._broken)
        self._stop()
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        # The worker imports the same hicra as this process, installed or not.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).parents[2]), env.get("PYTHONPATH")]))
        proc = None
        try:
            proc = subprocess.Popen([sys.executable, "-c", _WORKER_MAIN, str(MEMORY_ALLOWANCE_MB)],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0, env=env,
                                    start_new_session=True)  # own process group: no terminal Ctrl-C, one kill
            ready = read_frame(proc.stdout.fileno(), _STARTUP_TIMEOUT_S)
            if ready is None or not json.loads(ready).get("ready"):
                raise EOFError("it exited during start-up")
        except (OSError, EOFError, TimeoutError, ValueError) as err:
            self._broken = f"cannot start the verifier worker ({sys.executable} -c {_WORKER_MAIN!r}): {err}"
            if proc is not None:
                _kill(proc)
            raise VerifierUnavailable(self._broken) from err
        self._proc, self._modules = proc, set()
        return proc

    def _stop(self) -> None:
        if self._proc is not None:
            _kill(self._proc)
        self._proc, self._modules = None, set()

    def close(self) -> None:
        with self._lock:
            self._stop()


def _kill(proc: subprocess.Popen) -> None:
    """Kill the supervisor and its executor (one process group) and reap the supervisor."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        proc.wait(timeout=10)
    for stream in (proc.stdin, proc.stdout):
        with contextlib.suppress(Exception):
            stream.close()


_WORKER = _WorkerClient()
atexit.register(_WORKER.close)
# A forked child (a DataLoader worker, say) must not talk over its parent's pipes: it starts its own worker.
os.register_at_fork(after_in_child=_WORKER._reset)
