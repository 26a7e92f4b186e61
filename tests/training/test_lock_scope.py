"""The run lock (flock) holds across nodes only where the filesystem makes it cluster-wide: startup says when the
run folder's filesystem keeps it on one node (NFS nolock, Lustre localflock, BeeGFS). /proc/mounts is faked."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from hicra.training import run_lock
from hicra.training.run_lock import RunLocks, node_local_reason

MOUNTS = """\
sysfs /sys sysfs rw,nosuid 0 0
/dev/nvme0n1p1 / ext4 rw,relatime 0 0
home:/export/home /home nfs4 rw,vers=4.2,hard 0 0
scratch:/s /scratch nfs rw,vers=3,nolock 0 0
scratch:/s/fast /scratch/fast nfs4 rw,local_lock=flock 0 0
10.0.0.1@o2ib:/lfs /lustre lustre rw,localflock 0 0
10.0.0.1@o2ib:/lfs2 /lustre2 lustre rw,flock 0 0
beegfs_nodev /mnt/beegfs beegfs rw,cfgFile=/etc/beegfs/beegfs-client.conf 0 0
srv:/with /mnt/with\\040space nfs rw,nolock 0 0
"""


@pytest.fixture
def mounts(tmp_path):
    path = tmp_path / "mounts"
    path.write_text(MOUNTS)
    return path


@pytest.mark.parametrize("folder, expected", [
    ("/home/me/outputs/runs/a", None),  # NFSv4 with its own locking: flock is cluster-wide
    ("/tmp/outputs", None),  # the local disk
    ("/scratch/runs/a", "nfs at /scratch mounted nolock"),
    ("/scratch/fast/runs/a", "nfs4 at /scratch/fast mounted local_lock=flock"),  # the longest mount point wins
    ("/scratchy/runs", None),  # a prefix of the text, not of the path
    ("/lustre/proj/runs", "lustre at /lustre mounted localflock"),
    ("/lustre2/proj/runs", None),  # -o flock: cluster-wide
    ("/mnt/beegfs/runs", "beegfs at /mnt/beegfs: its client keeps flock locally unless tuneUseGlobalFileLocks is set"),
    ("/mnt/with space/runs", "nfs at /mnt/with space mounted nolock"),  # \040 in /proc/mounts
])
def test_node_local_filesystems_are_named(folder, expected, mounts, monkeypatch):
    monkeypatch.setattr(Path, "resolve", lambda self, strict=False: self)  # the folders need not exist here
    assert node_local_reason(Path(folder), mounts) == expected


def test_no_proc_mounts_says_nothing(tmp_path):
    assert node_local_reason(tmp_path, tmp_path / "absent") is None


def test_startup_says_when_the_lock_holds_on_this_node_only(tmp_path, caplog, monkeypatch):
    mounts = tmp_path / "mounts"
    mounts.write_text(f"srv:/e {tmp_path} nfs rw,nolock 0 0\n")
    monkeypatch.setattr(run_lock, "node_local_reason", lambda folder: node_local_reason(folder, mounts))
    with caplog.at_level(logging.WARNING, logger=run_lock.__name__), RunLocks() as locks:
        locks.acquire(tmp_path / "run" / "checkpoints")
    assert any("holds on this node only (nfs at" in r.getMessage() and "nolock" in r.getMessage()
               for r in caplog.records)
