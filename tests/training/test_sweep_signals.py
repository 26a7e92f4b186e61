"""Ctrl-C and SIGTERM on a sweep whose jobs run in joblib's workers (hicra/training/sweep_signals.py), piece by piece:
the launching process forwards a stop to its workers and ends the sweep in one line; a worker ignores Ctrl-C and,
between jobs, outlives SIGTERM and skips the jobs it is handed after it. Through the real console script (Ctrl-C to
the whole process group, then the same command continuing the sweep): tests/cli/test_sweeps.py."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
from support import PROJECT_ROOT, cli_env

from hicra.training import sweep_signals
from hicra.training.sweep_signals import SweepSignals

# A stand-in worker: exits 7 on SIGTERM (a job that stopped at its safe point).
WORKER = "import signal, sys, time; signal.signal(signal.SIGTERM, lambda *a: sys.exit(7)); print('ready', flush=True); " \
         "time.sleep(120)"


def _workers(n: int) -> list[subprocess.Popen]:
    workers = [subprocess.Popen([sys.executable, "-c", WORKER], stdout=subprocess.PIPE, text=True) for _ in range(n)]
    for worker in workers:
        assert worker.stdout.readline().strip() == "ready"
    return workers


def test_sigterm_is_forwarded_to_the_workers_and_the_sweep_ends_in_one_line(monkeypatch, capsys):
    """SIGTERM to the launching process alone (`kill`, Kubernetes) used to kill it and leave its workers training."""
    workers = _workers(2)
    monkeypatch.setattr(sweep_signals, "pool_workers", lambda: [w.pid for w in workers if w.poll() is None])
    try:
        with pytest.raises(SystemExit) as stop, SweepSignals():
            signal.raise_signal(signal.SIGTERM)
            for worker in workers:  # the sweep drains: each job stops at its safe point
                worker.wait(timeout=60)
    finally:
        for worker in workers:
            worker.kill() if worker.poll() is None else None
    assert [w.returncode for w in workers] == [7, 7]
    assert stop.value.code == 128 + signal.SIGTERM
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(
        "hicra-train: sweep stopped by SIGTERM: the jobs in progress stopped at a safe point")
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handlers restored


def test_without_workers_a_signal_is_handled_as_for_a_single_run(monkeypatch):
    """The basic launcher (or joblib with one job at a time) runs the jobs in this process: Ctrl-C stays Python's."""
    monkeypatch.setattr(sweep_signals, "pool_workers", list)
    # Python's own Ctrl-C handler before the sweep, whatever an earlier test in this worker process left installed
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt), SweepSignals():
            signal.raise_signal(signal.SIGINT)
    finally:
        signal.signal(signal.SIGINT, previous)


WORKER_SIDE = """
import os, signal
from hicra.training import cli, sweep_signals
sweep_signals.worker_started()
os.kill(os.getpid(), signal.SIGINT)   # Ctrl-C reaches every process of the group: ignored here
os.kill(os.getpid(), signal.SIGTERM)  # between jobs: remembered, the worker lives on
print("stopped by", sweep_signals.stopped_by(), flush=True)
print("job returned", cli._hydra_main.__wrapped__(None), flush=True)  # the next job handed to it never starts
"""


def test_a_worker_ignores_ctrl_c_outlives_sigterm_between_jobs_and_skips_the_rest():
    """A worker that died between jobs made loky SIGKILL its siblings in the middle of their stop."""
    result = subprocess.run([sys.executable, "-c", WORKER_SIDE], cwd=PROJECT_ROOT, env=cli_env(), capture_output=True,
                            check=False,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines() == [f"stopped by {int(signal.SIGTERM)}", "job returned None"]
    assert result.stderr.strip() == "hicra-train: job skipped: the sweep was stopped by SIGTERM"
