"""Corpora of successful solutions: a JSONL file, a hicra training run's MLflow artifact, or CHAMP's human solutions.

Every loader returns a list of non-blank solution texts and raises `ConfigError` (one line) for bad input.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hicra.errors import ConfigError
from hicra.tasks.champ import champ_file as _champ_file
from hicra.tracking.store import absolute_tracking_uri

RUN_CORPUS_ARTIFACT = "corpus/correct_completions.jsonl"  # written by hicra.training.callbacks.CorrectCompletionsRecorder
DEFAULT_TRACKING_URI = "sqlite:///outputs/mlflow.db"


def _take(texts: list[str], limit: int | None) -> list[str]:
    texts = [t for t in texts if t.strip()]
    return texts if limit is None else texts[:limit]


def read_jsonl(path: str | Path, text_key: str = "text", limit: int | None = None, name: str | None = None) -> list[str]:
    """One JSON object per line with a string field `text_key`; blank lines are skipped."""
    file = Path(path).expanduser()
    name = name or str(path)
    if not file.is_file():
        raise ConfigError(f"corpus file not found: {path}")
    texts: list[str] = []
    with file.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{name}:{number}: malformed JSON line ({exc.msg})") from None
            if not isinstance(row, dict) or not isinstance(row.get(text_key), str):
                raise ConfigError(f"{name}:{number}: expected a JSON object with a string field '{text_key}'")
            if row[text_key].strip():
                texts.append(row[text_key])
                if limit is not None and len(texts) >= limit:
                    break
    return texts


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0][:200] if lines else type(err).__name__


def _sqlite_path(uri: str) -> Path | None:
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


def read_mlflow_run(run_id: str, tracking_uri: str = DEFAULT_TRACKING_URI, limit: int | None = None) -> list[str]:
    """The `corpus/correct_completions.jsonl` artifact of a hicra training run (lines {"step", "text"})."""
    uri = absolute_tracking_uri(tracking_uri)
    db = _sqlite_path(uri)
    if db is not None and not db.is_file():
        raise ConfigError(f"MLflow tracking store not found: {db} (set --tracking-uri)")
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        MlflowClient(tracking_uri=uri).get_run(run_id)
    except MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise ConfigError(f"MLflow run '{run_id}' not found in {uri}") from None
        raise ConfigError(f"cannot open MLflow store {uri}: {_first_line(err)}") from None
    except Exception as err:  # noqa: BLE001 - e.g. sqlite's "file is not a database": the store, not the run
        raise ConfigError(f"cannot open MLflow store {uri}: {_first_line(err)}") from None
    with tempfile.TemporaryDirectory(prefix="hicra-grams-") as tmp:
        try:
            local = download_artifacts(run_id=run_id, artifact_path=RUN_CORPUS_ARTIFACT, dst_path=tmp,
                                       tracking_uri=uri)
        except (MlflowException, OSError):
            raise ConfigError(f"MLflow run '{run_id}' has no artifact {RUN_CORPUS_ARTIFACT} "
                              "(was it trained with the correct-completions recorder?)") from None
        return read_jsonl(local, "text", limit, name=f"run {run_id} {RUN_CORPUS_ARTIFACT}")


def champ_file() -> Path:
    return _champ_file("--champ")


def read_champ(limit: int | None = None) -> list[str]:
    """CHAMP's 270 human step-by-step solutions, one text per problem: its steps joined by newlines."""
    data = json.loads(champ_file().read_text(encoding="utf-8"))
    texts = []
    for problem in data.get("problems", {}).values():
        steps = (problem.get("solution") or {}).get("steps") or []
        texts.append("\n".join(s.get("_text", "") for s in steps if s.get("_text")))
    return _take(texts, limit)
