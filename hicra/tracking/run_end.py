"""No failure leaves an MLflow run RUNNING: whatever stops `hicra-train` once its run exists ends that run."""

from __future__ import annotations

import contextlib
import logging

from hicra.errors import Preempted

log = logging.getLogger(__name__)


@contextlib.contextmanager
def ended_on_failure(logger):
    """Around everything a run does once its MLflow run exists: an exception ends the run FAILED, an interrupt
    (Ctrl-C, or a process asked to exit) KILLED. Only a run still RUNNING is changed: a status the failure set
    itself (Lightning marks FAILED what fails inside fit) or a finished run that a resume did not get to reopen
    stays as it is."""
    try:
        yield
    except BaseException as err:
        end_if_running(logger, "KILLED" if is_stop(err) else "FAILED")
        raise


def is_stop(err: BaseException) -> bool:
    """Stopped from outside (Ctrl-C, an exit request, SIGTERM/SIGUSR1 whether hicra's watch or Lightning's loops
    saw it first): KILLED, resumable, not FAILED."""
    return isinstance(err, KeyboardInterrupt | SystemExit | Preempted) or type(err).__name__ == "SIGTERMException"


def end_if_running(logger, status: str) -> None:
    run_id = getattr(logger, "_run_id", None)  # not `logger.run_id`: reading it would create a run
    outage = getattr(logger, "outage", None)
    if run_id is None or (outage is not None and outage.active):  # a store that does not answer cannot be told
        return
    try:
        client = logger.experiment
        if client.get_run(run_id).info.status == "RUNNING":
            client.set_terminated(run_id, status)
    except Exception as err:  # noqa: BLE001 - the failure being raised matters more than this bookkeeping
        log.warning("could not mark MLflow run %s %s: %s", run_id, status, (str(err) or repr(err)).splitlines()[0])
