"""Comparisons that prove a load lost nothing, shared by fixture and real-file tests."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd


def cell_text(value: Any, dtype: Any) -> str:
    """How a loaded cell reads back as the text it came from ('' for null)."""
    if (
        value is None
        or value is pd.NA
        or (isinstance(value, float) and math.isnan(value))
        or value is pd.NaT
    ):
        return ""
    if isinstance(value, pd.Timestamp):
        unit = getattr(dtype, "unit", "s")
        millis = f".{value.microsecond // 1000:03d}" if unit == "ms" else ""
        return value.strftime("%Y-%m-%dT%H:%M:%S") + millis + "Z"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def as_text(frame: pd.DataFrame) -> pd.DataFrame:
    columns = {}
    for name in frame.columns:
        column = frame[name]
        if pd.api.types.is_string_dtype(column.dtype) and column.dtype != object:
            columns[name] = column.fillna("").astype(object)  # text columns: nulls were empty cells
        else:
            columns[name] = pd.Series(
                [cell_text(v, column.dtype) for v in column.tolist()], dtype=object
            )
    return pd.DataFrame(columns)


def assert_lossless_csv(loaded: pd.DataFrame, path: Path, source_file: str) -> int:
    """Every row and cell of ``path`` is in ``loaded`` (rows of ``source_file``), exactly."""
    expected = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    rows = loaded[loaded["_source_file"] == source_file]
    assert len(rows) == len(expected), f"{source_file}: {len(rows)} rows, expected {len(expected)}"
    assert rows["_source_row"].tolist() == list(range(len(expected)))
    got = as_text(rows[list(expected.columns)].reset_index(drop=True))
    for column in expected.columns:
        same = got[column].to_numpy() == expected[column].astype(object).to_numpy()
        if not same.all():
            bad = int((~same).argmax())
            raise AssertionError(
                f"{source_file}: column {column!r} row {bad}: "
                f"{got[column][bad]!r} != {expected[column][bad]!r}"
            )
    return len(expected)


def drop_nulls(value: Any) -> Any:
    """Nested value without null members (Arrow structs add the keys a record lacked)."""
    if isinstance(value, dict):
        return {k: drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [drop_nulls(v) for v in value]
    return value


def json_records(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8").strip()
    if text.startswith("["):
        return list(json.loads(text))
    try:
        document = json.loads(text)
    except json.JSONDecodeError:
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    return (
        list(document["records"])
        if isinstance(document, dict) and "records" in document
        else [document]
    )


def assert_same_json(loaded: pd.DataFrame, path: Path, source_file: str) -> int:
    """Every record's every field is in ``loaded``, its value exact (or its JSON text where types varied)."""
    records = json_records(path)
    rows = loaded[loaded["_source_file"] == source_file].reset_index(drop=True)
    assert len(rows) == len(records)
    for n, record in enumerate(records):
        for key, value in record.items():
            got = rows.at[n, key]
            if value is None:
                assert cell_text(got, None) == "", f"{source_file} record {n} field {key}"
                continue
            if isinstance(got, str) and not isinstance(value, str):
                got = json.loads(got)
            if isinstance(got, float) and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)  # int and float values of one field widen to float
            assert drop_nulls(got) == drop_nulls(value), f"{source_file} record {n} field {key}"
    return len(records)
