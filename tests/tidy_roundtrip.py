"""The round trip that proves tidy tables lose nothing: flat rows and JSON records rebuilt."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import pyarrow as pa

from datafiniti_loader.read.schema import to_text
from datafiniti_loader.read.tidy import TIDY_PROVENANCE

_KEYS = {"_record_id", "_index", *TIDY_PROVENANCE}


def _clean(value: Any) -> Any:
    """A value without null members and empty lists (absent and empty read alike)."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items() if v is not None and v != []}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def assert_flat_rows_rebuilt(flat: pa.Table, tables: dict[str, pa.Table]) -> int:
    """Every cell of ``flat`` (load_results, arrow) rebuilt from the tidy tables; rows checked."""
    records = {(r["_request_id"], r["id"]): r for r in tables["records"].to_pylist()}
    conflicts = {
        (c["_source_file"], c["_source_row"], c["column"]): c["value"]
        for c in tables["conflicts"].to_pylist()
    }
    children: dict[str, dict[tuple[str, int], dict[str, Any]]] = {}
    lists: dict[str, dict[tuple[int, str], list[dict[str, Any]]]] = {}
    for name, table in tables.items():
        if name in ("records", "conflicts"):
            continue
        rows = table.to_pylist()
        by_row = {(r["_source_file"], r["_source_row"]): r for r in rows}
        children[name] = by_row
        grouped: dict[tuple[int, str], list[dict[str, Any]]] = defaultdict(list)
        for r in sorted(rows, key=lambda r: r["_index"]):
            grouped[(r["_request_id"], r["_record_id"])].append(
                {k: v for k, v in r.items() if k not in _KEYS}
            )
        lists[name] = grouped
    checked = 0
    for n, row in enumerate(flat.to_pylist()):
        where = (row["_source_file"], row["_source_row"])
        record = records[(row["_request_id"], row["id"])]
        for column, value in row.items():
            if column.startswith("_"):
                continue
            prefix, dot, rest = column.partition(".")
            if dot and prefix in children:
                child = children[prefix].get(where)
                assert (None if child is None else child[rest]) == value, (where, column)
            elif column in record:
                if (*where, column) in conflicts:  # this row's value, kept as text
                    cell = flat.column(column).slice(n, 1).combine_chunks()
                    shown = to_text(cell).to_pylist()
                    assert shown == [conflicts[(*where, column)]], (where, column)
                else:
                    assert record[column] == value, (where, column, record[column], value)
            else:  # a record field that became a child table (lists of objects)
                elements = lists[column].get((row["_request_id"], row["id"]), [])
                if (*where, column) in conflicts:
                    continue
                original = json.loads(value) if isinstance(value, str) else value
                assert _clean(original or []) == _clean(elements), (where, column)
        checked += 1
    return checked


def assert_json_records_rebuilt(
    tables: dict[str, pa.Table], source_records: list[dict[str, Any]], request_id: int
) -> None:
    """Each JSON record rebuilt from the tables equals its line in the file."""
    rebuilt: dict[str, dict[str, Any]] = {}
    for r in tables["records"].to_pylist():
        if r["_request_id"] == request_id:
            rebuilt[r["id"]] = {k: v for k, v in r.items() if k not in _KEYS}
    for name, table in tables.items():
        if name in ("records", "conflicts"):
            continue
        for r in sorted(table.to_pylist(), key=lambda r: r["_index"]):
            if r["_request_id"] == request_id:
                element = {k: v for k, v in r.items() if k not in _KEYS}
                rebuilt[r["_record_id"]].setdefault(name, []).append(element)
    for record in source_records:
        got = rebuilt[record["id"]]
        for key, value in record.items():
            mine = got.get(key)
            if mine is None and value == []:
                continue  # an empty list gives no child rows
            if isinstance(mine, str) and not isinstance(value, str):
                mine = json.loads(mine)  # a field of several types: its JSON text
            if isinstance(mine, float) and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            assert _clean(mine) == _clean(value), (record["id"], key)
