"""Sink: a download to a Parquet dataset, streaming, in bounded memory, all or nothing.

Every column's type is decided from all the data (guessing from a first
block is how identifiers turn into numbers). A download whose first batch
settles every type need not be read twice, so the conversion first runs in
one pass, checking after every batch that the types it writes still hold
(:mod:`.onepass`).
When a batch changes them, the reading goes on to decide every type, as a
first pass would, and a second pass conforms each batch and writes it;
``dedupe`` and ``partition_by`` always take the two passes, since both need
every file read before any row is written. Row groups are sized
by bytes, not by how the reader happened to cut batches. The dataset is
written beside the target and moved into place only when complete, so a
failure leaves nothing at ``path``.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.dataset as pds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from .._version import __version__
from ..errors import ConfigurationError, DatafinitiError, StorageError
from ..loader import (
    LoadSource,
    RowCounter,
    Scan,
    data_schema,
    log_summary,
    require_columns,
    typed_batches,
    with_provenance,
)
from ..read.schema import PROVENANCE_SCHEMA, release_arrow_memory
from ..remote.models import FileKey, ResultFile
from .onepass import OnePass
from .prefetch import prefetched
from .publish import (
    METADATA_KEY,
    check_target,
    make_staging,
    publish,
    remove_staging,
    staging_path,
    sweep_orphans,
    write_manifest,
)

__all__ = [
    "ParquetSummary",
    "dataset_metadata",
    "staged_dataset",
    "unwritable",
    "write_parquet",
    "write_row_groups",
]

logger = logging.getLogger("datafiniti_loader")

# Row groups are cut by Arrow bytes, not rows: Datafiniti rows range from 100 B
# to 30 KB. 16 MB keeps the writer's buffers (and peak memory) small.
_ROW_GROUP_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class ParquetSummary:
    """What :func:`~datafiniti_loader.to_parquet` wrote; its ``repr`` says it in one line.

    Attributes
    ----------
    rows : int
        Rows written.
    files : int
        Result files read (also :attr:`result_files`; the Parquet files
        written are :attr:`parquet_files`).
    bytes : int
        Size of the Parquet files written.
    path : str
        The dataset directory: absolute for a local path, else the URL as
        given (without credentials).
    parquet_files : tuple of str
        The Parquet files written, relative to ``path``.
    columns : tuple of str
        The names of the columns written, provenance included (of
        ``records``, for tables).
    tables : tuple of (str, int)
        With ``tables=True``: each table written and its rows (``rows`` is
        then the records').
    """

    rows: int
    files: int
    bytes: int
    path: str
    parquet_files: tuple[str, ...] = ()
    columns: tuple[str, ...] = ()
    tables: tuple[tuple[str, int], ...] = ()

    @property
    def result_files(self) -> int:
        """Result files read: the same as :attr:`files`, named so it is not mistaken."""
        return self.files

    def __repr__(self) -> str:
        written = len(self.parquet_files)
        if self.tables:
            listed = ", ".join(f"{name} {rows:,}" for name, rows in self.tables)
            return (
                f"ParquetSummary(tables {listed} (rows) from {self.files} result file(s) -> "
                f"{written} Parquet file(s), {self.bytes / 1e6:,.1f} MB at {self.path})"
            )
        return (
            f"ParquetSummary({self.rows:,} rows x {len(self.columns)} columns from "
            f"{self.files} result file(s) -> {written} Parquet file(s), "
            f"{self.bytes / 1e6:,.1f} MB at {self.path})"
        )

    def _repr_html_(self) -> str:
        from ..display import summary_html

        return summary_html(
            [
                ("rows", f"{self.rows:,}"),
                ("columns", str(len(self.columns))),
                ("result files read", str(self.files)),
                ("Parquet files written", str(len(self.parquet_files))),
                ("size", f"{self.bytes / 1e6:,.1f} MB"),
                ("path", self.path),
            ]
        )


def write_parquet(
    source: LoadSource,
    path: str,
    *,
    columns: Sequence[str] | None = None,
    provenance: bool = True,
    partition_by: Sequence[str] | str | None = None,
    overwrite: bool = False,
    storage_options: dict[str, Any] | None = None,
) -> ParquetSummary:
    """Write ``source`` as a Parquet dataset at ``path`` (any fsspec URL)."""
    fs, target = fsspec.core.url_to_fs(path, **(storage_options or {}))
    target = target.rstrip("/")
    by = [partition_by] if isinstance(partition_by, str) else list(partition_by or [])
    about = dataset_metadata(source)
    # A second pass, if one is needed, reads parsed copies instead of parsing again.
    # Written on a thread of their own, they cost a one-pass conversion no time (measured).
    source.keep_parsed = True
    with staged_dataset(fs, target, path, overwrite) as staging:
        if not by and source.newest is None:  # both need every file read before any is written
            written = _write_in_one_pass(source, columns, provenance, about, fs, staging)
        else:
            scan = source.scan(keep=False)
            written = _write_second_pass(source, scan, columns, provenance, by, about, fs, staging)
        files = sorted(p for p in fs.find(staging) if p.endswith(".parquet"))
        relative = tuple(p[len(staging) :].lstrip("/") for p in files)
        sizes = sum(fs.size(p) for p in files)
        counts = [written.file_rows.get(f.key, 0) for f in source.files]
        manifest = {**about, "row_counts": counts, "files": list(relative), "rows": written.rows}
        write_manifest(fs, staging, manifest)
    log_summary(source, written.rows, len(written.columns), target=str(path))
    shown = os.path.abspath(target) if isinstance(fs, LocalFileSystem) else str(path)
    return ParquetSummary(written.rows, len(source.files), sizes, shown, relative, written.columns)


@dataclass
class _Written:
    """What a conversion wrote: rows in all, rows read from each file, column names."""

    rows: int
    file_rows: dict[FileKey, int]
    columns: tuple[str, ...]


def _write_in_one_pass(
    source: LoadSource,
    columns: Sequence[str] | None,
    provenance: bool,
    about: dict[str, Any],
    fs: Any,
    staging: str,
) -> _Written:
    """Convert while reading (see :mod:`.onepass`); write again if the types changed."""
    part = f"{staging}/part-0.parquet"
    with contextlib.closing(OnePass(source, columns, provenance)) as attempt:
        written = _write_while_types_hold(attempt, about, fs, part)
        if attempt.changed:  # what was written goes before the rest is read
            if written is not None:
                fs.rm(part)
            attempt.read_on()
    if written is None or attempt.changed:  # no row at all, or the types changed
        found = attempt.found
        return _write_second_pass(source, found, columns, provenance, [], about, fs, staging)
    logger.debug("%s: converted in one pass (the first batch settled every type)", source.label)
    return written


def _write_while_types_hold(
    attempt: OnePass, about: dict[str, Any], fs: Any, part: str
) -> _Written | None:
    """Write ``attempt``'s batches to ``part``; ``None`` (and no file) when there is none.

    A function of its own so that no batch outlives it: after a change of types
    the rest is read without the memory of what was converted.
    """
    with contextlib.closing(attempt.batches()) as made:
        first = next(made, None)
        if first is None:
            return None
        batches = RowCounter(itertools.chain([first], made))
        schema = first.schema.with_metadata({METADATA_KEY: json.dumps(about)})
        _write_single(batches, fs, part, schema)
    return _Written(batches.rows, attempt.found.rows, tuple(schema.names))


def _write_second_pass(
    source: LoadSource,
    found: Scan,
    columns: Sequence[str] | None,
    provenance: bool,
    by: list[str],
    about: dict[str, Any],
    fs: Any,
    staging: str,
) -> _Written:
    """Conform every batch to the types a first pass ``found``, and write."""
    schema = data_schema(found.builder, columns, provenance, source.dtypes)
    if provenance:
        schema = with_provenance(schema)
    require_columns(by, schema.names, "Cannot partition by a column this load lacks:")
    schema = schema.with_metadata({METADATA_KEY: json.dumps(about)})
    # Batches are read and conformed on a thread of their own while the writer
    # encodes; a failed write stops that thread before the staging goes.
    with contextlib.closing(prefetched(_all_batches(source, schema, provenance))) as made:
        batches = RowCounter(made)
        if by:
            _write_partitioned(batches, fs, staging, schema, by)
        else:
            _write_single(batches, fs, f"{staging}/part-0.parquet", schema)
    return _Written(batches.rows, found.rows, tuple(schema.names))


@contextlib.contextmanager
def staged_dataset(fs: Any, target: str, path: str, overwrite: bool) -> Iterator[str]:
    """A staging directory for the dataset at ``target``, published when the block ends.

    What is at ``target`` is checked first, before any work (a dataset may
    replace only one this library wrote, and only with ``overwrite``); on any
    failure, Ctrl-C included, the staging directory goes and nothing is left
    at ``target``.
    """
    _storage(path, lambda: sweep_orphans(fs, target))
    _storage(path, lambda: check_target(fs, target, str(path), overwrite))
    staging = staging_path(target)
    try:
        make_staging(fs, staging)
        yield staging
        publish(fs, staging, target, str(path), overwrite)
    except BaseException as exc:
        remove_staging(fs, staging)
        if isinstance(exc, OSError) and not isinstance(exc, DatafinitiError):
            raise unwritable(path, exc) from None
        raise


def _storage(path: str, action: Callable[[], object]) -> None:
    failure: OSError | None = None
    try:
        action()
    except DatafinitiError:
        raise
    except OSError as exc:
        failure = exc
    if failure is not None:
        raise unwritable(path, failure)


def unwritable(path: str, exc: OSError) -> StorageError:
    """The StorageError for a dataset that could not be written at ``path``."""
    return StorageError(
        f"Could not write Parquet to {path}: {exc.strerror or exc}. Check the "
        "path, permissions and free space; nothing was left at the target."
    )


def _write_single(batches: Iterable[pa.RecordBatch], fs: Any, path: str, schema: pa.Schema) -> None:
    """One file of ``batches`` at ``path`` on the fsspec file system ``fs``."""
    with fs.open(path, "wb") as handle:
        write_row_groups(batches, handle, schema)


def write_row_groups(batches: Iterable[pa.RecordBatch], sink: Any, schema: pa.Schema) -> int:
    """Parquet into ``sink``, a row group each time about 16 MB of Arrow data has gathered.

    Returns the rows written. Memory stays at a row group or so, whatever the size.
    """
    pending: list[pa.RecordBatch] = []
    gathered = rows = 0
    with pq.ParquetWriter(sink, schema) as writer:
        for batch in batches:
            pending.append(batch)
            gathered += batch.nbytes
            rows += batch.num_rows
            if gathered >= _ROW_GROUP_BYTES:
                writer.write_table(pa.Table.from_batches(pending, schema), row_group_size=1 << 30)
                pending, gathered = [], 0
                release_arrow_memory()
        if pending:
            writer.write_table(pa.Table.from_batches(pending, schema), row_group_size=1 << 30)
    return rows


#: Partitions one batch of rows may be written into. pyarrow's default, 1,024, is
#: fewer than the brands of many a products download. Memory stays bounded all the
#: same: pyarrow keeps at most 900 files open, closing the least recent first.
MAX_PARTITIONS = 1 << 16


def _write_partitioned(
    batches: Iterable[pa.RecordBatch], fs: Any, staging: str, schema: pa.Schema, by: list[str]
) -> None:
    """Hive-style directories through pyarrow's dataset writer (which buffers more)."""
    try:
        pds.write_dataset(
            batches,
            staging,
            schema=schema,
            format="parquet",
            filesystem=pafs.PyFileSystem(pafs.FSSpecHandler(fs)),
            partitioning=by,
            partitioning_flavor="hive",
            basename_template="part-{i}.parquet",
            use_threads=False,
            preserve_order=True,
            existing_data_behavior="overwrite_or_ignore",
            max_partitions=MAX_PARTITIONS,
        )
    except pa.ArrowInvalid as exc:
        if "partitions" not in str(exc):
            raise
        raise ConfigurationError(
            f"partition_by={by} (--partition-by) makes more than {MAX_PARTITIONS:,} "
            "partitions in one batch of rows; nothing was written. Partition by columns "
            "with fewer distinct values."
        ) from None


def _all_batches(
    source: LoadSource, schema: pa.Schema, provenance: bool
) -> Iterator[pa.RecordBatch]:
    data = pa.schema([f for f in schema if f.name not in PROVENANCE_SCHEMA.names])
    for file, path in source.download.local_files():
        read = source.batches_of(file, path)
        for batch in typed_batches(file, read.batches, data, provenance, source.newest):
            yield batch.replace_schema_metadata(schema.metadata)


def dataset_metadata(source: LoadSource) -> dict[str, Any]:
    """The footer's record of the load: known before any row is written, so no row counts."""
    return dataset_metadata_of(
        source.request_ids, source.files, source.newest is not None, source.client.api_url
    )


def dataset_metadata_of(
    request_ids: list[int], files: list[ResultFile], deduplicated: bool, api_url: str
) -> dict[str, Any]:
    """:func:`dataset_metadata` from what it is made of (engines without a ``LoadSource``)."""
    from .delta import api_host

    single = {"request_id": request_ids[0]} if len(request_ids) == 1 else {}
    return {
        **single,
        "request_ids": request_ids,
        "api": api_host(api_url),
        "deduplicated": deduplicated,
        "file_request_ids": [f.request_id for f in files],
        "result_ids": [f.id for f in files],
        "files": [f.name for f in files],
        "library": f"datafiniti-loader {__version__}",
        "loaded_at": datetime.now(UTC).isoformat(),
    }
