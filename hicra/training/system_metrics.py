"""MLflow's system metrics (CPU, memory, disk, network and, on GPUs, utilisation and memory: `system/*`) for a run
that Lightning's MLFlowLogger created.

MLflow samples them only for runs started with `mlflow.start_run`; Lightning creates its run through the client, so
the monitor is started here, on the logger's run, for the span of `fit`. It starts at fit start, after the step-0
validation has set the run back to RUNNING: the monitor stops itself when it sees the run in any other state.
"""

from __future__ import annotations

from pytorch_lightning.callbacks import Callback


class SystemMetrics(Callback):
    def __init__(self, every_s: float):
        self.every_s = every_s
        self._monitor = None

    def on_fit_start(self, trainer, pl_module) -> None:
        logger = next((lg for lg in trainer.loggers if getattr(lg, "run_id", None) and
                       hasattr(lg, "_tracking_uri")), None)
        if logger is None or self.every_s <= 0:
            return
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        # resume_logging: a resumed run's system/* go on from their last step instead of starting again at 0
        self._monitor = SystemMetricsMonitor(logger.run_id, sampling_interval=self.every_s, resume_logging=True,
                                             tracking_uri=logger._tracking_uri)
        self._monitor.start()

    def on_fit_end(self, trainer, pl_module) -> None:
        self._stop()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._stop()

    def _stop(self) -> None:
        if self._monitor is not None:
            self._monitor.finish()
            self._monitor = None
