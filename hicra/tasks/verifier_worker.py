"""The process side of `hicra.tasks.bounded`: `main` runs as ``python -c "...verifier_worker import main..." MEMORY_MB``.

Two processes live here (see `hicra.tasks.bounded` for why):

* the **supervisor** (`main`) reads requests from the trainer on stdin, imports each verifier module
  once (and runs its optional ``warm_up_worker()``), forks an executor, hands it the call and waits at most the
  call's bound. It never runs a verifier, so model text cannot stall or corrupt it.
* the **executor** (a fork of the supervisor, so it starts in milliseconds with every verifier module already
  imported and warm) runs calls one after another. When a call passes its bound the supervisor SIGKILLs it; the
  next call gets a fresh fork. Inside it: an address-space limit (`MEMORY_MB` above its size at fork), a per-call
  CPU-time limit (a backstop should the supervisor be gone) and an audit hook that refuses process creation, file
  writes, sockets and ctypes (defence in depth; the verifiers are kept from evaluating model text by their own
  guards, see `hicra.tasks.reasoning_gym_verifiers`).

Wire format, both directions: frames of a 4-byte big-endian length and a payload. A request is two frames, a JSON
header ``{"module", "function", "timeout_s"}`` and the pickled argument tuple (from the trusted trainer); a reply is
one JSON frame: ``{"value": ...}``, ``{"error": "..."}`` or ``{"timeout": true}``. Replies are JSON, never pickle,
so that nothing a verifier returns can run code in the trainer.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import pickle
import resource
import select
import signal
import socket
import struct
import sys
import time
import warnings

_LENGTH = struct.Struct(">I")
_MAX_FRAME = 64 * 2**20

# --- wire format -------------------------------------------------------------------------------------------------


def write_frame(fd: int, payload: bytes) -> None:
    data = memoryview(_LENGTH.pack(len(payload)) + payload)
    while data:
        data = data[os.write(fd, data):]


def read_frame(fd: int, timeout_s: float | None = None) -> bytes | None:
    """The next frame from `fd`; None on a clean end of stream. TimeoutError past `timeout_s`, EOFError mid-frame."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    head = _read_exact(fd, _LENGTH.size, deadline, eof_ok=True)
    if head is None:
        return None
    (size,) = _LENGTH.unpack(head)
    if size > _MAX_FRAME:
        raise EOFError(f"frame of {size} bytes")
    return _read_exact(fd, size, deadline, eof_ok=False)


def _read_exact(fd: int, size: int, deadline: float | None, eof_ok: bool) -> bytes | None:
    chunks, got = [], 0
    while got < size:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise TimeoutError
        chunk = os.read(fd, size - got)
        if not chunk:
            if eof_ok and got == 0:
                return None
            raise EOFError("stream ended mid-frame")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def encode(message: dict) -> bytes:
    return json.dumps(message).encode()


# --- supervisor --------------------------------------------------------------------------------------------------


class _Supervisor:
    def __init__(self, memory_mb: int, channel_fds: tuple[int, int]) -> None:
        self.memory_mb = memory_mb
        self.channel_fds = channel_fds  # closed in every executor: only the supervisor talks to the trainer
        self.loaded: set[str] = set()
        self.pid: int | None = None
        self.sock: socket.socket | None = None

    def handle(self, header_bytes: bytes, args: bytes) -> bytes:
        """The reply frame for one request: the executor's own reply, forwarded unread, or the supervisor's."""
        header = json.loads(header_bytes)
        module = header["module"]
        if module not in self.loaded:
            try:
                warm_up = getattr(importlib.import_module(module), "warm_up_worker", None)
                if warm_up is not None:
                    warm_up()
            except Exception as err:  # noqa: BLE001 - reported to the trainer as a verifier error
                return encode({"error": f"cannot load verifier module {module}: {type(err).__name__}: {err}"[:300]})
            self.loaded.add(module)
            self.stop_executor()  # the next fork inherits the imported, warmed-up module
        if self.pid is None:
            self.start_executor()
        try:
            write_frame(self.sock.fileno(), header_bytes)
            write_frame(self.sock.fileno(), args)
            reply = read_frame(self.sock.fileno(), float(header["timeout_s"]))
        except TimeoutError:
            self.stop_executor()
            return encode({"timeout": True})
        except (OSError, EOFError):
            reply = None
        if reply is None:  # the executor died mid-call: out of CPU time, a crash in C code, ...
            status = self.stop_executor()
            return encode({"error": f"verifier process died ({_describe(status)})"})
        return reply

    def start_executor(self) -> None:
        mine, theirs = socket.socketpair()
        pid = os.fork()
        if pid == 0:  # executor: never returns into the supervisor's code
            status = 1
            try:
                mine.close()
                for fd in self.channel_fds:
                    os.close(fd)
                _serve(theirs.fileno(), self.memory_mb)
                status = 0
            finally:
                os._exit(status)
        theirs.close()
        self.pid, self.sock = pid, mine

    def stop_executor(self) -> int | None:
        """SIGKILL the executor (if any) and reap it; its wait status, or None when there was none."""
        if self.pid is None:
            return None
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _, status = os.waitpid(self.pid, 0)
        self.sock.close()
        self.pid, self.sock = None, None
        return status


def _describe(status: int | None) -> str:
    if status is None:
        return "no status"
    if os.WIFSIGNALED(status):
        return f"signal {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit {os.WEXITSTATUS(status)}"


def _quiet() -> None:
    """Verifiers log and warn per sample (math-verify logs every parse failure); a worker is silent."""
    logging.disable(logging.ERROR)
    warnings.simplefilter("ignore")


def main(argv: list[str]) -> int:
    memory_mb = int(argv[1])
    # The protocol gets private copies of stdin/stdout; fd 1 then points at stderr and fd 0 at /dev/null, so a
    # library that prints cannot corrupt the frames.
    requests, replies = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    _quiet()
    supervisor = _Supervisor(memory_mb, (requests, replies))
    write_frame(replies, encode({"ready": True}))
    try:
        while (header := read_frame(requests)) is not None:  # end of stream = the trainer is gone
            args = read_frame(requests)
            write_frame(replies, supervisor.handle(header, args))
    except (OSError, EOFError):
        pass
    finally:
        supervisor.stop_executor()
    return 0


# --- executor ----------------------------------------------------------------------------------------------------


def _serve(fd: int, memory_mb: int) -> None:
    _limit_memory(memory_mb)
    sys.addaudithook(_refuse_side_effects)
    while (header := read_frame(fd)) is not None:
        request = json.loads(header)
        args = pickle.loads(read_frame(fd))  # from the trainer, through the supervisor: trusted
        _limit_cpu(float(request["timeout_s"]))
        write_frame(fd, _call(request, args))


def _call(request: dict, args: tuple) -> bytes:
    try:
        function = getattr(importlib.import_module(request["module"]), request["function"])
        return encode({"value": function(*args)})
    except BaseException as err:  # noqa: BLE001 - everything, MemoryError and RecursionError included, is a reply
        try:
            message = f"{type(err).__name__}: {err}"
        except BaseException:  # noqa: BLE001 - str() of a sympy object can fail too
            message = type(err).__name__
        return encode({"error": message[:300]})


def _limit_memory(memory_mb: int) -> None:
    """Address space = size at fork + `memory_mb`: a verifier building a giant number gets a MemoryError."""
    with open("/proc/self/statm") as statm:
        size = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = size + memory_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))


def _limit_cpu(timeout_s: float) -> None:
    """CPU seconds left for this call: twice the bound. The supervisor's wall-clock kill comes first; this only
    matters for an executor orphaned mid-call (then SIGXCPU ends it instead of a runaway power tower)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = int(usage.ru_utime + usage.ru_stime + 2 * timeout_s) + 2
    resource.setrlimit(resource.RLIMIT_CPU, (soft if hard == resource.RLIM_INFINITY else min(soft, hard), hard))


# Audit events an answer checker never needs: starting programs, signals, sockets, ctypes, changing the file system.
_REFUSED_EVENTS = frozenset({
    "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "subprocess.Popen", "pty.spawn",
    "os.kill", "os.killpg", "socket.__new__", "socket.connect", "socket.bind", "socket.getaddrinfo",
    "ctypes.dlopen", "ctypes.dlsym", "ctypes.cdata", "ctypes.call_function",
    "os.remove", "os.rmdir", "os.rename", "os.link", "os.symlink", "os.truncate", "os.chmod", "os.chown",
    "os.mkdir", "os.putenv", "os.unsetenv", "shutil.rmtree", "shutil.copyfile", "shutil.move", "webbrowser.open",
})
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _refuse_side_effects(event: str, args: tuple) -> None:
    """Audit hook of the executor. Not a sandbox (CPython's audit hooks cannot be one), a tripwire: if some
    verifier ever evaluates model text, the usual payloads (os.system, subprocess, open(..., "w")) fail.
    PermissionError is an OSError, so importlib's optional .pyc writes simply skip."""
    if event in _REFUSED_EVENTS:
        raise PermissionError(f"verifier worker: {event} refused")
    if event == "open":
        mode, flags = args[1], args[2]
        if (isinstance(mode, str) and any(c in mode for c in "wax+")) or (isinstance(flags, int)
                                                                         and flags & _WRITE_FLAGS):
            raise PermissionError("verifier worker: opening a file for writing refused")

