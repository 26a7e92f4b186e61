"""MLflow for evaluation: open the training store, find earlier eval runs, log one eval run.

An eval run lives in the experiment of the training run it evaluates and is found by its tags (what
`hicra-compare` reads): `hicra.run_kind=eval`, `hicra.source_run_id`, `hicra.benchmark`, `hicra.protocol`.
"""

from __future__ import annotations

import time
from pathlib import Path

from hicra.errors import ConfigError
from hicra.tracking.store import absolute_tracking_uri, check_tracking_uri, quiet_mlflow

# The eval params that decide whether an earlier eval run already answers this one (a resumed study skips it).
_SIGNATURE_PREFIXES = ("benchmark.", "protocol.")
_SIGNATURE_KEYS = ("limit", "max_new_tokens", "max_prompt_tokens", "system_prompt", "demonstrations", "seed")


def open_store(logger_cfg, *, must_exist: bool, why: str = ""):
    """(MlflowClient, absolute URI) of the logger's store; `must_exist`: a missing sqlite file is an error."""
    import mlflow

    quiet_mlflow()
    uri = absolute_tracking_uri(logger_cfg.tracking_uri)
    if must_exist and uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
        raise ConfigError(f"no MLflow store at {uri[len('sqlite:///'):]}: {why} needs the store its training run "
                          "logged to (set logger.tracking_uri=...)")
    check_tracking_uri(uri)
    return mlflow.MlflowClient(tracking_uri=uri), uri


def signature(params: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in params.items() if k.startswith(_SIGNATURE_PREFIXES) or k in _SIGNATURE_KEYS}


def finished_eval_runs(client, experiment_ids: list[str]) -> list:
    """Every FINISHED eval run of these experiments (one query, filtered later per training run)."""
    if not experiment_ids:
        return []
    return client.search_runs(experiment_ids, filter_string="tags.`hicra.run_kind` = 'eval' and "
                              "attributes.status = 'FINISHED'", max_results=5000)


def earlier_eval(eval_runs: list, source_run_id: str, params: dict[str, str]):
    """The newest eval run of `source_run_id` with the same benchmark, protocol and settings, or None."""
    wanted = signature(params)
    matches = [r for r in eval_runs if r.data.tags.get("hicra.source_run_id") == source_run_id
               and signature(r.data.params) == wanted]
    return max(matches, key=lambda r: r.info.start_time, default=None)


def log_eval_run(client, experiment: str, run_name: str, tags: dict[str, str], params: dict[str, str],
                 metrics: dict[str, float], artifacts: dict[str, Path]) -> str:
    """Create, fill and close one eval run (created at the end, so an interrupted eval leaves no half run)."""
    from mlflow.entities import Metric, Param

    run = client.create_run(experiment, run_name=run_name, tags=tags)
    run_id = run.info.run_id
    try:
        items = [Param(k, v) for k, v in params.items()]
        for start in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            client.log_batch(run_id, params=items[start:start + 100])
        now = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])
        for folder, path in artifacts.items():
            client.log_artifact(run_id, str(path), folder)
    except Exception as err:
        client.set_terminated(run_id, "FAILED")
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise ConfigError(f"logging eval run {run_id} to MLflow failed: {reason}") from err
    client.set_terminated(run_id, "FINISHED")
    return run_id
