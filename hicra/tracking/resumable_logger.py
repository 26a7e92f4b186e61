"""Lightning's MLFlowLogger, made safe to resume: each (metric, step) reaches MLflow once.

A run killed after its last checkpoint has logged a few steps past it. Resuming replays those steps (identically on
CPU, where every generator is restored), so metrics at steps MLflow already holds are dropped: the history goes on
at the next step, with no gap and no duplicate.

A store that stops answering does not stop training (hicra/tracking/outage.py): metrics are kept, in order, until it
answers again (and travel in each checkpoint meanwhile); artifacts that cannot be stored are named on the run.

A run stopped from outside ends KILLED, wherever the stop lands: Lightning finalizes its loggers with "failed" when
Ctrl-C (or its own SIGTERM check) interrupts fit, which would call the run FAILED.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

from pytorch_lightning.loggers import MLFlowLogger
from pytorch_lightning.utilities import rank_zero_only

from hicra.tracking.outage import (
    Outage,
    TrackingUnavailable,
    bound_http_wait,
    first_line,
    is_unreachable,
    say,
    steps_of,
    write_unsent,
)
from hicra.tracking.run_end import is_stop

MAX_METRICS_PER_BATCH = 1000  # MLflow's log_batch limit


class ResumableMLFlowLogger(MLFlowLogger):
    def __init__(self, experiment_name: str = "hicra", run_name: str | None = None, tracking_uri: str | None = None,
                 tags: dict | None = None, save_dir: str | None = "./mlruns", log_model: bool | str = False,
                 prefix: str = "", artifact_location: str | None = None, run_id: str | None = None,
                 synchronous: bool | None = None, outage_timeout_s: float = 300.0, log_final_model: bool = False,
                 registered_model_name: str | None = None):
        super().__init__(experiment_name=experiment_name, run_name=run_name, tracking_uri=tracking_uri, tags=tags,
                         save_dir=save_dir, log_model=log_model, prefix=prefix, artifact_location=artifact_location,
                         run_id=run_id, synchronous=synchronous)
        self._resuming = run_id is not None
        # The run's final_model/ as an MLflow model at its end (hicra/tracking/model_logging.py), and its registry name
        self.log_final_model, self.registered_model_name = log_final_model, registered_model_name
        if self._tracking_uri.startswith(("http://", "https://")):
            bound_http_wait()  # seconds per call, not MLflow's minutes of retries: the outage is handled here
        self._last_logged_step: dict[str, int] | None = None
        self.outage = Outage(self._tracking_uri, outage_timeout_s)
        self.unsent: list[tuple[str, float, int, int]] = []  # (key, value, timestamp ms, step), oldest first
        self.not_stored: list[str] = []  # artifacts the store refused: named on the run at its end

    def _last_steps(self) -> dict[str, int]:
        """Highest step MLflow holds for each metric of the resumed run (read once)."""
        if self._last_logged_step is None:
            client, run_id = self.experiment, self.run_id
            self._last_logged_step = {key: max(m.step for m in client.get_metric_history(run_id, key))
                                      for key in client.get_run(run_id).data.metrics}
        return self._last_logged_step

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        timestamp = int(time.time() * 1000)
        for key, value in metrics.items():
            if isinstance(value, str):
                continue  # Lightning's MLFlowLogger discards these too
            key = re.sub("[^a-zA-Z0-9_/. -]+", "", f"{self._prefix}-{key}" if self._prefix else key)
            self.unsent.append((key, float(value), timestamp, step or 0))
        self.send_unsent()

    def keep(self, entries) -> None:
        """Values a checkpoint kept unsent (StopOnOutage), sent before the ones this process logs."""
        self.unsent[:0] = [tuple(entry) for entry in entries]

    def send_unsent(self) -> bool:
        """Send the kept metric values in order (with none kept during an outage: ask whether the store answers),
        unless the last failed try was too recent. True when the store has them all."""
        if not self.unsent and not self.outage.active:
            return True
        if not self.outage.may_try():
            return False
        sent = len(self.unsent)
        try:
            if not self.unsent:
                self.experiment.get_run(self.run_id)
            while self.unsent:
                self._send(self.unsent[:MAX_METRICS_PER_BATCH])
                del self.unsent[:MAX_METRICS_PER_BATCH]
        except Exception as err:
            if not is_unreachable(err):
                raise
            self.outage.failed(err)
            return False
        self.outage.recovered(sent)
        return True

    def _send(self, entries: list) -> None:
        from mlflow.entities import Metric

        # A resumed run replays the steps after its checkpoint (and sends what the checkpoint kept unsent): what
        # MLflow already holds is dropped, and so is a step met twice here.
        last = dict(self._last_steps()) if self._resuming else None
        metrics = []
        for key, value, timestamp, step in entries:
            if last is not None:
                if step <= last.get(key, -1):
                    continue
                last[key] = step
            metrics.append(Metric(key=key, value=value, timestamp=timestamp, step=step))
        if metrics:
            self.experiment.log_batch(run_id=self.run_id, metrics=metrics, **self._log_batch_kwargs)
        if last is not None:
            self._last_logged_step = last  # only once MLflow has them: a failed send is tried again whole

    def deliver(self, raise_if_signalled, run_dir: Path) -> None:
        """The end of a run: wait until the store holds every kept value, at most what is left of
        `logger.outage_timeout_s` (a stop signal still stops it); then write them to `<run_dir>/unsent_metrics.jsonl`
        and raise TrackingUnavailable."""
        while not self.send_unsent():
            raise_if_signalled()
            if self.outage.expired():
                path = run_dir / "unsent_metrics.jsonl"
                write_unsent(self.unsent, path)
                raise TrackingUnavailable(
                    f"training finished (the run folder {run_dir} holds its model and checkpoints), but the tracking "
                    f"server {self.outage.uri} has not answered for {self.outage.elapsed_s():.0f} s "
                    f"(logger.outage_timeout_s={self.outage.timeout_s:g}): MLflow run {self.run_id} stays RUNNING "
                    f"and its {len(self.unsent)} unsent metric values ({steps_of(self.unsent)}) are in {path}")
            time.sleep(0.2)

    def call(self, what: str, fn, *args) -> bool:
        """One call to the store for an artifact (`what`): skipped while the store does not answer; a refusal (a full
        artifact store) is said once, remembered for the run's description, and training goes on. True if done."""
        if self.outage.active and not self.send_unsent():
            self.not_stored.append(what)
            return False
        try:
            fn(*args)
            return True
        except Exception as err:  # noqa: BLE001 - any failure to store a copy must not end the training
            if is_unreachable(err):
                self.outage.failed(err)
            else:
                say(f"could not store artifact {what} in MLflow run {self.run_id} ({first_line(err)}); "
                    f"training goes on, the file stays in the run folder")
            self.not_stored.append(what)
            return False

    @rank_zero_only
    def finalize(self, status: str = "success") -> None:
        # Lightning calls this from inside its `except` for the interrupt, so the exception in flight says why.
        if status == "failed" and is_stop(sys.exc_info()[1]):
            status = "KILLED"
        if not self._initialized or not self.send_unsent():
            return  # the store does not answer: the run's end waits for it (`deliver`) or says it was not marked
        try:
            super().finalize(status)
        except Exception as err:
            if not is_unreachable(err):
                raise
            self.outage.failed(err)
