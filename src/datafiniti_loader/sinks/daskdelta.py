"""Sink: downloads merged into a Delta table by dask workers, committed once by the client.

The workers scan the files (:func:`.dask.scanned`) and send back, besides
the column types, each record's id and newest ``dateUpdated``; the client
decides the winning copies against the table (the rule of :mod:`.delta`)
and hands each worker the ids whose rows it writes. Workers write their
data files straight into the table's directory through delta-rs's storage
(local or an object store, the same ``storage_options``); the client
rewrites the table's files that hold a replaced record, then makes one
commit with every worker's files and its own, carrying the requests merged.
If anything fails before the commit, every file of this write (they share
a name prefix) is removed and the table is as it was.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import replace
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ..config import resolve_api_url
from ..errors import ConfigurationError
from ..loader import LoadOptions, RowCounter, Sources, request_ids
from ..read.schema import conform
from .dask import Hidden, _Partition, partition_batches, require_dask, run_all, scanned
from .delta import (
    DeltaSummary,
    commit_about,
    commit_write,
    committing,
    keep_append_only,
    merged_requests,
    open_table,
    require_deltalake,
    shown_path,
)
from .deltafiles import DataFiles, rewritten, table_store
from .deltaplan import against_table, delta_types, plan_from
from .deltarules import check_writable

__all__ = ["write_delta_on_dask"]

logger = logging.getLogger("datafiniti_loader")


def _write_files(
    part: _Partition, path: str, schema: pa.Schema, tag: str, options: Hidden
) -> tuple[list[Any], int]:
    """On a worker: the partition's rows as new data files of the table; their add actions."""
    files = DataFiles(path, options.value, tag=tag)
    batches, close = partition_batches(part)
    counter = RowCounter(conform(batch, schema) for batch in batches if batch.num_rows)
    try:
        return files.write(iter(counter), schema), counter.rows
    finally:
        close()


def write_delta_on_dask(
    request_id: Sources,
    path: str,
    options: LoadOptions,
    *,
    storage_options: dict[str, str] | None = None,
) -> DeltaSummary:
    """Merge the downloads into the Delta table at ``path``, converted on the dask workers."""
    require_deltalake()
    require_dask()
    from dask.delayed import delayed

    shown = shown_path(path)
    table = open_table(path, storage_options)
    if table is not None:
        check_writable(table, shown)  # before anything is downloaded or written
        if table.metadata().partition_columns:
            raise ConfigurationError(
                f"{shown} is partitioned; engine='dask' does not write partitioned tables yet: "
                "use the local engine."
            )
    api_url = resolve_api_url(options.api_url)
    merged_before = merged_requests(table, api_url) if table is not None else set()
    requested = sorted(request_ids(request_id))  # ties go to the newer download
    if table is not None and set(requested) <= merged_before:
        return DeltaSummary.already_merged(shown, table.version(), "merge", requested)
    found = scanned(requested, replace(options, dedupe=True, merging=True))
    requests = tuple(found.request_ids)
    schema = delta_types(found.schema)
    plan = plan_from(found.newest, found.request_ids, table)
    if table is not None and not plan.any_rows(found.newest, merged_before):
        return DeltaSummary(
            shown, table.version(), False, "merge", 0, 0, 0, plan.unchanged, requests,
            note="no copy is newer than the table's",
        )  # fmt: skip
    changed: list[str] = []
    if table is not None:
        schema, changed = against_table(schema, table)
        keep_append_only(table, shown, "merge", changed, plan.replaced)
    tag = uuid.uuid4().hex[:12]
    hidden = Hidden(storage_options)
    tasks = []
    for part in found.parts:
        winning = pc.filter(part.keep, pc.is_in(part.keep, value_set=plan.replace_ids))
        fresh = part.job.file.request_id not in merged_before
        mine = replace(part, keep=winning, keep_idless=fresh)
        tasks.append(delayed(_write_files, pure=False)(mine, path, schema, tag, hidden))
    files = DataFiles(path, storage_options, tag=tag)
    files.prepare()  # a new table's directory, made here: removed again if all fails
    try:
        written: list[tuple[list[Any], int]] = run_all(tasks)
        actions: list[Any] = [a for adds, _ in written for a in adds]
        rows = sum(n for _, n in written)
        if table is not None:
            actions += rewritten(table, files, plan.existing_ids, schema, every=bool(changed))
        about = commit_about(
            requests, api_url, "merge", rows_inserted=rows, records_added=plan.added,
            records_replaced=plan.replaced, schema_changed=changed, engine="dask",
        )  # fmt: skip
        how = "overwrite" if changed else "append"
        commit = committing(table, path, schema, actions, how, [], storage_options)
        commit_write(files, about, shown, commit)
    except BaseException:
        _remove_tagged(path, storage_options, files.prefix)
        files.discard()
        raise
    version = 0 if table is None else table.version() + 1
    return DeltaSummary(
        shown, version, True, "merge", rows, plan.added, plan.replaced, plan.unchanged, requests,
        note="written on dask workers",
    )  # fmt: skip


def _remove_tagged(path: str, storage_options: dict[str, str] | None, prefix: str) -> None:
    """Remove every file of this write (the workers' too): their names start with ``prefix``."""
    import pyarrow.fs as pafs

    try:
        fs = table_store(path, storage_options)[0]
        for entry in fs.get_file_info(pafs.FileSelector("", recursive=True, allow_not_found=True)):
            if entry.base_name.startswith(prefix):
                fs.delete_file(entry.path)
    except OSError as exc:  # the write's failure is what the user must see
        logger.warning("could not remove every file of the failed write: %s", exc)
