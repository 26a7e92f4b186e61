"""hicra.compare.collect.completion on hand-built metric frames (no MLflow): which step a run got to."""

import pandas as pd

from hicra.analyze.runs import RunInfo
from hicra.compare.collect import completion


def test_system_metrics_do_not_count_as_training_steps():
    """MLflow samples `system/*` every few seconds on a step counter of its own: a 5-step run read `29 / 5`, and a
    run that stopped at step 2 would have passed as finished."""
    infos = [RunInfo(f"id{i}", f"r{i}", "grpo", "none", "0", "FINISHED", params={"trainer.max_steps": "5"})
             for i in range(2)]
    rows = [("id0", "val/accuracy", step, 0.5) for step in range(6)] + [("id1", "train/reward_mean", step, 0.5)
                                                                         for step in range(3)]
    rows += [(rid, "system/cpu_utilization_percentage", step, 10.0) for rid in ("id0", "id1") for step in range(30)]
    done, stopped = completion(infos, pd.DataFrame(rows, columns=["run_id", "key", "step", "value"]))
    assert (done.last_step, done.max_steps, done.unfinished) == (5, 5, False)
    assert (stopped.last_step, stopped.unfinished_reason) == (2, "last logged step 2 < trainer.max_steps 5")
