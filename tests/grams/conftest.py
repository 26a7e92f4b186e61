"""Fixtures for the Strategic-Gram mining tests: a small fixed corpus and a tiny MLflow store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

SOLUTIONS = [
    "First, let's compute the sum. We can see that 3 + 4 = 7. So the answer is 7.",
    "Let's check the parity first. We can see that n is even. So the answer is 12.",
    "We know that the product is 24. Let's try small values. So the answer is 4.",
    "Let me think about this. We can see that the sequence repeats. Therefore the answer is 5.",
    "Let's break it down. Notice that x = 2 works. So the answer is 2.",
    "First, we need to find the total. We can see that it equals 30.\nSo the answer is 30.",
    "Let's verify the claim. We know that the sum of angles is 180. Therefore the answer is 60.",
    "Wait, let me double check. We can see that 9 is odd. So the answer is 9.",
    "Let's consider the cases. Notice that the first case fails. So the answer is 3.",
    "We need to find the remainder. We know that 17 mod 5 is 2. Therefore the answer is 2.",
    "Let me think about this carefully. Let's try small values. So the answer is 1.",
    "Let's compute the sum of digits. We can see that it is 18. So the answer is 18.",
    "First, let's simplify. Notice that the terms cancel. Therefore the answer is 0.",
    "Let's check the parity first. We know that odd plus odd is even. So the answer is 8.",
    "Let me double check the result. We can see that 5 squared is 25. So the answer is 25.",
    "We need to find the area. Let's break it down into triangles. Therefore the answer is 14.",
    "Let's try small values of n. We can see that the pattern holds. So the answer is 6.",
    "Let's verify the claim directly. We know that 2 is prime. So the answer is 2.",
    "Let me think about this. Notice that the graph is connected. So the answer is 11.",
    "First, we need to find the slope. We can see that it is 3. Therefore the answer is 3.",
    "Let's consider the cases separately. We know that the first case gives 4. So the answer is 4.",
    "Wait, let me double check the sum. We can see that 10 + 5 = 15. So the answer is 15.",
    "Let's compute the sum again. Notice that each pair adds to 10. Therefore the answer is 50.",
    "We need to find the count. Let's try small values. We can see that it doubles. So the answer is 16.",
    "Let's break it down step by step. We know that 3 times 7 is 21. So the answer is 21.",
    "Let me think about this differently. We can see that the ratio is 2. So the answer is 2.",
    "Let's check the parity first. Notice that n squared is odd. Therefore the answer is 1.",
    "First, let's compute the mean. We know that the sum is 40. So the answer is 8.",
    "Let's verify the claim for n = 1. We can see that it holds. So the answer is 1.",
    "We need to find the perimeter. Let's consider the cases. Therefore the answer is 20.",
]


@pytest.fixture(scope="session")
def solutions() -> list[str]:
    return list(SOLUTIONS)


@pytest.fixture(scope="session")
def solutions_jsonl(tmp_path_factory, solutions) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "solutions.jsonl"
    path.write_text("".join(json.dumps({"step": i, "text": t}) + "\n" for i, t in enumerate(solutions)), "utf-8")
    return path


@pytest.fixture(scope="session")
def mlflow_store(tmp_path_factory, solutions_jsonl):
    """(tracking uri, run id with the corpus artifact, run id without it). Creating the sqlite store takes ~10 s."""
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("grams", artifact_location=(root / "artifacts").as_uri())
    with_corpus = client.create_run(experiment).info.run_id
    upload = root / "upload" / "correct_completions.jsonl"
    upload.parent.mkdir()
    upload.write_bytes(solutions_jsonl.read_bytes())
    client.log_artifact(with_corpus, str(upload), "corpus")
    without = client.create_run(experiment).info.run_id
    return uri, with_corpus, without
