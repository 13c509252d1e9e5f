"""Sink: tidy tables merged into one Delta table per name (``path/records``, ``path/reviews``...).

The newest-copy rule of :mod:`.delta`, record by record across the tables:
which records win is decided once, against ``records`` (it has every
record's ``id``, ``dateUpdated`` and request); a winning copy then replaces
the record's ``records`` row **and** all of its rows in every other table
(its old reviews are deleted even where the new copy has fewer, or none).

Delta commits one table at a time. The child tables and ``conflicts`` are
committed first and ``records`` last, each commit naming its requests: a
merge stopped between two commits is completed by merging the same request
again, since ``records`` (not yet committed) still gives the same winners and
the tables already committed recognise the request and are left alone.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pyarrow as pa

from ..loader import LoadSource, RowCounter, data_schema
from ..read.dedupe import ID_COLUMN
from ..read.tidy import RECORDS
from .delta import (
    DeltaSummary,
    Noted,
    commit_about,
    commit_write,
    committing,
    keep_append_only,
    merged_requests,
    open_table,
    require_deltalake,
    shown_path,
)
from .deltafiles import DataFiles, local_dir, rewritten, table_store
from .deltaplan import Plan, against_table, delta_types, plan_write, winning_rows
from .deltarules import check_writable
from .tablesparquet import conformed, tidy_parts, unified_schema

__all__ = ["write_delta_tables"]

logger = logging.getLogger(__name__)


def write_delta_tables(
    source: LoadSource,
    path: str,
    *,
    storage_options: dict[str, str] | None = None,
    noted: Noted | None = None,
) -> DeltaSummary:
    """Merge ``source``'s tidy tables into the Delta tables under ``path`` (see module docs).

    ``noted(source)`` gives more metadata for the commit of ``records``, the
    last one (see :func:`.delta.write_delta`).
    """
    require_deltalake()
    root = str(path).rstrip("/")
    shown = shown_path(root)
    records = open_table(f"{root}/{RECORDS}", storage_options)
    existing = _existing_tables(root, storage_options)
    for name in existing:  # every table's rules, before anything is downloaded
        table = open_table(f"{root}/{name}", storage_options)
        if table is not None:
            check_writable(table, shown_path(f"{root}/{name}"))
    requests = tuple(source.request_ids)
    api_url = source.client.api_url
    if records is not None and set(requests) <= merged_requests(records, api_url):
        return DeltaSummary.already_merged(shown, records.version(), "merge", requests)
    scan = source.scan(keep=False)
    flat = data_schema(scan.builder, None, True, source.dtypes)
    plan = plan_write(source, records)
    merged_before = merged_requests(records, api_url) if records is not None else set()
    keep = winning_rows(plan.replace_ids, merged_before)
    inserted = 0
    with tidy_parts(source, flat, keep) as parts:
        names = [n for n in dict.fromkeys([*parts, *existing]) if n != RECORDS] + [RECORDS]
        for name in names:  # records last: its commit says the merge is whole
            extra = noted(source) if noted is not None and name == RECORDS else {}
            inserted_here = _merge_table(
                f"{root}/{name}", name, parts.get(name, []), plan, requests, api_url,
                storage_options, extra,
            )  # fmt: skip
            if name == RECORDS:
                inserted = inserted_here
    records = open_table(f"{root}/{RECORDS}", storage_options)
    assert records is not None
    return DeltaSummary(
        shown, records.version(), True, "merge", inserted, plan.added, plan.replaced,
        plan.unchanged, requests, note=f"tables: {', '.join(names)}",
    )  # fmt: skip


def _existing_tables(root: str, storage_options: dict[str, str] | None) -> list[str]:
    """The names of the Delta tables already under ``root``."""
    import pyarrow.fs as pafs

    local = local_dir(root)
    if local is not None and not os.path.isdir(local):
        return []  # nothing there yet (and listing must not make the directory)
    fs = table_store(root, storage_options)[0]
    names = []
    for entry in fs.get_file_info(pafs.FileSelector("", allow_not_found=True)):
        log = pafs.FileSelector(f"{entry.path}/_delta_log", allow_not_found=True)
        if entry.type == pafs.FileType.Directory and fs.get_file_info(log):
            names.append(entry.base_name)
    return sorted(names)


def _merge_table(
    path: str,
    name: str,
    parts: list[Path],
    plan: Plan,
    requests: tuple[int, ...],
    api_url: str,
    storage_options: dict[str, str] | None,
    note: dict[str, Any],
) -> int:
    """One table: the replaced records' rows out, the winning copies' rows in; rows inserted."""
    table = open_table(path, storage_options)
    if table is not None and set(requests) <= merged_requests(table, api_url):
        logger.info("%s already holds request(s) %s: left as it is", name, requests)
        return 0
    shown = shown_path(path)
    key = ID_COLUMN if name == RECORDS else "_record_id"
    schema = delta_types(unified_schema(parts)) if parts else None
    if schema is None:
        if table is None:
            return 0  # no rows for a table that does not exist: nothing to make
        schema = pa.schema(table.schema().to_arrow())
    changed: list[str] = []
    if table is not None:
        schema, changed = against_table(schema, table)
        keep_append_only(table, shown, "merge", changed, plan.replaced)
    partition_by = list(table.metadata().partition_columns) if table is not None else []
    files = DataFiles(path, storage_options, partition_by, key=key)
    try:
        actions: list[Any] = []
        if table is not None:
            actions += rewritten(table, files, plan.existing_ids, schema, every=bool(changed))
        counter = RowCounter(conformed(parts, schema))
        actions += files.write(iter(counter), schema)
        rows = counter.rows
        about = commit_about(
            requests, api_url, "merge", rows_inserted=rows, table=name, schema_changed=changed,
            **note,
        )  # fmt: skip
        how = "overwrite" if changed else "append"
        commit = committing(table, path, schema, actions, how, partition_by, storage_options)
        commit_write(files, about, shown, commit)
    except BaseException:
        files.discard()
        raise
    return rows
