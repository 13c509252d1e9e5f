"""Each table's dlt hints, and the rows that take a replaced record's old rows away.

dlt's ``merge`` disposition (``delete-insert``) deletes the destination's
rows whose key is in the load, then inserts the load's rows. That is the
library's rule for ``records`` (key ``id``). A child table (``reviews``...)
has the key ``(_record_id, _index)`` and the *merge key* ``_record_id``, so a
record in the load takes all of its old rows away, not only those at the
same positions: a newer copy with fewer reviews leaves none of the old ones.

dlt's hints cannot express the last case: a newer copy with **no** reviews
brings no row whose merge key could delete the old ones. For every record
the load replaces, each child table therefore also gets a *tombstone*: a row
with the record's id and ``_deleted = true``, a column with dlt's
``hard_delete`` hint. Its merge key deletes the record's old rows; being
marked deleted, it is not inserted itself. ``_deleted`` stays null on every
row the destination keeps.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from ..read.dedupe import ID_COLUMN
from ..read.tidy import CONFLICTS, RECORDS

__all__ = [
    "DELETED",
    "RECORD_ID",
    "child_hints",
    "is_child_table",
    "keyed",
    "records_hints",
    "tombstones",
]

RECORD_ID = "_record_id"
INDEX = "_index"
#: The column with dlt's ``hard_delete`` hint: true only on tombstones, never stored.
DELETED = "_deleted"
_MERGE: Any = {"disposition": "merge", "strategy": "delete-insert"}
_KEYS = {RECORDS: {ID_COLUMN}, CONFLICTS: {RECORD_ID}}  # the rest: (_record_id, _index)


def records_hints() -> dict[str, Any]:
    """The ``records`` resource's arguments: one row per record, keyed by ``id``."""
    return {
        "name": RECORDS,
        "table_name": RECORDS,
        "primary_key": ID_COLUMN,
        "write_disposition": _MERGE,
    }


def child_hints(name: str) -> Any:
    """A child table's hints (``conflicts`` has no position, so no primary key)."""
    import dlt

    return dlt.mark.make_hints(
        table_name=name,
        primary_key=[] if name == CONFLICTS else [RECORD_ID, INDEX],
        merge_key=RECORD_ID,
        write_disposition=_MERGE,
        columns={DELETED: {"data_type": "bool", "nullable": True, "hard_delete": True}},
    )


def is_child_table(columns: dict[str, Any]) -> bool:
    """Whether a table of the destination's schema is a child table this source made."""
    deleted = columns.get(DELETED, {})
    return RECORD_ID in columns and bool(deleted.get("hard_delete"))


def tombstones(name: str, record_ids: pa.Array) -> pa.Table:
    """Rows that delete every row of ``record_ids`` from child table ``name``."""
    count = len(record_ids)
    columns: dict[str, pa.Array] = {RECORD_ID: record_ids.cast(pa.string())}
    if name != CONFLICTS:
        columns[INDEX] = pa.array([-1] * count, pa.int64())
    columns[DELETED] = pa.array([True] * count, pa.bool_())
    return keyed(pa.table(columns), name)


def keyed(table: pa.Table, name: str) -> pa.Table:
    """``table`` as dlt takes it: key columns not null, as its key hints say they are.

    Otherwise dlt warns, for every batch, that the Arrow schema and its hints
    differ. Dictionary columns (``_source_file``) are decoded: dlt cannot
    concatenate them with the plain text of another batch. Times in seconds
    or milliseconds become microseconds: DuckDB, for one, keeps a zoned time
    in microseconds only, and dlt warns about every other precision.
    """
    keys = _KEYS.get(name, {RECORD_ID, INDEX})
    fields = []
    for field in table.schema:
        if pa.types.is_dictionary(field.type):  # dlt concatenates batches of one type only
            field = field.with_type(field.type.value_type)
        if pa.types.is_timestamp(field.type) and field.type.unit in ("s", "ms"):
            # Microseconds, as warehouses keep zoned times (the same instants, lossless).
            field = field.with_type(pa.timestamp("us", field.type.tz))
        fields.append(field.with_nullable(False) if field.name in keys else field)
    return table.cast(pa.schema(fields, metadata=table.schema.metadata))
