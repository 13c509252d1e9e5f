"""Tidy tables: a download's flat rows as one table of records and one per nested list.

Datafiniti flattens a record two ways. A CSV view gives one row per review,
price or menu item, the record's own fields repeated on each of its rows
(which need not be next to each other, nor in one file) and the child's
fields as dotted columns (``reviews.rating``); some views put a JSON array of
objects in one cell (``prices``). JSON keeps each record on one line, its
lists of objects as nested lists. Both become the same tables here:

- ``records``: one row per record ``id`` (per request, or per id overall
  after ``dedupe``), its own fields taken from its first row;
- one table per list of objects (``reviews``, ``prices``...): ``_record_id``,
  ``_index`` (the element's position in its record: the list index in JSON,
  the order of the record's rows in CSV), then the element's fields without
  the prefix (an element's own ``id`` stays ``id``);
- ``conflicts``: every value of a record's field that differs from its first
  row's (Datafiniti repeats them, but files do not promise it), so that
  nothing is dropped silently.

Everything works on the typed Arrow table :func:`~datafiniti_loader.loader.read_table`
gives, column at a time: the lossless typing of each flat column carries
over to the child table it lands in.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import ColumnNotFound
from .jsonfile import records_to_table
from .schema import PROVENANCE_SCHEMA, to_text

__all__ = ["CONFLICTS", "RECORDS", "tidy"]

logger = logging.getLogger(__name__)

RECORDS = "records"
CONFLICTS = "conflicts"
#: The provenance every tidy table carries (a record's: its first row's).
TIDY_PROVENANCE = ("_request_id", "_source_file", "_source_row")
_CONFLICT_SCHEMA = pa.schema(
    [
        ("_record_id", pa.string()),
        ("column", pa.string()),
        ("value", pa.string()),
        ("_source_file", pa.string()),
        ("_source_row", pa.int64()),
    ]
)


@dataclass(frozen=True)
class _Records:
    """Which record each row belongs to, and each record's first row."""

    codes: np.ndarray  # per row: its record's number, in order of first appearance
    first_rows: np.ndarray  # per record: the row it was first seen on


def tidy(table: pa.Table, *, per_request: bool = True) -> dict[str, pa.Table]:
    """Split a load's flat table (with provenance) into records, child tables and conflicts.

    ``per_request``: a record is an ``(request, id)`` pair; ``False`` (after
    ``dedupe``, where only one copy of each id is left) a record is an ``id``.

    Raises
    ------
    ColumnNotFound
        The table has no ``id`` column (an older export): it can only be read flat.
    """
    if "id" not in table.column_names:
        raise ColumnNotFound(
            "These result files have no 'id' column, which tidy tables need to tell "
            "records apart. Read them flat with load_results."
        )
    records = _records_of(table, per_request)
    fields = [c for c in table.column_names if c not in PROVENANCE_SCHEMA.names]
    groups = _dotted_groups(fields)
    own = [c for c in fields if c.partition(".")[1] == "" or c.partition(".")[0] not in groups]
    nested = {c: _elements(table, c, records) for c in own if c not in groups}
    nested = {c: e for c, e in nested.items() if e is not None}
    kept = [c for c in own if c not in nested]
    out = {RECORDS: _with_provenance(table, records.first_rows, table.select(kept))}
    for name, columns in groups.items():
        out[name] = _dotted_child(table, records, name, columns)
    for name, elements in nested.items():
        out[name] = elements
    out[CONFLICTS] = _conflicts(table, records, [c for c in own if c != "id"])
    return out


def _records_of(table: pa.Table, per_request: bool) -> _Records:
    ids = table.column("id").cast(pa.string())
    key = ids
    if per_request:
        requests = table.column("_request_id").cast(pa.string())
        key = pc.binary_join_element_wise(requests, ids, "\x1f")
    if isinstance(key, pa.ChunkedArray):
        key = key.combine_chunks()
    indices = pc.fill_null(pc.dictionary_encode(key).indices, -1)  # no id: numbered below
    codes = indices.to_numpy(zero_copy_only=False).astype(np.int64)
    missing = np.flatnonzero(pc.is_null(ids).to_numpy(zero_copy_only=False))
    if missing.size:  # no id: each such row is a record of its own
        logger.warning(
            "%d row(s) have no id: each is a record of its own, with no _record_id", missing.size
        )
        codes = codes.copy()
        codes[missing] = codes.max(initial=-1) + 1 + np.arange(missing.size)
        _, codes = np.unique(codes, return_inverse=True)  # dense again, first-seen order kept
    _, first_rows = np.unique(codes, return_index=True)
    order = np.argsort(first_rows, kind="stable")  # records in order of first appearance
    renumber = np.empty_like(order)
    renumber[order] = np.arange(order.size)
    return _Records(renumber[codes], first_rows[order])


def _dotted_groups(fields: list[str]) -> dict[str, list[str]]:
    """Columns sharing a prefix before their first dot (``reviews.rating``): one child each."""
    groups: dict[str, list[str]] = {}
    for name in fields:
        prefix, dot, rest = name.partition(".")
        if dot and prefix and rest:
            groups.setdefault(prefix, []).append(name)
    return groups


def _rows(table: pa.Table, rows: np.ndarray) -> pa.Table:
    """The ``rows`` (ascending, repeats allowed) of ``table``, taken batch by batch.

    Arrow's ``take`` over a table of many chunks joins each column's chunks
    first (measured on the real files: 0.46 s of a 0.9 s split went there);
    taking from each batch the rows it holds copies only those rows. A run of
    consecutive rows is a view. Repeats (a record's row once per element of
    its list) are no run, even where their count matches one.
    """
    if rows.size == table.num_rows and _is_run(rows):  # every row: nothing to copy
        return table
    batches = table.to_batches()
    starts = np.cumsum([0] + [b.num_rows for b in batches])
    bounds = np.searchsorted(rows, starts)
    parts = []
    for n, batch in enumerate(batches):
        local = rows[bounds[n] : bounds[n + 1]] - starts[n]
        if not local.size:
            continue
        if _is_run(local):  # a view, no copy
            parts.append(batch.slice(int(local[0]), int(local.size)))
        else:
            parts.append(batch.take(pa.array(local)))
    return pa.Table.from_batches(parts, schema=table.schema)


def _is_run(rows: np.ndarray) -> bool:
    """Whether ``rows`` (ascending) are consecutive, each once."""
    if rows.size < 2:
        return True
    if rows[-1] - rows[0] + 1 != rows.size:  # cheap, and decides most cases
        return False
    return bool(np.all(rows[1:] != rows[:-1]))  # the span fits: only a repeat can spoil it


def _with_provenance(table: pa.Table, rows: np.ndarray, data: pa.Table) -> pa.Table:
    """``data`` (already of ``rows``) followed by those rows' provenance."""
    taken = data if data.num_rows == rows.size else _rows(data, rows)
    provenance = _rows(table.select(list(TIDY_PROVENANCE)), rows)
    return pa.Table.from_arrays(
        [*taken.columns, *provenance.columns], names=[*taken.column_names, *TIDY_PROVENANCE]
    )


def _child(table: pa.Table, rows: np.ndarray, index: np.ndarray, data: pa.Table) -> pa.Table:
    """A child table: ``_record_id``, ``_index``, ``data``, then the rows' provenance."""
    record_id = _rows(table.select(["id"]), rows).column(0).cast(pa.string())
    head = pa.table({"_record_id": record_id, "_index": pa.array(index, pa.int64())})
    whole = pa.Table.from_arrays(
        [*head.columns, *data.columns], names=[*head.column_names, *data.column_names]
    )
    return _with_provenance(table, rows, whole)


def _dotted_child(table: pa.Table, records: _Records, name: str, columns: list[str]) -> pa.Table:
    """One child row per row with any cell of the group filled; fields without the prefix."""
    filled = np.zeros(table.num_rows, dtype=bool)
    for column in columns:
        filled |= pc.is_valid(table.column(column)).to_numpy(zero_copy_only=False)
    rows = np.flatnonzero(filled)
    data = _rows(table.select(columns), rows)
    data = data.rename_columns([c[len(name) + 1 :] for c in columns])
    return _child(table, rows, _positions(records.codes[rows]), data)


def _positions(codes: np.ndarray) -> np.ndarray:
    """Each item's 0-based position among the items of its record, in their order."""
    order = np.argsort(codes, kind="stable")
    ordered = codes[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    run_start = np.repeat(starts, np.diff(np.r_[starts, ordered.size]))
    positions = np.empty_like(order)
    positions[order] = np.arange(order.size) - run_start
    return positions


def _elements(table: pa.Table, name: str, records: _Records) -> pa.Table | None:
    """The child table of a record field holding lists of objects, or ``None`` if it does not.

    JSON gives such a field as a list of structs; a CSV cell, or a JSON field of
    several types, as the list's JSON text. Either way each record's list is
    taken from its first row.
    """
    column = table.column(name)
    if _is_list_of_structs(column.type):
        first = _rows(table.select([name]), records.first_rows).column(0).combine_chunks()
        return _exploded(table, first, records)
    text = pa.types.is_string(column.type) or pa.types.is_large_string(column.type)
    # Only text that all starts like an array is worth parsing (one vectorised look).
    if text and pc.all(pc.starts_with(column, "[")).as_py():
        firsts = _rows(table.select([name]), records.first_rows).column(0).combine_chunks()
        parsed = _object_lists(firsts)
        if parsed is not None:
            return _from_text(table, parsed, records, name)
    return None


def _is_list_of_structs(type_: pa.DataType) -> bool:
    listed = pa.types.is_list(type_) or pa.types.is_large_list(type_)
    return bool(listed and pa.types.is_struct(type_.value_type))


def _exploded(table: pa.Table, lists: pa.Array, records: _Records) -> pa.Table:
    values = pc.list_flatten(lists)
    parents = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False)
    lengths = pc.fill_null(pc.list_value_length(lists), 0).to_numpy(zero_copy_only=False)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    index = np.arange(parents.size) - starts[parents]
    fields = pa.Table.from_struct_array(values)
    return _child_of_records(table, records, parents, index, fields)


def _object_lists(texts: pa.Array) -> list[Any] | None:
    """Each record's text as a list of objects (``None`` for a null), if every one is one."""
    parsed: list[Any] = []
    seen_object = False
    for text in texts.to_pylist():
        if text is None:
            parsed.append(None)
            continue
        if not text.startswith("["):
            return None
        try:
            value = json.loads(text)
        except (ValueError, RecursionError):
            return None
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            return None
        seen_object = seen_object or bool(value)
        parsed.append(value)
    return parsed if seen_object else None


def _from_text(table: pa.Table, parsed: list[Any], records: _Records, name: str) -> pa.Table:
    parents, index, elements = [], [], []
    for record, items in enumerate(parsed):
        for position, element in enumerate(items or ()):
            parents.append(record)
            index.append(position)
            elements.append(element)
    fields = records_to_table(elements, name)
    return _child_of_records(table, records, np.array(parents, np.int64), np.array(index), fields)


def _child_of_records(
    table: pa.Table, records: _Records, parents: np.ndarray, index: np.ndarray, fields: pa.Table
) -> pa.Table:
    """A child table of elements of record fields: ``parents`` are record numbers."""
    rows = records.first_rows[parents] if parents.size else np.array([], np.int64)
    return _child(table, rows, index, fields)


def _conflicts(table: pa.Table, records: _Records, columns: list[str]) -> pa.Table:
    """Every value of a record's own field that differs from the one its first row gave."""
    first_of_row = records.first_rows[records.codes]
    if not (first_of_row != np.arange(table.num_rows)).any():  # one row per record
        return _CONFLICT_SCHEMA.empty_table()
    firsts = _rows(table.select(columns), records.first_rows)
    found_rows: list[np.ndarray] = []
    names: list[pa.Array] = []
    values: list[pa.Array] = []
    for n, name in enumerate(columns):
        rows = _differing_rows(table.column(name), firsts.column(n), records)
        if rows.size:
            found_rows.append(rows)
            names.append(pa.repeat(pa.scalar(name, pa.string()), rows.size))
            taken = _rows(table.select([name]), rows).column(0)
            values.extend(to_text(chunk) for chunk in taken.chunks)  # long text: no more copies
    if not found_rows:
        return _CONFLICT_SCHEMA.empty_table()
    rows = np.concatenate(found_rows)
    order = np.argsort(rows, kind="stable")  # _rows takes ascending rows
    where = _rows(table.select(["id", "_source_file", "_source_row"]), rows[order])
    back = pa.array(np.argsort(order, kind="stable"))  # to the order of the columns
    found = pa.table(
        {
            "_record_id": where.column(0).cast(pa.string()).take(back),
            "column": pa.concat_arrays(names),
            "value": pa.chunked_array(values, pa.string()),
            "_source_file": where.column(1).cast(pa.string()).take(back),
            "_source_row": where.column(2).take(back),
        }
    )
    logger.warning(
        "%d value(s) of record fields differ between a record's rows; each record keeps its "
        "first row's, and tables['conflicts'] lists the others",
        found.num_rows,
    )
    return found


def _differing_rows(
    values: pa.ChunkedArray, firsts: pa.ChunkedArray, records: _Records
) -> np.ndarray:
    """The rows whose value differs from their record's first row's (ascending).

    Comparing every row with its record's first row would copy the column in
    record order. Instead each row is compared with the row before it (two
    views of the column, no copy): a row of the same record holding the same
    value as the row before differs from the first row exactly when that row
    does. Only the rows starting such a chain (a record's rows resuming after
    another's, or a changed value) are compared with their first row.
    """
    codes = records.codes
    size = codes.size
    chained = np.zeros(size, dtype=bool)
    if size > 1:
        chained[1:] = (codes[1:] == codes[:-1]) & _same(values.slice(1), values.slice(0, size - 1))
    heads = np.flatnonzero(~chained)
    head_values = _rows(pa.table({"v": values}), heads).column(0)
    their_firsts = firsts.take(pa.array(codes[heads]))
    differs = ~_same(head_values, their_firsts)
    head_of_row = np.maximum.accumulate(np.where(chained, 0, np.arange(size)))
    differs_at = np.zeros(size, dtype=bool)
    differs_at[heads] = differs
    return np.flatnonzero(differs_at[head_of_row])


def _same(left: pa.ChunkedArray, right: pa.ChunkedArray) -> np.ndarray:
    """Per position, whether two equally long columns hold the same value (nulls alike)."""
    if pa.types.is_dictionary(left.type):
        left, right = left.cast(left.type.value_type), right.cast(right.type.value_type)
    if pa.types.is_nested(left.type):  # no kernel compares lists: compare their JSON text
        left, right = (
            pa.chunked_array([to_text(c) for c in side.chunks], pa.string())
            for side in (left, right)
        )
    same = pc.or_(
        pc.fill_null(pc.equal(left, right), False),
        pc.and_(pc.is_null(left), pc.is_null(right)),
    )
    if pa.types.is_floating(left.type):  # NaN is one value here, as it was in the file
        same = pc.or_(same, pc.fill_null(pc.and_(pc.is_nan(left), pc.is_nan(right)), False))
    return np.asarray(same.to_numpy(zero_copy_only=False), dtype=bool)
