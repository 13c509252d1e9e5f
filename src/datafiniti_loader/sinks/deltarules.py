"""A Delta table's own rules, read before anything is written to it.

A Delta table made by another tool may carry rules its writers must keep: a
``CHECK`` constraint, a generated column, append-only, column mapping,
deletion vectors, a change data feed. This library writes data files and
commits them itself (see :mod:`.deltafiles`), so a rule it does not keep
would be committed around: a ``-1`` past ``value > 0``, a generated column
left null, rows a deletion vector had removed brought back. Each rule is
therefore either kept here or the table is refused up front, with a typed
error naming the rule, before any download or any file is written.

Kept: partitions (each data file is written into its partition's directory
and committed with its values; partition columns of text, integer, boolean
or date type), ``delta.appendOnly`` when the write only adds files.
Refused: everything else that changes what a writer must do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa

from ..errors import UnsupportedTable
from ..read.dedupe import ID_COLUMN

if TYPE_CHECKING:
    from deltalake import DeltaTable

__all__ = ["check_adds_only", "check_writable", "is_append_only"]

#: Writer features this library keeps (by honouring them, or by checking
#: below that the table does not use them).
_CHECKED_FEATURES = {
    "appendOnly",
    "invariants",
    "checkConstraints",
    "generatedColumns",
    "columnMapping",
    "identityColumns",
    "changeDataFeed",
}
#: Writer features that ask nothing of a writer adding and removing data files.
_HARMLESS_FEATURES = {"timestampNtz", "vacuumProtocolCheck", "variantType", "domainMetadata"}


def check_writable(table: DeltaTable, shown: str) -> None:
    """Refuse a table whose rules this library cannot keep, naming the first rule found.

    Raises
    ------
    UnsupportedTable
        The table uses a writer feature this library does not honour.
    """
    problem = _first_problem(table)
    if problem:
        raise UnsupportedTable(
            f"The Delta table at {shown} {problem}, a rule this library's writes cannot keep; "
            "nothing was downloaded or written. Write into a table this library creates "
            "(a new path), or use the tool that made the table to merge the data."
        )


def is_append_only(table: DeltaTable) -> bool:
    """Whether the table takes only new files (``delta.appendOnly``)."""
    return _flag(table, "delta.appendOnly")


def check_adds_only(table: DeltaTable, shown: str, why: str) -> None:
    """Refuse, on an append-only table, a write that would remove files (``why`` says what)."""
    if is_append_only(table):
        raise UnsupportedTable(
            f"The Delta table at {shown} is append-only (delta.appendOnly) and this write "
            f"would {why}; nothing was written. Use mode='append' with downloads of the "
            "table's columns and types, or write into another table."
        )


def _first_problem(table: DeltaTable) -> str:
    """What rule of the table this library would break, or ``""``."""
    protocol = table.protocol()
    features = set(protocol.writer_features or ())
    unknown = sorted(features - _CHECKED_FEATURES - _HARMLESS_FEATURES)
    if unknown:
        return f"uses the writer feature(s) {unknown}"
    configuration = table.metadata().configuration
    constraints = sorted(
        k.split(".", 2)[2] for k in configuration if k.startswith("delta.constraints.")
    )
    if constraints:
        return f"has CHECK constraint(s) {constraints}"
    mapping = configuration.get("delta.columnMapping.mode", "none").lower()
    if mapping != "none":
        return f"uses column mapping (delta.columnMapping.mode = {mapping})"
    if _flag(table, "delta.enableChangeDataFeed"):
        return "records a change data feed (delta.enableChangeDataFeed)"
    arrow = pa.schema(table.schema().to_arrow())
    for name in table.metadata().partition_columns:
        type_ = arrow.field(name).type
        if name == ID_COLUMN:
            return "is partitioned by 'id', the column merges match records on"
        if not _partition_type_kept(type_):
            return f"is partitioned by {name!r} of type {type_}"
    for field in table.schema().fields:
        metadata = field.metadata or {}
        expression = metadata.get("delta.generationExpression")
        if expression:
            return f"has a generated column ({field.name!r} = {expression})"
        if any(key.startswith("delta.identity.") for key in metadata):
            return f"has an identity column ({field.name!r})"
        if "delta.invariants" in metadata:
            return f"has an invariant on column {field.name!r}"
    return ""


def _partition_type_kept(type_: pa.DataType) -> bool:
    """Partition values of these types are written as Delta spells them (``1``, ``true``, dates)."""
    return bool(
        pa.types.is_string(type_) or pa.types.is_large_string(type_)
        or pa.types.is_integer(type_) or pa.types.is_boolean(type_) or pa.types.is_date32(type_)
    )  # fmt: skip


def _flag(table: DeltaTable, key: str) -> bool:
    return str(table.metadata().configuration.get(key, "false")).lower() == "true"
