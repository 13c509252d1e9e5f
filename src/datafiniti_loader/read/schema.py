"""Column types decided across every file of a download, and provenance columns.

CSV cells arrive as text. A column becomes typed only where every value in
every file reads back as exactly the text that was written, so identifiers
such as ``02134`` or ``8.49E+11`` and markers such as ``N/A`` stay text.
JSON columns arrive typed; where files disagree they widen (int to float) or,
failing that, become text holding each value's JSON, so no value is lost.

:class:`SchemaBuilder` sees every batch once (it keeps only per-column
verdicts, not data) and then hands out the one schema all batches are
conformed to; that is what lets Parquet conversion stream in bounded memory.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .jsonfile import json_text

__all__ = [
    "PROVENANCE_COLUMNS",
    "SchemaBuilder",
    "add_provenance",
    "cast_column",
    "conform",
    "release_arrow_memory",
    "to_text",
]

PROVENANCE_COLUMNS = (
    "_request_id",
    "_result_id",
    "_source_file",
    "_source_row",
    "_result_created_at",
)
PROVENANCE_SCHEMA = pa.schema(
    [
        ("_request_id", pa.int64()),
        ("_result_id", pa.int64()),
        ("_source_file", pa.dictionary(pa.int32(), pa.string())),
        ("_source_row", pa.int64()),
        ("_result_created_at", pa.timestamp("us", tz="UTC")),
    ]
)

# Text that reads back identically once typed. Integers: no sign on zero, no
# leading zeros, at most 18 digits (fits int64). Floats: plain decimal notation
# with at most 15 significant digits (so the shortest repr of the parsed double
# is this very text), no redundant trailing zeros, not below 1e-4 (where repr
# switches to exponent notation). Timestamps: ISO 8601 UTC with ``Z``.
_INT = r"^(0|-?[1-9][0-9]{0,17})$"
_FLOAT = r"^-?(0|[1-9][0-9]{0,14})\.(0|[0-9]{0,14}[1-9])$"
_FLOAT_TOO_SMALL = r"^-?0\.0000"
_TS_SECONDS = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$"
_TS_MILLIS = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z$"

_SAMPLE_ROWS = 64  # values a column's type is first tried on

_CANDIDATES: dict[str, pa.DataType] = {
    "int": pa.int64(),
    "float": pa.float64(),
    "ts_s": pa.timestamp("s", tz="UTC"),
    "ts_ms": pa.timestamp("ms", tz="UTC"),
}


def _all_match(values: pa.Array, pattern: str) -> bool:
    return bool(pc.all(pc.match_substring_regex(values, pattern)).as_py())


def _reads_back(kind: str, values: pa.Array) -> bool:
    """True when every non-null text of ``values`` survives a round trip as ``kind``."""
    if kind == "int":
        return _all_match(values, _INT)
    if kind == "float":
        if (
            not _all_match(values, _FLOAT)
            or pc.any(pc.match_substring_regex(values, _FLOAT_TOO_SMALL)).as_py()
        ):
            return False
        digits = pc.subtract(pc.utf8_length(values), pc.count_substring(values, "-"))
        return bool(pc.max(digits).as_py() <= 16)  # 15 digits and the point
    pattern = _TS_SECONDS if kind == "ts_s" else _TS_MILLIS
    if not _all_match(values, pattern):
        return False
    try:  # the shape can match while the date cannot exist (2017-02-30)
        pc.cast(values, _CANDIDATES[kind])
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return False
    return True


@dataclass
class _ColumnVerdict:
    """What the batches seen so far say about one column."""

    text_candidates: set[str] | None = None  # None: no text value seen yet
    typed: pa.DataType | None = None  # type of JSON (already typed) values
    text_seen: bool = False
    typed_seen: bool = False
    typed_not_text: bool = False  # a JSON batch typed it as something other than text

    def observe_text(self, values: pa.Array) -> None:
        self.text_seen = True
        if values.null_count == len(values):
            return
        candidates = set(_CANDIDATES) if self.text_candidates is None else self.text_candidates
        if candidates and len(values) > _SAMPLE_ROWS:
            # Most columns are text: a few values rule out every type for them, so
            # only columns that survive the sample are checked value by value.
            sample = values.slice(0, _SAMPLE_ROWS)
            if sample.null_count < len(sample):
                candidates = {kind for kind in candidates if _reads_back(kind, sample)}
        self.text_candidates = {kind for kind in candidates if _reads_back(kind, values)}

    def merge(self, other: _ColumnVerdict) -> None:
        """Add what ``other`` saw (of later batches): the same as observing them here."""
        if other.text_seen:
            self.text_seen = True
            if other.text_candidates is not None:
                mine = self.text_candidates
                theirs = set(other.text_candidates)
                self.text_candidates = theirs if mine is None else mine & theirs
        self.typed_not_text |= other.typed_not_text
        if other.typed_seen:
            self.typed_seen = True
            if other.typed is not None:
                self.typed = other.typed if self.typed is None else _widen(self.typed, other.typed)

    def observe_typed(self, type_: pa.DataType) -> None:
        self.typed_seen = True
        if pa.types.is_null(type_):
            return
        if not (pa.types.is_string(type_) or pa.types.is_large_string(type_)):
            self.typed_not_text = True
        self.typed = type_ if self.typed is None else _widen(self.typed, type_)

    def decide(self) -> pa.DataType:
        text_type = pa.null()
        if self.text_candidates:  # priority order of _CANDIDATES; they exclude each other
            text_type = next(_CANDIDATES[k] for k in _CANDIDATES if k in self.text_candidates)
        elif self.text_candidates is not None:
            text_type = pa.string()
        if not self.typed_seen:
            return pa.string() if pa.types.is_null(text_type) else text_type
        if not self.text_seen or pa.types.is_null(text_type):
            return self.typed if self.typed is not None else pa.string()
        if self.typed is None:
            return text_type
        return _widen(self.typed, text_type)


def _widen(a: pa.DataType, b: pa.DataType) -> pa.DataType:
    """A type both can be cast to, or string when only text holds both."""
    if a.equals(b):
        return a
    try:
        merged = pa.unify_schemas(
            [pa.schema([("c", a)]), pa.schema([("c", b)])], promote_options="permissive"
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return pa.string()
    widened: pa.DataType = merged.field("c").type
    return widened


@dataclass
class SchemaBuilder:
    """Collects per-column verdicts over all batches of all files; then :meth:`schema`.

    Columns keep their first-seen order across files.
    """

    _columns: dict[str, _ColumnVerdict] = field(default_factory=dict)

    def observe(self, batch: pa.RecordBatch | pa.Table, *, text: bool) -> None:
        """Record a batch; ``text=True`` for CSV batches whose strings are to be typed."""
        for name, column in zip(batch.column_names, batch.columns, strict=True):
            verdict = self._columns.setdefault(name, _ColumnVerdict())
            if text:
                values = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
                verdict.observe_text(values)
            else:
                verdict.observe_typed(column.type)

    def merge(self, other: SchemaBuilder) -> None:
        """Add the verdicts of ``other`` (a later file's): as if its batches were observed here."""
        for name, verdict in other._columns.items():
            self._columns.setdefault(name, _ColumnVerdict()).merge(verdict)

    def text_verdicts(self) -> list[list[Any]] | None:
        """The verdicts of a file of text batches, as JSON, to keep beside its parsed copy.

        ``None`` when any column holds typed (JSON) values: those verdicts are
        cheap to redo and not kept.
        """
        if any(v.typed_seen for v in self._columns.values()):
            return None
        return [
            [name, v.text_seen, None if v.text_candidates is None else sorted(v.text_candidates)]
            for name, v in self._columns.items()
        ]

    @classmethod
    def from_text_verdicts(cls, kept: Any) -> SchemaBuilder | None:
        """The builder :meth:`text_verdicts` described, or ``None`` if ``kept`` is not one."""
        builder = cls()
        try:
            for name, seen, candidates in kept:
                if not isinstance(name, str) or not isinstance(seen, bool):
                    return None
                if candidates is not None and not set(candidates) <= set(_CANDIDATES):
                    return None
                builder._columns[name] = _ColumnVerdict(
                    text_candidates=None if candidates is None else set(candidates),
                    text_seen=seen,
                )
        except (TypeError, ValueError):
            return None
        return builder

    def text_conflicts(self) -> frozenset[str]:
        """JSON fields typed as something other than text by some batch, yet text in all.

        Within one file, these are the fields whose values the whole-file reader
        gives as their JSON text as written (see :mod:`.jsonlines`).
        """
        return frozenset(
            name
            for name, verdict in self._columns.items()
            if verdict.typed_not_text and pa.types.is_string(verdict.decide())
        )

    @property
    def column_names(self) -> list[str]:
        """Data columns in first-seen order."""
        return list(self._columns)

    def schema(self, columns: Iterable[str] | None = None) -> pa.Schema:
        """The data schema every batch is conformed to (optionally only ``columns``)."""
        names = self.column_names if columns is None else list(columns)
        return pa.schema([(name, self._columns[name].decide()) for name in names])


def release_arrow_memory() -> None:
    """Hand memory Arrow's allocator keeps for reuse back to the OS.

    mimalloc holds freed pages per thread; streaming many batches through
    several threads otherwise ratchets the process's RSS far above what is
    in use (measured: 372 MB peak for 52 MB of live Arrow data).
    """
    pa.default_memory_pool().release_unused()


def to_text(values: pa.Array) -> pa.Array:
    """Values as text: strings unchanged, anything else as its JSON."""
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        return values.cast(pa.string())
    if pa.types.is_null(values.type):
        return pa.nulls(len(values), pa.string())
    if pa.types.is_timestamp(values.type):
        return values.cast(pa.string())
    return pa.array(
        [None if v is None else json_text(v) for v in values.to_pylist()], type=pa.string()
    )


def conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """Cast ``batch`` to ``schema``: missing columns become null, extra ones are dropped."""
    arrays = []
    for target in schema:
        index = batch.schema.get_field_index(target.name)
        if index < 0:
            arrays.append(pa.nulls(batch.num_rows, target.type))
            continue
        arrays.append(cast_column(batch.column(index), target.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def cast_column(values: pa.Array, target: pa.DataType) -> pa.Array:
    """``values`` as ``target``: text as JSON where needed, zone-less timestamps as UTC."""
    if values.type.equals(target):
        return values
    if pa.types.is_string(target) and not pa.types.is_string(values.type):
        return to_text(values)
    if pa.types.is_timestamp(target) and target.tz and pa.types.is_string(values.type):
        return timestamp_from_text(values, target)
    try:
        return values.cast(target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        if pa.types.is_string(target):
            return to_text(values)
        raise


def timestamp_from_text(values: pa.Array, target: pa.DataType) -> pa.Array:
    """ISO 8601 text as ``target`` timestamps; text without a zone is taken as UTC."""
    try:
        return pc.cast(values, target)
    except pa.ArrowInvalid:
        naive = pc.cast(values, pa.timestamp(target.unit))
        return pc.assume_timezone(naive, target.tz)


@dataclass(frozen=True)
class Provenance:
    """Where a file's rows came from; becomes the ``_``-prefixed columns."""

    request_id: int
    result_id: int
    source_file: str
    created_at: datetime | None


def add_provenance(
    batch: pa.RecordBatch, origin: Provenance, first_row: int, rows: int | None = None
) -> pa.RecordBatch:
    """Append the provenance columns; ``first_row``: the batch's first record index in its file.

    ``rows`` gives the record count when ``batch`` has no columns to carry it
    (``columns=[]``: provenance alone, one row per record).
    """
    n = batch.num_rows if rows is None else rows
    created_type = PROVENANCE_SCHEMA.field("_result_created_at").type
    extra = [
        pa.array(np.full(n, origin.request_id, dtype=np.int64)),
        pa.array(np.full(n, origin.result_id, dtype=np.int64)),
        pa.DictionaryArray.from_arrays(
            pa.array(np.zeros(n, dtype=np.int32)), pa.array([origin.source_file], pa.string())
        ),
        pa.array(np.arange(first_row, first_row + n, dtype=np.int64)),
        pa.repeat(pa.scalar(origin.created_at, type=created_type), n),
    ]
    arrays = [*batch.columns, *extra]
    schema = pa.schema(list(batch.schema) + list(PROVENANCE_SCHEMA))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)
