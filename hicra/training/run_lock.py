"""One process at a time per run: an exclusive lock on each checkpoint folder a training process writes to or
resumes from.

Two processes continuing one run would both log to its MLflow run (steps logged twice, `hicra.run_dir` repointed)
and overwrite each other's `last.ckpt`. The lock is `flock` on `<checkpoint folder>/train.lock`: the kernel drops it
when its process ends, however it ends (SIGKILL, out of memory, a node reboot), so a lock left by a killed process is
simply taken over. The file names its holder (pid, host, start time) for the message a second process gets.

`flock` excludes processes on other nodes only where the filesystem makes it cluster-wide. Where it does not, the
lock still holds between processes of one node, and startup says so in one line (`node_local_reason`, from
/proc/mounts: the run folder's longest matching mount point and its options):
- NFS mounted `nolock` (or `local_lock=flock|all`): flock is kept by the client alone;
- Lustre mounted `localflock`: the same (mounted with neither `flock` nor `localflock`, flock fails and the run goes on
  with a warning and no lock at all);
- BeeGFS: its client keeps flock locally unless `tuneUseGlobalFileLocks` is set in beegfs-client.conf, which mount
  options do not show.
There, two jobs continuing one run from two nodes are not refused: make sure only one runs (one job name per run,
`--dependency=singleton` under SLURM). A lock that did hold across nodes outlives a killed node for a while (NFSv4:
its lease, ~90 s; NFSv3: until that node's client restarts), so a job requeued onto another node inside that window is
refused as "being trained by another process"; retry after the lease.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import socket
import time
from pathlib import Path
from typing import Self

from hicra.errors import ConfigError

LOCK_FILE = "train.lock"
NFS_LOCAL_LOCKS = {"nolock", "local_lock=flock", "local_lock=all"}  # NFS mount options keeping flock on the client
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
        reason = node_local_reason(folder)
        if reason is not None:
            log.warning("the run lock on %s holds on this node only (%s): make sure no job on another node trains "
                        "this run", folder, reason)
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


def _unescape(field: str) -> str:
    """/proc/mounts writes a space in a mount point as \\040 (octal escapes)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mount_of(path: Path, mounts_text: str) -> tuple[str, str, set[str]] | None:
    """(mount point, filesystem type, options) of the mount holding `path`: the longest matching mount point."""
    best = None
    for line in mounts_text.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        point = _unescape(fields[1])
        if (path == Path(point) or Path(point) in path.parents) and (best is None or len(point) > len(best[0])):
            best = (point, fields[2], set(fields[3].split(",")))
    return best


def node_local_reason(folder: Path, mounts_file: Path = Path("/proc/mounts")) -> str | None:
    """Why flock on `folder` excludes processes on this node only, or None (a local disk, or a filesystem whose
    flock is cluster-wide as mounted). Unknown where /proc/mounts cannot be read (not Linux): None."""
    try:
        mount = mount_of(folder.resolve(), mounts_file.read_text())
    except OSError:
        return None
    if mount is None:
        return None
    point, fstype, options = mount
    local = NFS_LOCAL_LOCKS & options
    if fstype.startswith("nfs") and local:
        return f"{fstype} at {point} mounted {min(local)}"
    if fstype == "lustre" and "localflock" in options:
        return f"lustre at {point} mounted localflock"
    if fstype == "beegfs":
        return f"beegfs at {point}: its client keeps flock locally unless tuneUseGlobalFileLocks is set"
    return None
