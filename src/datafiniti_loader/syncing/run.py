"""One sync: count what changed since the mark, buy only that, merge it, move the mark."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import asdict, replace
from typing import Any

from ..config import positive_count
from ..loader import LoadOptions, LoadSource, open_load
from ..read.tidy import RECORDS
from ..remote.client import Client
from ..remote.versions import Query
from ..retry import RetryPolicy
from ..sinks.delta import (
    DeltaSummary,
    commit_about,
    note_version,
    require_deltalake,
    shown_path,
    write_delta,
)
from .marks import mark_after
from .purchase import Confirm, Purchase, awaited, merging, purchase
from .state import Journal, SyncIdentity, table_state
from .summary import SyncSummary

__all__ = ["sync"]

logger = logging.getLogger("datafiniti_loader")


def sync(
    query: str,
    path: str,
    *,
    data_type: str = "products",
    format: str = "json",
    view: str | None = None,
    tables: bool = False,
    max_records: int | None = None,
    confirm: Confirm | None = None,
    token: str | None = None,
    api_url: str | None = None,
    storage_options: dict[str, str] | None = None,
    cache: Any = None,
    progress: bool | None = None,
    retry: RetryPolicy | None = None,
    wait: bool | float = True,
    max_workers: int | None = None,
    dtype: Mapping[str, str] | None = None,
    request_id: int | str | None = None,
    forget_pending: bool = False,
) -> SyncSummary:
    """Keep the Delta table at ``path`` current from ``query``, buying only changed records.

    The first sync of a path counts the query, creates a download, waits for
    it and merges it (:func:`~datafiniti_loader.to_delta`, ``mode="merge"``).
    The commit records the query, data type, format, view and the mark: the
    newest ``dateUpdated`` merged. Every later sync asks only for records
    updated after the mark, ``(<query>) AND dateUpdated:{<mark> TO *]`` (the
    mark excluded: an inclusive bound would buy the newest record again each
    time), merges them, and moves the mark in the same commit. When nothing
    changed, no download is made, no credits are spent and no version is made.

    Parameters
    ----------
    query : str
        A Datafiniti query, e.g. ``'categories:shoes AND brand:Nike'``.
    path : str
        The Delta table (any fsspec URL); with ``tables=True`` the directory
        of tidy tables (``path/records``, ``path/reviews``...).
    data_type, format, view
        As for :func:`~datafiniti_loader.create_download`. A path is one
        query's: syncing it with another query, data type, format, view or
        ``tables`` raises :class:`SyncMismatch`.
    tables : bool
        Keep tidy tables (:func:`~datafiniti_loader.load_tables`), merged
        record by record.
    max_records : int, optional
        Refuse (:class:`TooManyRecords`, nothing spent) when more records
        would be downloaded. Required on API v3, which cannot count for free:
        there it is the download's size, and a download that could not hold
        every match is merged without moving the mark.
    confirm : callable, optional
        ``confirm(records) -> bool``, asked with the count (v4) or
        ``max_records`` (v3) before any credits are spent; False stops the
        sync (status ``"refused"``). ``None`` goes on.
    token, api_url, cache, progress, retry, max_workers, dtype
        As for :func:`~datafiniti_loader.load_results`.
    storage_options : dict, optional
        For ``path`` (an object store's credentials), as for ``to_delta``.
    wait : bool or float
        Wait for the download (default), or at most this many seconds.
    request_id : int, optional
        Merge this download as the sync's own: the one an earlier sync asked
        for without hearing back (see :class:`SyncPending`).
    forget_pending : bool
        Forget the download an earlier sync asked for without hearing back,
        once you know it was not made; a new one is asked for.

    Returns
    -------
    SyncSummary
        Records counted, downloaded, added, replaced, unchanged; the marks,
        the table's version, the download.

    Notes
    -----
    A sync stopped after its download was created (Ctrl-C while waiting, a
    crash, a lost connection) leaves a journal beside the table
    (``_datafiniti_sync.json``); the next sync goes on with that download, so
    the same records are never paid for twice. Records updated in the
    seconds between the count and the download's creation may make the
    download hold fewer than match; Datafiniti does not say which it left out.
    """
    require_deltalake()
    wanted = Query.checked(query, data_type, 1, format, view)
    identity = SyncIdentity(wanted.text, wanted.data_type, wanted.format, wanted.view, tables)
    limit = positive_count("max_records", max_records)
    options = LoadOptions(token, api_url, False, cache, max_workers, progress, retry, True, dtype)
    with Client(token, api_url, retry=retry) as client:
        state = table_state(path, identity, storage_options)
        mark = state.mark if state is not None else None
        journal = Journal(path, storage_options)
        bought = purchase(
            client, journal, identity, mark, limit=limit, confirm=confirm,
            request_id=request_id, forget_pending=forget_pending,
        )  # fmt: skip
        if bought.pending is None:
            summary = SyncSummary(
                shown_path(path), identity.query, bought.asked, bought.status, bought.counted,
                previous_mark=mark, mark=mark, version=state.version if state else None,
            )  # fmt: skip
            if bought.status == "unchanged":
                logger.info("%s", summary.describe())
            return summary
        return _merge(client, journal, bought, path, storage_options, options, wait)


def _merge(
    client: Client,
    journal: Journal,
    bought: Purchase,
    path: str,
    storage_options: dict[str, str] | None,
    options: LoadOptions,
    wait: bool | float,
) -> SyncSummary:
    """Wait for the pending download, merge it with the mark in its commit, clear the journal."""
    pending = bought.pending
    assert pending is not None and pending.request_id is not None
    rid = pending.request_id
    downloaded, complete = awaited(client, pending, wait, options.progress)

    def noted(source: LoadSource) -> dict[str, Any]:
        mark = mark_after(source, pending.previous_mark, complete)
        return {"sync": {**asdict(pending.identity), "mark": mark, "asked": pending.asked}}

    with open_load([rid], options, client=client) as source:
        with merging(rid):
            written = _write(source, path, pending.identity.tables, storage_options, noted)
        if not written.committed and not written.merged_before:
            # Records bought that the table had: the mark still moves, in a commit of its own.
            about = commit_about([rid], client.api_url, "merge", rows_inserted=0, **noted(source))
            target = f"{str(path).rstrip('/')}/{RECORDS}" if pending.identity.tables else path
            written = replace(
                written, version=note_version(target, about, storage_options), committed=True
            )
        if written.merged_before:  # by the run that was stopped before clearing the journal
            state = table_state(path, pending.identity, storage_options)
            mark = state.mark if state is not None else pending.previous_mark
        else:
            mark = mark_after(source, pending.previous_mark, complete)
    journal.remove()
    summary = SyncSummary(
        shown_path(path), pending.identity.query, pending.asked,
        "merged" if complete else "incomplete", bought.counted, downloaded,
        written.records_added, written.records_replaced, written.records_unchanged,
        pending.previous_mark, mark, written.version, written.committed, rid,
    )  # fmt: skip
    logger.info("%s", summary.describe())
    return summary


def _write(
    source: LoadSource,
    path: str,
    tables: bool,
    storage_options: dict[str, str] | None,
    noted: Callable[[LoadSource], dict[str, Any]],
) -> DeltaSummary:
    if tables:
        from ..sinks.deltatables import write_delta_tables

        return write_delta_tables(source, path, storage_options=storage_options, noted=noted)
    return write_delta(source, path, mode="merge", storage_options=storage_options, noted=noted)
