"""One process at a time per run: an exclusive lock on each checkpoint folder a training process writes to or
resumes from.

Two processes continuing one run would both log to its MLflow run (steps logged twice, `hicra.run_dir` repointed)
and overwrite each other's `last.ckpt`. The lock is `flock` on `<checkpoint folder>/train.lock`: the kernel drops it
when its process ends, however it ends (SIGKILL, out of memory, a node reboot), so a lock left by a killed process is
simply taken over. The file names its holder (pid, host, start time) for the message a second process gets.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Self

from hicra.errors import ConfigError

LOCK_FILE = "train.lock"
log = logging.getLogger(__name__)


class RunLocks:
    """`with RunLocks(enabled=is_main) as locks: locks.acquire(folder)`: every folder locked until the block ends.

    `enabled=False` (the other ranks of a DDP job, which share rank 0's run) acquires nothing.
    """

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self._handles: dict[Path, object] = {}

    def acquire(self, checkpoint_dir: Path) -> None:
        """Raises ConfigError (one line naming the holder) when another live process holds `checkpoint_dir`."""
        folder = checkpoint_dir.resolve()
        if not self.enabled or folder in self._handles:
            return
        folder.mkdir(parents=True, exist_ok=True)
        try:
            handle, ours = open(folder / LOCK_FILE, "a+"), True  # noqa: SIM115 - kept open while the lock is held
        except PermissionError:  # a folder we may only read (a checkpoint to start from): hold its lock if it has one
            if not (folder / LOCK_FILE).is_file():
                return
            handle, ours = open(folder / LOCK_FILE), False  # noqa: SIM115 - flock needs no write access
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = describe_holder(handle)
            handle.close()
            raise ConfigError(f"{folder} is being trained by another process ({holder}); wait for it to end or "
                              f"stop it first (a lock left by a killed process is taken over)") from None
        except OSError as err:  # a filesystem without flock (e.g. Lustre mounted without -o flock)
            handle.close()
            log.warning("cannot lock %s (%s): make sure no other process trains this run", folder, err.strerror)
            return
        if ours:
            handle.seek(0)
            handle.truncate()
            handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                     "since": time.strftime("%Y-%m-%d %H:%M:%S")}))
            handle.flush()
        self._handles[folder] = handle

    def release(self) -> None:
        for handle in self._handles.values():
            handle.close()  # closing drops the flock; the file stays (unlinking it would race a waiting process)
        self._handles.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def describe_holder(handle) -> str:
    handle.seek(0)
    try:
        holder = json.loads(handle.read())
        return f"pid {holder['pid']} on {holder['host']} since {holder['since']}"
    except (ValueError, KeyError, TypeError):
        return "holder unknown"
