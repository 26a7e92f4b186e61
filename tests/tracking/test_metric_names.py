"""Renamed metrics stay readable: old runs' `hicra/*` diagnostics load as `hierarchy/*`."""

from __future__ import annotations

import mlflow

from hicra.tracking.metric_names import current_name, legacy_names


def test_names_map_both_ways():
    assert current_name("hicra/semantic_entropy") == "hierarchy/semantic_entropy"
    assert current_name("val/accuracy") == "val/accuracy"
    assert legacy_names("hierarchy/rel_ppl_planning") == ["hierarchy/rel_ppl_planning", "hicra/rel_ppl_planning"]
    assert legacy_names("train/accuracy") == ["train/accuracy"]


def test_an_old_run_loads_under_the_new_names(tmp_path):
    from hicra.analyze.runs import RunInfo, fetch_metrics

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    run_id = client.create_run(client.create_experiment("old")).info.run_id
    client.log_metric(run_id, "hicra/semantic_entropy", 2.5, step=0)
    client.log_metric(run_id, "val/accuracy", 0.25, step=0)
    run = RunInfo(run_id=run_id, name="old", algorithm="hicra", planner="strategic_grams", seed="0", status="FINISHED")
    assert set(fetch_metrics(client, [run]).key) == {"hierarchy/semantic_entropy", "val/accuracy"}
