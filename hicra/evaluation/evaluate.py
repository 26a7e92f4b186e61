"""The evaluation loop: check everything, then for each checkpoint load, sample, score, log, and print a table."""

from __future__ import annotations

import gc
import json
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from hicra.config.instantiate import build, build_stored
from hicra.errors import ConfigError
from hicra.evaluation import sources as src
from hicra.evaluation.benchmarks import questions, skipped_count
from hicra.evaluation.claims import claim, claim_file
from hicra.evaluation.generation import sample_answers
from hicra.evaluation.metrics import summarize
from hicra.evaluation.report import format_table, write_results
from hicra.evaluation.tracking import earlier_eval, finished_eval_runs, log_eval_run, open_store, signature
from hicra.tasks import Example, Task
from hicra.tracking.store import absolute_artifact_location, ensure_experiment, flatten, git_state


@dataclass
class Job:
    """One (checkpoint, benchmark) pair, checked and ready to run."""

    source: src.Source
    benchmark: str
    task: Task
    examples: list[Example]
    num_samples: int  # the protocol's k for this benchmark
    max_new_tokens: int  # the generation budget: eval's own, else the training run's
    earlier: object | None = None  # an eval run that already has this result (a resumed study)
    claim: Path | None = None  # a resumed study's claim on this job (hicra.evaluation.claims)


def check_settings(cfg: DictConfig) -> None:
    if cfg.limit is not None and (isinstance(cfg.limit, bool) or not isinstance(cfg.limit, int) or cfg.limit < 1):
        raise ConfigError(f"limit={cfg.limit} is not allowed; use null (every problem) or an integer >= 1")
    for key in ("batch_size", "max_new_tokens", "max_prompt_tokens", "base_max_new_tokens"):
        if key == "max_new_tokens" and cfg[key] is None:
            continue  # null = the evaluated run's own budget
        if isinstance(cfg[key], bool) or not isinstance(cfg[key], int) or cfg[key] < 1:
            raise ConfigError(f"{key}={cfg[key]} is not allowed; use an integer >= 1"
                              + (" or null (the training run's budget)" if key == "max_new_tokens" else ""))


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device={name} is not allowed; use auto, cpu, cuda or cuda:<index>") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name} is not available on this machine; use device=auto or device=cpu")
    return device


def source_task(source: src.Source, cfg: DictConfig) -> Task:
    """The task a checkpoint trained on: its run's resolved `task` (someone else's config: only hicra's own task
    classes are built from it), else eval.yaml's `task` group."""
    if source.resolved is not None and "task" in source.resolved:
        return build_stored(source.resolved.task, src.STORED_TASK_TARGETS, source.origin, "task")
    return build(cfg.task)


def generation_budget(source: src.Source, cfg: DictConfig) -> int:
    """max_new_tokens, else the training run's rollout.max_new_tokens (what it learned to answer within), else
    base_max_new_tokens for a model without a run."""
    if cfg.max_new_tokens is not None:
        return int(cfg.max_new_tokens)
    rollout = source.resolved.get("rollout") if source.resolved is not None else None
    if rollout is not None and rollout.get("max_new_tokens") is not None:
        return int(rollout.max_new_tokens)
    return int(cfg.base_max_new_tokens)


def system_prompt(source: src.Source, cfg: DictConfig) -> str | None:
    if cfg.system_prompt is not None or source.resolved is None:
        return cfg.system_prompt
    return source.resolved.get("system_prompt")


def demonstrations(source: src.Source, cfg: DictConfig) -> list[dict] | None:
    """The worked examples before each question: eval's own setting, else the training run's (as it was trained)."""
    shots = cfg.get("demonstrations")
    if shots is None and source.resolved is not None:
        shots = source.resolved.get("demonstrations")
    return None if shots is None else OmegaConf.to_container(shots, resolve=True)


def load_model(source: src.Source, cfg: DictConfig, device: torch.device):
    from hicra.models.loaders import load_pretrained

    if source.model_path is None:
        bundle = build(cfg.model)
    else:
        bundle = load_pretrained(str(source.model_path), dtype=cfg.model.get("dtype", "float32"))
    bundle.model.to(device)
    return bundle


def eval_tags(source: src.Source, job: Job, protocol_name: str, cfg: DictConfig, out_dir: Path) -> dict[str, str]:
    tags = {"hicra.run_kind": "eval", "hicra.benchmark": job.benchmark, "hicra.protocol": protocol_name,
            "hicra.checkpoint": source.checkpoint, "hicra.limit": str(cfg.limit),
            "hicra.eval_dir": str(out_dir.resolve()),
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:5000], **git_state()}
    if source.run is not None:
        tags |= {"hicra.source_run_id": source.run_id, "hicra.source_run_name": source.label}
        tags |= {f"source.{k}": v for k, v in source.run.data.tags.items() if k.startswith("choice.") or k == "seed"}
    return tags


def plan(cfg: DictConfig, benchmark, protocol, client, choices: dict[str, str],
         params: dict[str, str]) -> tuple[list[Job], list[str]]:
    """Every check that can run before a model loads: sources, questions, earlier results."""
    checkpoint = None if cfg.checkpoint is None else str(cfg.checkpoint)
    sources, notes = src.resolve(checkpoint, cfg.model, choices.get("model", "model"), client)
    resumable = checkpoint is not None and checkpoint.startswith(src.EXPERIMENT_PREFIX)
    earlier_runs = finished_eval_runs(client, sorted({s.experiment_id for s in sources})) if resumable else []
    jobs = []
    for source in sources:
        task = benchmark.task if benchmark.task is not None else source_task(source, cfg)
        if protocol.strict and hasattr(task, "last_number_fallback"):
            task.last_number_fallback = False  # strict \boxed{} scoring, as the protocol says
        name = benchmark.name or task.name
        job = Job(source, name, task, questions(task, cfg.limit), protocol.samples_for(name),
                  generation_budget(source, cfg))
        if resumable:
            job.earlier = earlier_eval(earlier_runs, source.run_id, params)
            job.claim = claim_file(source.model_path.parent, client.tracking_uri, source.run_id, signature(params))
        jobs.append(job)
    return jobs, notes


def evaluate(cfg: DictConfig, choices: dict[str, str], out_dir: Path) -> list[dict]:
    """Evaluate every checkpoint `cfg.checkpoint` names; returns the table rows (also printed and written)."""
    check_settings(cfg)
    protocol = build(cfg.protocol)
    benchmark = build(cfg.benchmark)
    device = pick_device(str(cfg.device))
    logging_on = bool(cfg.logger.get("_target_"))
    client = None
    if logging_on:
        client, _ = open_store(cfg.logger, must_exist=src.needs_store(None if cfg.checkpoint is None
                                                                          else str(cfg.checkpoint)),
                               why=f"checkpoint={cfg.checkpoint}")
    resolved = OmegaConf.to_container(cfg, resolve=True)
    params = flatten(resolved)
    jobs, notes = plan(cfg, benchmark, protocol, client, choices, params)
    out_dir.mkdir(parents=True, exist_ok=True)
    config_file = out_dir / "resolved.yaml"
    config_file.write_text(OmegaConf.to_yaml(resolved))
    for note in notes:
        print(f"hicra-eval: {note}", flush=True)

    rows = run_jobs(jobs, protocol, cfg, device, client, params, config_file, out_dir)
    table = format_table(rows, protocol.ks, protocol.greedy)
    md, js = write_results(rows, table, out_dir)
    skipped = skipped_count(jobs[0].task) if jobs else 0
    print("\n" + table, flush=True)
    if skipped:
        print(f"({skipped} problems of {jobs[0].benchmark} have no checkable answer and were left out)")
    print(f"results: {md} and {js.name}" + (f"; MLflow store {client.tracking_uri}" if client else ""), flush=True)
    return rows


def run_jobs(jobs: list[Job], protocol, cfg: DictConfig, device, client, params: dict[str, str], config_file: Path,
             out_dir: Path) -> list[dict]:
    """The table rows: each job run, or its earlier result; a job another hicra-eval has claimed is left out."""
    rows = []
    for index, job in enumerate(jobs):
        with claim(job.claim) as held:  # held for the whole job: another hicra-eval skips it meanwhile
            if held is False:
                print(f"hicra-eval: {job.source.label}: being evaluated by another hicra-eval (claim {job.claim}), "
                      "skipped", flush=True)
                continue
            if held is None and job.claim is not None:
                print(f"hicra-eval: {job.source.label}: cannot write a claim in {job.claim.parent}: another "
                      "hicra-eval may evaluate it too", flush=True)
            if held and job.earlier is None:  # another process may have finished it since plan() looked
                job.earlier = earlier_eval(finished_eval_runs(client, [job.source.experiment_id]), job.source.run_id,
                                           params)
            if job.earlier is not None:
                print(f"hicra-eval: {job.source.label}: already evaluated (eval run {job.earlier.info.run_id}), "
                      "skipped", flush=True)
                rows.append(_row(job, protocol.name, {k: float(v) for k, v in job.earlier.data.metrics.items()},
                                 job.earlier.info.run_id, earlier=True))
                continue
            rows.append(run_job(job, index, protocol, cfg, device, client, params, config_file, out_dir))
    return rows


def run_job(job: Job, index: int, protocol, cfg: DictConfig, device, client, params: dict[str, str],
            config_file: Path, out_dir: Path) -> dict:
    from transformers import set_seed

    source = job.source
    bundle = load_model(source, cfg, device)
    set_seed(cfg.seed)  # every checkpoint sees the same random stream
    start = time.perf_counter()
    sampler = protocol.sampler(job.max_new_tokens, cfg.max_prompt_tokens)
    records = sample_answers(bundle.model, bundle.tokenizer, job.task, job.examples, sampler,
                             num_samples=job.num_samples, greedy=protocol.greedy, batch_size=cfg.batch_size,
                             system_prompt=system_prompt(source, cfg), desc=f"{source.label} {job.benchmark}",
                             demonstrations=demonstrations(source, cfg))
    metrics = summarize(records, len(job.examples), job.num_samples, protocol.ks, protocol.greedy,
                        skipped_count(job.task))
    metrics["eval/max_new_tokens"] = float(job.max_new_tokens)
    metrics["perf/eval_seconds"] = time.perf_counter() - start
    del bundle  # a study loads one checkpoint after another: free this one first
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()

    folder = out_dir / sample_folder_name(index, source.label)
    folder.mkdir(parents=True, exist_ok=True)
    samples = folder / "samples.jsonl"
    samples.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    run_id = None
    if client is not None:
        experiment = source.experiment_id or ensure_experiment(
            client.tracking_uri, cfg.logger.experiment_name,
            absolute_artifact_location(cfg.logger.get("artifact_location")))
        run_id = log_eval_run(client, experiment, f"eval__{source.label}__{job.benchmark}__{protocol.name}",
                              eval_tags(source, job, protocol.name, cfg, out_dir), params, metrics,
                              {"eval": samples, "config": config_file})
    return _row(job, protocol.name, metrics, run_id, earlier=False)


def sample_folder_name(index: int, label: str) -> str:
    """One folder per checkpoint: a run name such as "s0 hicra experiment=hicra_vs_grpo/hicra" must not nest folders."""
    return f"{index:02d}__" + re.sub(r"[^\w.=+,-]+", "_", label)


def _row(job: Job, protocol: str, metrics: dict[str, float], run_id: str | None, earlier: bool) -> dict:
    return {"name": job.source.label, "benchmark": job.benchmark, "protocol": protocol,
            "checkpoint": job.source.checkpoint, "source_run_id": job.source.run_id, "eval_run_id": run_id,
            "earlier": earlier, "metrics": metrics}
