"""The verifier worker: a hard wall-clock bound (also on C-level work and off the main thread), a memory bound,
errors as exceptions, a fresh executor after a kill, and no side effects from inside it."""

import math
import pickle
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from hicra.tasks import bounded
from hicra.tasks.bounded import (
    VerifierError,
    VerifierFaults,
    VerifierTimeout,
    VerifierUnavailable,
    run_bounded,
    time_limit,
)

SLACK_S = 1.0  # kill + reply take ~0.05 s; the rest is headroom for a loaded 2-core CI machine


@pytest.fixture(scope="module", autouse=True)
def started_worker():
    run_bounded(math.sqrt, 4.0)  # start-up (imports) is not part of any call's bound


def bounded_elapsed(bound, fn, *args):
    start = time.perf_counter()
    with time_limit(bound), pytest.raises(VerifierTimeout):
        run_bounded(fn, *args)
    return time.perf_counter() - start


def test_returns_the_value():
    assert run_bounded(math.sqrt, 9.0) == 3.0
    assert run_bounded(math.isfinite, 1.0) is True


def test_a_hung_call_is_killed_at_the_bound_and_the_next_call_works():
    assert bounded_elapsed(0.3, time.sleep, 60) < 0.3 + SLACK_S
    assert run_bounded(math.sqrt, 16.0) == 4.0


def test_uninterruptible_c_level_work_is_killed():
    # Catastrophic backtracking runs inside the C regex engine: no signal handler runs until it returns (minutes).
    assert bounded_elapsed(0.5, re.fullmatch, "(a+)+$", "a" * 40 + "b") < 0.5 + SLACK_S


def test_the_bound_holds_off_the_main_thread():
    with ThreadPoolExecutor(max_workers=2) as pool:
        hung = pool.submit(bounded_elapsed, 0.3, time.sleep, 60)
        fine = pool.submit(run_bounded, math.sqrt, 25.0)
        assert hung.result() < 2 * (0.3 + SLACK_S)  # calls are serialised: one may wait for the other
        assert fine.result() == 5.0


def test_exceptions_and_memory_exhaustion_are_verifier_errors():
    with pytest.raises(VerifierError, match="ValueError: math domain error"):
        run_bounded(math.sqrt, -1.0)
    with pytest.raises(VerifierError, match="MemoryError"):
        run_bounded(bytearray, 2 * 2**30)  # above the 1 GiB allowance
    with pytest.raises(VerifierError, match="not JSON serializable"):
        run_bounded(bytearray, 3)


def test_no_process_creation_or_file_writes_inside_the_worker(tmp_path):
    import os

    marker = tmp_path / "pwned"
    with pytest.raises(VerifierError, match="os.system refused"):
        run_bounded(os.system, f"touch {marker}")
    with pytest.raises(VerifierError, match="for writing refused"):
        run_bounded(open, str(marker), "w")
    assert not marker.exists()


def test_a_crashed_executor_is_an_error_and_is_replaced():
    import os

    with pytest.raises(VerifierError, match=r"verifier process died \(exit 3\)"):
        run_bounded(os._exit, 3)
    assert run_bounded(math.sqrt, 36.0) == 6.0


def test_a_worker_that_cannot_start_is_unavailable_not_a_fault(monkeypatch):
    monkeypatch.setattr(bounded, "_WORKER_MAIN", "import sys; sys.exit(1)")
    client = bounded._WorkerClient()
    for _ in range(2):  # the failure is remembered, not retried on every completion
        with pytest.raises(VerifierUnavailable, match="cannot start the verifier worker"):
            client.call("math", "sqrt", (4.0,), 1.0)


def test_time_limit_rejects_a_non_positive_bound():
    with pytest.raises(ValueError, match="> 0"), time_limit(0):
        pass


def test_faults_count_until_read_and_survive_pickling():
    faults = VerifierFaults()
    faults.add(timeouts=2)
    faults.add(errors=1)
    workers = [threading.Thread(target=faults.add, kwargs={"errors": 1}) for _ in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert pickle.loads(pickle.dumps(faults)).read() == {"reward_timeouts": 2, "reward_errors": 9}
    assert faults.read() == {"reward_timeouts": 2, "reward_errors": 9}
    assert faults.read() == {"reward_timeouts": 0, "reward_errors": 0}
