"""Sink: a download to a Parquet dataset, streaming, in bounded memory, all or nothing.

Two passes over the local copies: the first decides every column's type from
all the data (guessing from a first block is how identifiers turn into
numbers), the second conforms each batch and writes it. Row groups are sized
by bytes, not by how the reader happened to cut batches. The dataset is
written beside the target and moved into place only when complete, so a
failure leaves nothing at ``path``.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.dataset as pds
import pyarrow.fs as pafs

from ._version import __version__
from .loader import LoadSource, data_schema, log_summary, typed_batches, with_provenance
from .schema import PROVENANCE_SCHEMA

__all__ = ["ParquetSummary", "write_parquet"]

logger = logging.getLogger("datafiniti_loader")

_ROW_GROUP_BYTES = 64 * 1024 * 1024
METADATA_KEY = b"datafiniti_loader"


@dataclass(frozen=True)
class ParquetSummary:
    """What :func:`~datafiniti_loader.to_parquet` wrote.

    Attributes
    ----------
    rows : int
        Rows written.
    files : int
        Result files read.
    bytes : int
        Size of the Parquet files written.
    path : str
        The dataset directory (as given, without credentials).
    parquet_files : tuple of str
        The Parquet files, relative to ``path``.
    """

    rows: int
    files: int
    bytes: int
    path: str
    parquet_files: tuple[str, ...] = ()


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
    if fs.exists(target) and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it.")
    scan = source.scan(keep=False)
    schema = data_schema(scan.builder, columns)
    if provenance:
        schema = with_provenance(schema)
    schema = schema.with_metadata({METADATA_KEY: json.dumps(_metadata(source, scan.rows))})
    rows_per_group = _rows_per_group(scan.bytes, sum(scan.rows.values()))

    staging = f"{target.rstrip('/')}.tmp-{uuid.uuid4().hex[:12]}"
    written: list[tuple[str, int]] = []
    try:
        pds.write_dataset(
            _all_batches(source, schema, columns, provenance),
            staging,
            schema=schema,
            format="parquet",
            filesystem=pafs.PyFileSystem(pafs.FSSpecHandler(fs)),
            partitioning=[partition_by] if isinstance(partition_by, str) else partition_by,
            partitioning_flavor="hive" if partition_by else None,
            basename_template="part-{i}.parquet",
            use_threads=False,
            preserve_order=True,
            min_rows_per_group=rows_per_group,
            max_rows_per_group=rows_per_group,
            file_visitor=lambda f: written.append((f.path, f.size or 0)),
            existing_data_behavior="error",
        )
        if fs.exists(target):
            fs.rm(target, recursive=True)
        fs.mv(staging, target, recursive=True)
    except BaseException:
        if fs.exists(staging):
            fs.rm(staging, recursive=True)
        raise
    rows = sum(scan.rows.values())
    log_summary(source, rows, len(schema), target=str(path))
    relative = tuple(sorted(p[len(staging) :].lstrip("/") for p, _ in written))
    return ParquetSummary(rows, len(source.files), sum(s for _, s in written), str(path), relative)


def _all_batches(
    source: LoadSource, schema: pa.Schema, columns: Sequence[str] | None, provenance: bool
) -> Iterator[pa.RecordBatch]:
    data = pa.schema([f for f in schema if f.name not in PROVENANCE_SCHEMA.names])
    for file, path in source.download.local_files():
        batches, _ = source.batches_of(file, path)
        for batch in typed_batches(file, batches, data, provenance):
            yield batch.replace_schema_metadata(schema.metadata)


def _rows_per_group(total_bytes: int, total_rows: int) -> int:
    if total_rows == 0:
        return 65536
    per_row = max(1.0, total_bytes / total_rows)
    return int(min(1_000_000, max(1_000, _ROW_GROUP_BYTES / per_row)))


def _metadata(source: LoadSource, counts: dict[str, int]) -> dict[str, Any]:
    return {
        "request_id": source.request_id,
        "result_ids": [f.id for f in source.files],
        "files": [f.name for f in source.files],
        "row_counts": [counts.get(f.name, 0) for f in source.files],
        "library": f"datafiniti-loader {__version__}",
        "loaded_at": datetime.now(UTC).isoformat(),
    }
