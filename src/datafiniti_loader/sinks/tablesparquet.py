"""Sink: tidy tables as Parquet datasets (``path/records/``, ``path/reviews/``...).

Splitting flat rows into tables needs all of a record's rows together, and
they may be anywhere in the download. So the typed rows are first spilled to
local scratch files by a hash of their record key (every row of a record
lands in the same bucket, in load order), then each bucket, a fraction of the
download, is split by the same :func:`~datafiniti_loader.read.tidy.tidy` as
:func:`~datafiniti_loader.load_tables`, and its tables spilled again. Last,
each table's parts are conformed to one schema (a type that differs between
buckets widens, as across files) and written as one Parquet dataset, a row
group at a time. Memory holds one bucket at a time; the scratch files are
removed at the end; the datasets appear at ``path`` all together or not at
all (the publishing of :mod:`.publish`). Records are grouped by bucket, so
their order is not the download's.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
from fsspec.implementations.local import LocalFileSystem

from ..errors import ConfigurationError
from ..fetch.orphans import mark_owned
from ..loader import LoadSource, data_schema, log_summary, typed_batches, with_provenance
from ..read.schema import SchemaBuilder, conform, release_arrow_memory
from ..read.tidy import TIDY_PROVENANCE, tidy
from .parquet import ParquetSummary, staged_dataset, write_row_groups
from .publish import write_manifest

__all__ = ["check_options", "conformed", "tidy_parts", "unified_schema", "write_tables"]

#: Bytes of input text per bucket: one bucket (and its tables) is in memory at once.
BUCKET_BYTES = 32 * 1024 * 1024
_SPILL_BYTES = 1024 * 1024  # Arrow bytes a bucket gathers before they go to its scratch file


def write_tables(
    source: LoadSource,
    path: str,
    *,
    columns: Sequence[str] | None,
    provenance: bool,
    about: dict[str, Any],
    overwrite: bool,
    storage_options: dict[str, Any] | None,
) -> ParquetSummary:
    """Write ``source`` as one Parquet dataset per tidy table under ``path`` (any fsspec URL)."""
    fs, target = fsspec.core.url_to_fs(path, **(storage_options or {}))
    target = target.rstrip("/")
    with staged_dataset(fs, target, path, overwrite) as staging:
        scan = source.scan(keep=False)
        if columns is not None:
            columns = list(dict.fromkeys(["id", *columns]))
        schema = data_schema(scan.builder, columns, True, source.dtypes)
        with tidy_parts(source, schema) as parts:
            written = [
                _write_table(fs, staging, name, files, provenance) for name, files in parts.items()
            ]
        relative = tuple(f"{name}/part-0.parquet" for name, _, _ in written)
        rows = {name: count for name, count, _ in written}
        manifest = {**about, "tables": rows, "files": list(relative), "rows": rows["records"]}
        write_manifest(fs, staging, manifest)
    columns_written = next(width for name, _, width in written if name == "records")
    log_summary(source, rows["records"], len(columns_written), target=str(path))
    shown = os.path.abspath(target) if isinstance(fs, LocalFileSystem) else str(path)
    sizes = sum(fs.size(f"{target}/{f}") for f in relative)
    return ParquetSummary(
        rows["records"], len(source.files), sizes, shown, relative, columns_written,
        tables=tuple(rows.items()),
    )  # fmt: skip


@contextlib.contextmanager
def tidy_parts(
    source: LoadSource,
    schema: pa.Schema,
    keep: Callable[[pa.RecordBatch], pa.RecordBatch] | None = None,
) -> Iterator[dict[str, list[Path]]]:
    """The download's tidy tables, each as parts in local scratch files, removed afterwards.

    ``schema``: the flat data schema (a scan decided it); ``keep`` filters the
    typed rows first (a Delta merge keeps only the winning copies).

    Raises
    ------
    ColumnNotFound
        The files have no ``id`` column.
    """
    if "id" not in schema.names:  # tidy() says what to do instead
        tidy(schema.empty_table(), per_request=True)
    scratch = Path(tempfile.mkdtemp(prefix=f"datafiniti-loader-{os.getpid()}-tables-"))
    mark_owned(scratch)
    try:
        buckets = _spill_rows(source, schema, scratch, _bucket_count(source), keep)
        empty = with_provenance(schema).empty_table()
        yield _spill_tables(buckets, scratch, empty, per_request=source.newest is None)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _bucket_count(source: LoadSource) -> int:
    """Buckets enough that each holds about :data:`BUCKET_BYTES` of the input."""
    size = sum(path.stat().st_size for _, path in source.download.local_files())
    return max(1, math.ceil(size / BUCKET_BYTES))


def _spill_rows(
    source: LoadSource,
    schema: pa.Schema,
    scratch: Path,
    count: int,
    keep: Callable[[pa.RecordBatch], pa.RecordBatch] | None,
) -> list[Path]:
    """Every typed row into the bucket of its record's key; the buckets' scratch files."""
    paths = [scratch / f"bucket-{n}.arrow" for n in range(count)]
    full = with_provenance(schema)
    writers = [_Spill(p, full) for p in paths]
    per_request = source.newest is None
    try:
        for file, path in source.download.local_files():
            read = source.batches_of(file, path)
            for batch in typed_batches(file, read.batches, schema, True, source.newest):
                if keep is not None:
                    batch = keep(batch)
                for bucket, rows in _by_bucket(batch, count, per_request):
                    writers[bucket].add(rows)
                release_arrow_memory()
    finally:
        for writer in writers:
            writer.close()
    return [p for p, w in zip(paths, writers, strict=True) if w.rows]


def _by_bucket(
    batch: pa.RecordBatch, count: int, per_request: bool
) -> Iterator[tuple[int, pa.RecordBatch]]:
    """The batch's rows, bucket by bucket (a record's key always gives the same bucket)."""
    if count == 1:
        yield 0, batch
        return
    ids = batch.column("id").cast(pa.string()).to_pylist()
    if per_request:
        requests = batch.column("_request_id").to_pylist()
        keys = [hash((r, i)) for r, i in zip(requests, ids, strict=True)]
    else:
        keys = [hash(i) for i in ids]
    buckets = np.array(keys, dtype=np.int64) % count  # Python's hash: stable within a process
    for bucket in np.unique(buckets):
        yield int(bucket), batch.filter(pa.array(buckets == bucket))


class _Spill:
    """Rows of one bucket, gathered about a megabyte at a time into an Arrow IPC scratch stream."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self._path = path
        self._schema = schema
        self._pending: list[pa.RecordBatch] = []
        self._pending_bytes = 0
        self._writer: ipc.RecordBatchStreamWriter | None = None
        self.rows = 0

    def add(self, batch: pa.RecordBatch) -> None:
        self._pending.append(batch)
        self._pending_bytes += batch.nbytes
        self.rows += batch.num_rows
        if self._pending_bytes >= _SPILL_BYTES:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        if self._writer is None:
            # A stream, not a file: its batches may bring dictionaries of their own
            # (each result file's names in _source_file).
            self._writer = ipc.new_stream(str(self._path), self._schema)
        self._writer.write_table(pa.Table.from_batches(self._pending, self._schema))
        self._pending, self._pending_bytes = [], 0

    def close(self) -> None:
        try:
            self._flush()  # a failure here (a full disk) is the conversion's: no row lost quietly
        finally:
            if self._writer is not None:
                self._writer.close()


def _spill_tables(
    buckets: list[Path], scratch: Path, empty: pa.Table, *, per_request: bool
) -> dict[str, list[Path]]:
    """Each bucket split into tidy tables, each table's part in a scratch file of its own.

    A download with no rows still gives its tables (``empty``'s, with no rows).
    """
    parts: dict[str, list[Path]] = {}
    for n, bucket in enumerate(buckets or [None]):
        if bucket is None:
            flat = empty
        else:
            with pa.memory_map(str(bucket)) as source:
                flat = ipc.open_stream(source).read_all()
        tables = tidy(flat, per_request=per_request)
        del flat
        for k, (name, table) in enumerate(tables.items()):
            part = scratch / f"part-{n}-{k}.arrow"  # field names need not make file names
            with ipc.new_stream(str(part), table.schema) as writer:
                writer.write_table(table)
            parts.setdefault(name, []).append(part)
        del tables
        if bucket is not None:
            os.unlink(bucket)  # its rows are in the parts now
        release_arrow_memory()
    return parts


def _write_table(
    fs: Any, staging: str, name: str, parts: list[Path], provenance: bool
) -> tuple[str, int, tuple[str, ...]]:
    """One table's parts as ``staging/name/part-0.parquet``; its name, rows and columns."""
    schema = unified_schema(parts)
    if not provenance:
        schema = pa.schema([f for f in schema if f.name not in TIDY_PROVENANCE])
    fs.makedirs(f"{staging}/{name}", exist_ok=True)
    with fs.open(f"{staging}/{name}/part-0.parquet", "wb") as handle:
        rows = write_row_groups(conformed(parts, schema), handle, schema)
    return name, rows, tuple(schema.names)


def unified_schema(parts: list[Path]) -> pa.Schema:
    """The schema every part of a table conforms to: types widened where buckets differ."""
    schemas = []
    for part in parts:
        with pa.memory_map(str(part)) as source:
            schemas.append(ipc.open_stream(source).schema)
    if len(schemas) == 1 or all(s.equals(schemas[0]) for s in schemas):
        return schemas[0]
    seen = SchemaBuilder()
    for schema in schemas:
        seen.observe(schema.empty_table(), text=False)
    return seen.schema()


def conformed(parts: list[Path], schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """Every batch of a table's parts, conformed to ``schema``."""
    for part in parts:
        with pa.memory_map(str(part)) as source:
            for batch in ipc.open_stream(source):
                yield conform(batch, schema)


def check_options(partition_by: Any) -> None:
    """Refuse options the tables sink does not take."""
    if partition_by:
        raise ConfigurationError(
            "partition_by= (--partition-by) does not go with tables=True (--tables): each "
            "table is one dataset. Partition the flat dataset, or read the tables and write "
            "them yourself."
        )
