"""Sink: a Parquet dataset written by dask workers, published once by the client.

The download is scanned on the workers (:func:`.dask.scanned`: the client
makes API calls only). Each worker then writes its partitions' Parquet
files straight into the staging directory beside the target (a local path
the workers share, or an object store reached with ``storage_options``);
the client writes the manifest last and publishes the dataset as the
single-machine engine does: all or nothing, never over files it did not
write. A failed task (a worker killed mid-conversion is retried by dask, up
to its limit) leaves nothing at the target.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from ..loader import LoadOptions, Sources
from .dask import Hidden, _Partition, partition_batches, require_dask, run_all, scanned
from .parquet import (
    ParquetSummary,
    dataset_metadata_of,
    staged_dataset,
    write_row_groups,
)
from .publish import METADATA_KEY, write_manifest

__all__ = ["write_parquet_on_dask"]


@dataclass(frozen=True)
class _Written:
    name: str
    rows: int
    bytes: int


def _write_part(
    part: _Partition, staging_url: str, name: str, about: str, storage_options: Hidden
) -> _Written:
    """On a worker: one partition as one Parquet file in the staging directory."""
    fs, staging = fsspec.core.url_to_fs(staging_url, **storage_options.value)
    schema = part.schema.with_metadata({METADATA_KEY: about})
    batches, close = partition_batches(part)
    path = f"{staging}/{name}"
    try:
        with fs.open(path, "wb") as handle:
            rows = write_row_groups(
                (b.replace_schema_metadata(schema.metadata) for b in batches), handle, schema
            )
    finally:
        close()
    return _Written(name, rows, fs.size(path))


def write_parquet_on_dask(
    request_id: Sources,
    path: str,
    options: LoadOptions,
    *,
    columns: list[str] | None,
    provenance: bool,
    overwrite: bool,
    storage_options: dict[str, Any] | None,
) -> ParquetSummary:
    """Write the download as a Parquet dataset at ``path``, converted on the dask workers."""
    require_dask()
    from dask.delayed import delayed

    fs, target = fsspec.core.url_to_fs(path, **(storage_options or {}))
    target = target.rstrip("/")
    found = scanned(request_id, options, columns=columns, provenance=provenance)
    about = dataset_metadata_of(
        found.request_ids, found.files, found.newest is not None, found.api_url
    )
    with staged_dataset(fs, target, path, overwrite) as staging:
        staging_url = fs.unstrip_protocol(staging)
        hidden = Hidden(dict(storage_options or {}))
        tasks = [
            delayed(_write_part, pure=False)(
                part, staging_url, f"part-{n:05d}.parquet", json.dumps(about), hidden
            )
            for n, part in enumerate(found.parts)
        ]
        written: list[_Written] = run_all(tasks)
        manifest = {
            **about,
            "row_counts": [w.rows for w in written],
            "files": [w.name for w in written],
            "rows": sum(w.rows for w in written),
        }
        write_manifest(fs, staging, manifest)
    shown = os.path.abspath(target) if isinstance(fs, LocalFileSystem) else str(path)
    rows = sum(w.rows for w in written)
    names = tuple(w.name for w in written)
    return ParquetSummary(
        rows,
        len(found.files),
        sum(w.bytes for w in written),
        shown,
        names,
        tuple(found.schema.names),
    )
