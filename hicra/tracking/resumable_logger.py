"""Lightning's MLFlowLogger, made safe to resume: each (metric, step) reaches MLflow once.

A run killed after its last checkpoint has logged a few steps past it. Resuming replays those steps (identically on
CPU, where every generator is restored), so metrics at steps MLflow already holds are dropped: the history goes on
at the next step, with no gap and no duplicate.

A run stopped from outside ends KILLED, wherever the stop lands: Lightning finalizes its loggers with "failed" when
Ctrl-C (or its own SIGTERM check) interrupts fit, which would call the run FAILED.
"""

from __future__ import annotations

import sys

from pytorch_lightning.loggers import MLFlowLogger
from pytorch_lightning.utilities import rank_zero_only

from hicra.tracking.run_end import is_stop


class ResumableMLFlowLogger(MLFlowLogger):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._resuming = kwargs.get("run_id") is not None
        self._last_logged_step: dict[str, int] | None = None

    def _last_steps(self) -> dict[str, int]:
        """Highest step MLflow holds for each metric of the resumed run (read once)."""
        if self._last_logged_step is None:
            client, run_id = self.experiment, self.run_id
            self._last_logged_step = {key: max(m.step for m in client.get_metric_history(run_id, key))
                                      for key in client.get_run(run_id).data.metrics}
        return self._last_logged_step

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if self._resuming and step is not None:
            last = self._last_steps()
            metrics = {k: v for k, v in metrics.items() if step > last.get(k, -1)}
            if not metrics:
                return
        super().log_metrics(metrics, step)

    @rank_zero_only
    def finalize(self, status: str = "success") -> None:
        # Lightning calls this from inside its `except` for the interrupt, so the exception in flight says why.
        if status == "failed" and is_stop(sys.exc_info()[1]):
            status = "KILLED"
        super().finalize(status)
