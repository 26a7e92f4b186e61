"""Read question/answer records from a local JSONL, JSON or Parquet file, with one-line errors.

Each record comes with where it was found (``line 7`` in a JSONL file, ``row 7`` in Parquet, both 1-based), so
a bad record can be named precisely in the error message. A UTF-8 byte-order mark at the start of a file is skipped.
"""

from __future__ import annotations

import json
import math
import numbers
from decimal import Decimal
from pathlib import Path

from hicra.errors import ConfigError

SUFFIXES = (".jsonl", ".json", ".parquet")


def check_data_file(path: str) -> Path:
    """Fail fast on a missing file or an unsupported format, before anything is read."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"data file '{path}' does not exist")
    if file.suffix.lower() not in SUFFIXES:
        raise ConfigError(f"data file '{path}' has unsupported suffix '{file.suffix}'; allowed: {', '.join(SUFFIXES)}")
    return file


def read_records(path: str) -> list[tuple[str, dict]]:
    """All records of a data file as ``(location, record)`` pairs; an empty file is an error."""
    file = check_data_file(path)
    try:
        if file.suffix.lower() == ".parquet":
            records = _read_parquet(file, path)
        elif file.suffix.lower() == ".json" and _starts_with_bracket(file):
            records = _read_json_array(file, path)
        else:  # .jsonl, and .json files holding one object per line
            records = _read_jsonl(file, path)
    except UnicodeDecodeError as err:  # a binary file (or another encoding) under a .jsonl/.json name
        raise ConfigError(f"data file '{path}' is not UTF-8 text ({err.reason}: {err.object[err.start:err.end]!r}); "
                          f"allowed: UTF-8 JSONL or JSON, or Parquet") from None
    if not records:
        raise ConfigError(f"data file '{path}' is empty: expected one JSON object per line or a non-empty table")
    return records


def _read_jsonl(file: Path, path: str) -> list[tuple[str, dict]]:
    records = []
    with file.open(encoding="utf-8-sig") as handle:  # -sig: a BOM (Windows editors write one) is not JSON
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue  # blank lines (e.g. a trailing newline) carry no record
            try:
                record = json.loads(line, parse_int=_json_int)
            except json.JSONDecodeError as err:
                raise ConfigError(f"data file '{path}' line {number}: not valid JSON ({err.msg})") from err
            if not isinstance(record, dict):
                raise ConfigError(
                    f"data file '{path}' line {number}: expected a JSON object, got {type(record).__name__}"
                )
            records.append((f"line {number}", record))
    return records


def _json_int(literal: str) -> int | str:
    """A JSON integer; one longer than Python converts to int (4300 digits: `int` raises ValueError) stays its
    digits, the text `text_value` would write for it anyway (and a reference compares as a decimal, with no limit)."""
    try:
        return int(literal)
    except ValueError:
        return literal


def _starts_with_bracket(file: Path) -> bool:
    with file.open(encoding="utf-8-sig") as handle:
        for line in handle:
            if line.strip():
                return line.lstrip().startswith("[")
    return False


def _read_json_array(file: Path, path: str) -> list[tuple[str, dict]]:
    try:
        items = json.loads(file.read_text(encoding="utf-8-sig"), parse_int=_json_int)
    except json.JSONDecodeError as err:
        raise ConfigError(f"data file '{path}' line {err.lineno}: not valid JSON ({err.msg})") from err
    records = []
    for number, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            raise ConfigError(f"data file '{path}' item {number}: expected a JSON object, got {type(item).__name__}")
        records.append((f"item {number}", item))
    return records


def _read_parquet(file: Path, path: str) -> list[tuple[str, dict]]:
    import pandas as pd  # imported here: only Parquet users pay for pandas/pyarrow

    try:
        frame = pd.read_parquet(file)
    except Exception as err:  # pyarrow raises several types for corrupt or non-Parquet files
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ConfigError(f"data file '{path}' is not a readable Parquet file ({message})") from err
    return [(f"row {number}", record) for number, record in enumerate(frame.to_dict("records"), start=1)]


def text_value(value, path: str, where: str, key: str) -> str:
    """A question or answer field of a record as text, or a one-line ConfigError (missing values are the caller's).

    Rules: a string is taken as it is; a number is written in plain decimal notation (``7``, ``7.0`` -> ``7``, as
    Parquet stores an integer column with gaps; ``2.5``; ``1e20`` -> ``100000000000000000000``), which is how a
    reference compares with a boxed answer. Booleans, lists, objects and infinities are refused: their Python
    spellings (``True``, ``[1, 2]``, ``{'a': 1}``, ``inf``) are not answers a verifier can match, and guessing a
    spelling ("yes", "1, 2") would decide the reward behind the user's back.
    """
    if isinstance(value, str):
        return _unicode_text(value, path, where, key)
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        if isinstance(value, numbers.Integral):
            return str(int(value))
        if math.isfinite(value):
            return str(int(value)) if float(value).is_integer() else format(Decimal(repr(float(value))), "f")
        if math.isnan(value):  # not "missing": the key is there, and holds a value that is no answer
            raise ConfigError(f"data file '{path}' {where}: key '{key}' holds NaN, which is not an answer (an empty "
                              "cell of a Parquet number column reads as NaN too); allowed: a string or a finite number")
    kind = "a non-finite number" if isinstance(value, numbers.Real) and not isinstance(value, bool) \
        else f"a {type(value).__name__}"
    shown = json.dumps(value, default=str)  # as the file spells it; one line whatever the value holds
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    raise ConfigError(f"data file '{path}' {where}: key '{key}' holds {kind} ({shown}); allowed: a string or a "
                      f"finite number (write any other answer as the text the model should box)")


def _unicode_text(text: str, path: str, where: str, key: str) -> str:
    """`text` when it is valid Unicode. A lone surrogate (JSON's "\\ud800" escape without its pair) is refused, not
    replaced: it is no character, so neither UTF-8 nor the tokenizer can carry it, and replacing it would change a
    question or an answer behind the user's back."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ConfigError(f"data file '{path}' {where}: key '{key}' holds a lone surrogate ({text[err.start]!r} at "
                          f"character {err.start}), which is not text; allowed: valid Unicode (a \\ud800-\\udfff "
                          "escape only as half of a pair)") from None
    return text
