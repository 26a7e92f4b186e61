"""The task's prompts as MLflow dataset inputs: the runs table's Dataset column, and a digest that tells two runs
trained on the same questions from two that were not (a changed data file, train_size or seed changes it).

Logged once, when a run starts (a resume continues on the same prompts, which its checkpoint already checks).
The source is the task's config, not a file: a reasoning-gym task has no file, and the config is what makes the
prompts again.
"""

from __future__ import annotations

import hashlib
import json

from omegaconf import DictConfig, OmegaConf

SOURCE_TYPE = "hicra_task"  # not one of MLflow's own source types: the UI shows the source as it is


def digest(examples) -> str:
    """The first 16 hex digits of the sha256 over the questions and reference answers, in order."""
    sha = hashlib.sha256()
    for example in examples:
        sha.update(json.dumps([example.question, example.answer]).encode())
    return sha.hexdigest()[:16]


def task_datasets(task, name: str, task_cfg: DictConfig) -> list:
    """The train and validation prompts as MLflow DatasetInputs, tagged with their context (training, validation)."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    source = json.dumps(OmegaConf.to_container(task_cfg, resolve=True), sort_keys=True, default=str)
    inputs = []
    for context, examples in (("training", task.train_examples()), ("validation", task.val_examples())):
        examples = list(examples)
        dataset = Dataset(name=name, digest=digest(examples), source_type=SOURCE_TYPE, source=source,
                          profile=json.dumps({"num_rows": len(examples)}))
        inputs.append(DatasetInput(dataset, tags=[InputTag("mlflow.data.context", context)]))
    return inputs


def log_task_datasets(logger, task, name: str, task_cfg: DictConfig) -> None:
    """Both datasets on the logger's MLflow run."""
    logger.experiment.log_inputs(logger.run_id, datasets=task_datasets(task, name, task_cfg))
