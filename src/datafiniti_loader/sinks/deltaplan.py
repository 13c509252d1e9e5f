"""What a Delta write takes: which records win, which rows go, in which schema.

The newest-copy rule of ``dedupe``, across the table and the downloads: a
record's copy wins on its newest ``dateUpdated``, ties going to the higher
request id, decided from ``(id, dateUpdated, request)`` per record, never
from the rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from ..errors import ColumnNotFound
from ..loader import LoadSource, typed_batches
from ..read.dedupe import (
    ID_COLUMN,
    UPDATED_COLUMN,
    NewestCopies,
    newest_per_id,
    record_dates,
    record_ids,
)
from ..read.schema import PROVENANCE_SCHEMA, conform, release_arrow_memory

if TYPE_CHECKING:
    from deltalake import DeltaTable

__all__ = [
    "Plan",
    "against_table",
    "delta_types",
    "held_keys",
    "plan_against",
    "plan_from",
    "plan_write",
    "rows_to_write",
    "winning_rows",
]


def delta_types(schema: pa.Schema) -> pa.Schema:
    """Types as Delta stores them: timestamps in microseconds (their values unchanged)."""
    fields = []
    for f in schema:
        if pa.types.is_timestamp(f.type):
            f = pa.field(f.name, pa.timestamp("us", f.type.tz))
        fields.append(f)
    return pa.schema(fields, metadata=schema.metadata)


_EMPTY_KEYS = pa.table(
    {
        "id": pa.array([], pa.string()),
        "when_t": pa.array([], pa.timestamp("us", "UTC")),
        "request_t": pa.array([], pa.int64()),
    }
)


@dataclass
class Plan:
    """Which records the downloads bring a newer copy of."""

    replace_ids: pa.Array  # every record whose copy wins: its rows are inserted
    existing_ids: pa.Array  # of those, the ones the table has: their rows are deleted
    added: int
    replaced: int
    unchanged: int

    def any_rows(self, newest: NewestCopies | None, merged_before: set[int]) -> bool:
        """Whether anything is to be written: a newer copy, or rows without an id.

        Id-less rows are inserted once, from requests not ``merged_before``.
        """
        counts = newest.idless_rows if newest is not None else {}
        idless = any(n for rid, n in counts.items() if rid not in merged_before)
        return self.added + self.replaced > 0 or idless


def plan_write(source: LoadSource, table: DeltaTable | None) -> Plan:
    """Which records to write: all of them into no table, the newer copies into a table.

    Without ``dedupe`` (append, overwrite) every row is written: nothing is planned.
    """
    return plan_from(source.newest, source.request_ids, table)


def plan_from(
    newest: NewestCopies | None, request_ids: list[int], table: DeltaTable | None
) -> Plan:
    """:func:`plan_write` from the downloads' decided copies (engines without a ``LoadSource``)."""
    return plan_against(newest, request_ids, _table_keys(table) if table is not None else None)


def plan_against(
    newest: NewestCopies | None, request_ids: list[int], theirs: pa.Table | None
) -> Plan:
    """Which of the downloads' copies win over ``theirs`` (from :func:`held_keys`; None: empty).

    For any store that can say, per record it holds, its newest date and request.
    """
    if newest is None:
        return Plan(pa.array([], pa.string()), pa.array([], pa.string()), 0, 0, 0)
    winners = newest.winners
    requests = pa.array(request_ids, pa.int64())
    mine = pa.table(
        {
            "id": winners["id"],
            "when": winners["when"],
            "request": pc.take(requests, winners["download"]),
        }
    )
    joined = mine.join(
        _EMPTY_KEYS if theirs is None else theirs, "id", join_type="left outer", right_suffix="_t"
    )
    known = pc.is_valid(joined["when_t"])
    newer = pc.or_(
        pc.greater(joined["when"], joined["when_t"]),
        pc.and_(
            pc.equal(joined["when"], joined["when_t"]),
            pc.greater(joined["request"], joined["request_t"]),
        ),
    )
    wins = pc.or_(pc.invert(known), pc.fill_null(newer, False))
    replace = joined.filter(wins)
    existing = replace.filter(pc.is_valid(replace["when_t"]))
    return Plan(
        replace["id"].combine_chunks(),
        existing["id"].combine_chunks(),
        added=replace.num_rows - existing.num_rows,
        replaced=existing.num_rows,
        unchanged=joined.num_rows - replace.num_rows,
    )


def _table_keys(table: DeltaTable) -> pa.Table:
    """Per record of the table: its newest ``dateUpdated`` and the request that brought it."""
    names = table.schema().to_arrow()
    present = set(pa.schema(names).names)
    missing = [c for c in (ID_COLUMN, UPDATED_COLUMN) if c not in present]
    if missing:
        raise ColumnNotFound(
            f"The Delta table has no {missing[0]!r} column, which merging needs to tell "
            "records apart and order their copies. Merge into a table written by to_delta, "
            "or use mode='append'."
        )
    columns = [ID_COLUMN, UPDATED_COLUMN] + (["_request_id"] if "_request_id" in present else [])
    return held_keys(table.to_pyarrow_dataset().to_batches(columns=columns), "the Delta table")


def held_keys(batches: Iterable[pa.RecordBatch], what: str) -> pa.Table:
    """Per record a store holds: its newest date and request (the table :func:`plan_against` takes).

    ``batches`` have ``id`` and ``dateUpdated`` columns, and ``_request_id`` where
    the store has one; ``what`` names the store in a :class:`ParseError`.
    """
    parts = [_EMPTY_KEYS.rename_columns(["id", "when", "request"])]
    for batch in batches:
        ids = record_ids(batch.column(ID_COLUMN))
        requests = (  # rows another tool wrote carry no request: they lose every tie
            pc.fill_null(pc.cast(batch.column("_request_id"), pa.int64()), 0)
            if "_request_id" in batch.schema.names
            else pa.array([0] * batch.num_rows, pa.int64())
        )
        when = record_dates(batch.column(UPDATED_COLUMN), what)
        part = pa.table({"id": ids, "when": when, "request": requests}).filter(pc.is_valid(ids))
        # A flat view repeats a record on many rows: one line per id and date early.
        part = part.group_by(["id", "when"]).aggregate([("request", "max")])
        parts.append(
            part.select(["id", "when", "request_max"]).rename_columns(["id", "when", "request"])
        )
    top = newest_per_id(pa.concat_tables(parts), tiebreak="request")
    return top.rename_columns(["id", "when_t", "request_t"])


def winning_rows(
    replace_ids: pa.Array, merged_before: set[int]
) -> Callable[[pa.RecordBatch], pa.RecordBatch]:
    """A filter of typed rows: the winning copies, and id-less rows of requests new to the store.

    Id-less rows cannot be matched later, so they go in once, from requests
    not in ``merged_before``; a store that takes no id-less rows at all (the
    dlt source's) passes every request.
    """
    old_requests = pa.array(sorted(merged_before), pa.int64())

    def keep(batch: pa.RecordBatch) -> pa.RecordBatch:
        ids = record_ids(batch.column(ID_COLUMN))
        chosen = pc.fill_null(pc.is_in(ids, value_set=replace_ids), False)
        fresh = pc.invert(pc.is_in(batch.column("_request_id"), value_set=old_requests))
        return batch.filter(pc.or_(chosen, pc.and_(pc.is_null(ids), fresh)))

    return keep


def rows_to_write(
    source: LoadSource, schema: pa.Schema, *, keep: pa.Array | None, merged_before: set[int]
) -> Iterator[pa.RecordBatch]:
    """The downloads' rows for the table: winning copies, and only records in ``keep``.

    Rows without an ``id`` cannot be matched later; they are written once, from
    requests the table has not merged before.
    """
    data = pa.schema([f for f in schema if f.name not in PROVENANCE_SCHEMA.names])
    for file, path in source.download.local_files():
        read = source.batches_of(file, path)
        for batch in typed_batches(file, read.batches, data, True, source.newest):
            batch = conform(batch, schema)
            if keep is not None:
                ids = record_ids(batch.column(ID_COLUMN))
                chosen = pc.is_in(ids, value_set=keep)
                if file.request_id not in merged_before:
                    chosen = pc.or_(chosen, pc.is_null(ids))
                batch = batch.filter(chosen)
            if batch.num_rows:
                yield batch
            release_arrow_memory()


def against_table(schema: pa.Schema, table: DeltaTable) -> tuple[pa.Schema, list[str]]:
    """The table's schema grown to hold the rows: its types where they agree, text where not.

    Returns the schema to write (the table's columns in their order, then new
    ones) and the columns that change it: new ones, and the table's columns
    that must become text (a download has values of another type there).
    """
    theirs = pa.schema(table.schema().to_arrow())
    mine = {f.name: f for f in schema}
    fields, changed = [], []
    for field in theirs:
        ours = mine.get(field.name)
        if ours is None or _same(ours.type, field.type) or _is_text(field.type):
            fields.append(field)  # ours cast to theirs (text keeps ours as written)
        else:
            fields.append(pa.field(field.name, pa.string()))
            changed.append(field.name)
    for field in schema:
        if theirs.get_field_index(field.name) < 0:
            fields.append(field)
            changed.append(field.name)
    return pa.schema(fields), changed


def _is_text(type_: pa.DataType) -> bool:
    return bool(
        pa.types.is_string(type_) or pa.types.is_large_string(type_)
        or pa.types.is_string_view(type_)
    )  # fmt: skip


def _same(a: pa.DataType, b: pa.DataType) -> bool:
    """Types Delta stores alike (timestamps of any unit are microseconds there)."""
    if a.equals(b):
        return True
    if pa.types.is_timestamp(a) and pa.types.is_timestamp(b):
        return bool(a.tz) == bool(b.tz)
    return _is_text(a) and _is_text(b)
