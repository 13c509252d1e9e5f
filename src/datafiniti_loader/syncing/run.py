"""One sync: count what changed since the mark, buy only that, merge it, move the mark."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import asdict, replace
from typing import Any

from ..errors import (
    ColumnNotFound,
    ConfigurationError,
    DatafinitiError,
    DownloadMayExist,
    NoResults,
    RequestFailed,
    ResultExpired,
    SyncMismatch,
    SyncPending,
    TooManyRecords,
)
from ..loader import LoadOptions, LoadSource, open_load, wait_for
from ..read.tidy import RECORDS
from ..remote.client import Client, normalize_request_id
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
from .marks import newest_date, since_query
from .state import Journal, Pending, SyncIdentity, table_state
from .summary import SyncSummary

__all__ = ["sync"]

logger = logging.getLogger("datafiniti_loader")

Confirm = Callable[[int], bool]


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
    limit = _max_records(max_records)
    options = LoadOptions(token, api_url, False, cache, max_workers, progress, retry, True, dtype)
    with Client(token, api_url, retry=retry) as client:
        state = table_state(path, identity, storage_options)
        mark = state.mark if state is not None else None
        version = state.version if state is not None else None
        journal = Journal(path, storage_options)
        if forget_pending:
            journal.remove()
        pending = journal.read()
        if pending is not None and pending.identity != identity:
            raise SyncMismatch(
                f"{journal.shown} names a download of another query "
                f"({'; '.join(identity.differences(pending.identity))}). Finish that sync "
                "first, or pass forget_pending=True."
            )
        if request_id is not None:
            pending = _adopted(client, normalize_request_id(request_id), identity, pending, mark)
            journal.write(pending, then="nothing was merged.")
        if pending is not None and pending.request_id is None:
            raise _unanswered(pending, journal.shown)
        counted = pending.records if pending is not None else None
        if pending is None:
            asked = since_query(identity.query, mark)
            counted = _counted(client, identity, asked, limit)
            summary = SyncSummary(
                shown_path(path), identity.query, asked, "unchanged", counted,
                previous_mark=mark, mark=mark, version=version,
            )  # fmt: skip
            if counted == 0:
                logger.info("%s", summary.describe())
                return summary
            logger.info(
                "sync: %s record(s) %s would be downloaded (every record costs credits)",
                f"{counted:,}" if counted is not None else f"up to {limit:,}",
                f"changed since {mark}" if mark else f"matching {identity.query[:120]!r}",
            )
            if confirm is not None and not confirm(counted or limit or 0):
                return replace(summary, status="refused")
            pending = _create(client, journal, identity, asked, counted or limit or 0, mark)
            if pending is None:  # nothing matched after all (v3 says so only now)
                return replace(summary, counted=0)
        assert pending.request_id is not None
        return _merge(client, journal, pending, path, storage_options, options, wait, counted)


def _max_records(value: int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigurationError(f"max_records must be a positive whole number; got {value!r}.")
    return value


def _counted(client: Client, identity: SyncIdentity, asked: str, limit: int | None) -> int | None:
    """What the sync would buy: the free count on v4; ``None`` on v3 (``max_records`` bounds it)."""
    if client.api_version != "v4":
        if limit is None:
            raise ConfigurationError(
                "API v3 cannot count records for free, so a sync there needs max_records "
                "(--max-records): the most records you are willing to pay for."
            )
        return None
    found = client.count(asked, data_type=identity.data_type)
    if limit is not None and found > limit:
        raise TooManyRecords(
            f"{found:,} {identity.data_type} record(s) match {asked[:160]!r}, more than "
            f"max_records={limit:,}: nothing was downloaded and no credits were spent. Raise "
            "max_records, or narrow the query.",
            count=found,
        )
    return found


def _create(
    client: Client,
    journal: Journal,
    identity: SyncIdentity,
    asked: str,
    records: int,
    mark: str | None,
) -> Pending | None:
    """Ask for the download, journaled before and after; ``None`` when nothing matched."""
    pending = Pending.asking(identity, asked, records, mark)
    journal.write(pending, then="no download was asked for.")
    try:
        created = client.create_download(
            asked,
            data_type=identity.data_type,
            num_records=records,
            format=identity.format,
            view=identity.view,
        )
    except NoResults:
        journal.remove()
        return None
    except DatafinitiError as exc:
        if not isinstance(exc, DownloadMayExist):  # refused: no download, nothing to remember
            journal.remove()
        raise
    # Anything else (Ctrl-C while the call is out) leaves the journal: it may exist.
    made = replace(pending, request_id=created.id)
    journal.write(
        made,
        then=f"download request {created.id} was created: run the sync again with "
        f"request_id={created.id} (--request-id {created.id}) to merge it without paying again.",
    )
    logger.info("sync: created download request %d for %s", created.id, asked[:120])
    return made


def _merge(
    client: Client,
    journal: Journal,
    pending: Pending,
    path: str,
    storage_options: dict[str, str] | None,
    options: LoadOptions,
    wait: bool | float,
    counted: int | None,
) -> SyncSummary:
    """Wait for the pending download, merge it with the mark in its commit, clear the journal."""
    rid = pending.request_id
    assert rid is not None
    try:
        done = wait_for(client, rid, wait, options.progress)
    except RequestFailed as exc:
        raise RequestFailed(
            f"{exc} This sync's download failed: once you have looked at it, run the sync "
            "with forget_pending=True (--forget-pending) to ask for a new one."
        ) from None
    complete = not (done.num_found and done.num_requested and done.num_found > done.num_requested)
    if not complete:
        logger.warning(
            "download request %d holds %d of the %d records that match: they are merged, but "
            "the mark stays at %s (a later sync asks for them again); raise max_records",
            rid, done.num_requested, done.num_found, pending.previous_mark,
        )  # fmt: skip

    def mark_of(source: LoadSource) -> str | None:
        """The mark after this download (once its records are read): kept if it is short."""
        return newest_date(source, pending.previous_mark) if complete else pending.previous_mark

    def noted(source: LoadSource) -> dict[str, Any]:
        mark = mark_of(source)
        return {"sync": {**asdict(pending.identity), "mark": mark, "asked": pending.asked}}

    with open_load([rid], options, client=client) as source:
        try:
            written = _write(source, path, pending.identity.tables, storage_options, noted)
        except ResultExpired as exc:
            raise ResultExpired(
                f"{exc} It is the download this sync asked for: pass forget_pending=True "
                "(--forget-pending) to ask for a new one (its records are bought again)."
            ) from None
        except ColumnNotFound:
            raise ColumnNotFound(
                f"Download request {rid} cannot be synced: a file of it has no 'id' or no "
                "'dateUpdated' column. A sync tells "
                "records apart by 'id' and moves its mark by 'dateUpdated': sync with a view "
                "that includes both, and pass forget_pending=True (--forget-pending) so "
                "that this download is not tried again."
            ) from None
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
            mark = mark_of(source)
    journal.remove()
    summary = SyncSummary(
        shown_path(path), pending.identity.query, pending.asked,
        "merged" if complete else "incomplete", counted, done.num_downloaded or done.num_requested,
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


def _adopted(
    client: Client,
    rid: int,
    identity: SyncIdentity,
    pending: Pending | None,
    mark: str | None,
) -> Pending:
    """The download ``rid`` as this sync's, once the API confirms it is of the query asked."""
    asked = pending.asked if pending is not None else since_query(identity.query, mark)
    request = client.request(rid)
    if request.query and request.query.strip() != asked.strip():
        raise SyncMismatch(
            f"Download request {rid} was made for {request.query[:160]!r}, not for what this "
            f"sync asks ({asked[:160]!r}): it is not merged."
        )
    base = pending or Pending.asking(identity, asked, request.num_requested, mark)
    return replace(base, request_id=rid)


def _unanswered(pending: Pending, shown: str) -> SyncPending:
    return SyncPending(
        f"The sync of {pending.identity.query[:120]!r} asked Datafiniti for a download at "
        f"{pending.asked_at} and never heard back ({shown}), so it may exist and be paid for. "
        "Look at your downloads (Datafiniti's portal); run the sync again with "
        "request_id=ID (--request-id ID) to merge that download, or with "
        "forget_pending=True (--forget-pending) if none was made."
    )
