"""The paying half of a sync: count what changed since the mark, ask for it once, wait for it.

Shared by :func:`~datafiniti_loader.sync` (which merges into Delta) and the
dlt source's query mode (which hands the rows to dlt). Both keep the same
promises about credits: nothing is bought without a count (v4) or a
``max_records`` ceiling (v3), ``confirm`` is asked before anything is spent,
and a download asked for is written to a journal before and after the call,
so that a run stopped in between never buys the same records again.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

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
from ..loader import wait_for
from ..remote.client import Client, normalize_request_id
from .marks import since_query
from .state import Journal, Pending, SyncIdentity

__all__ = ["Confirm", "Purchase", "awaited", "merging", "purchase"]

logger = logging.getLogger("datafiniti_loader")

Confirm = Callable[[int], bool]


@dataclass(frozen=True)
class Purchase:
    """What a run is to merge: a download (``pending``), or nothing, and why.

    ``status`` is ``"bought"`` (``pending`` names the download), ``"unchanged"``
    (nothing changed since the mark: no download, no credits) or ``"refused"``
    (``confirm`` said no).
    """

    asked: str
    counted: int | None
    status: str
    pending: Pending | None = None


def purchase(
    client: Client,
    journal: Journal,
    identity: SyncIdentity,
    mark: str | None,
    *,
    limit: int | None,
    confirm: Confirm | None,
    request_id: int | str | None = None,
    forget_pending: bool = False,
) -> Purchase:
    """The download this run merges: the journal's, the one adopted, or a new one bought.

    Raises
    ------
    SyncMismatch
        The journal, or the download adopted, is of another query.
    SyncPending
        An earlier run asked for a download and never heard back.
    TooManyRecords
        More than ``limit`` records would be bought.
    """
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
    if pending is not None:
        return Purchase(pending.asked, pending.records, "bought", pending)
    asked = since_query(identity.query, mark)
    counted = _counted(client, identity, asked, limit)
    if counted == 0:
        return Purchase(asked, 0, "unchanged")
    logger.info(
        "sync: %s record(s) %s would be downloaded (every record costs credits)",
        f"{counted:,}" if counted is not None else f"up to {limit:,}",
        f"changed since {mark}" if mark else f"matching {identity.query[:120]!r}",
    )
    if confirm is not None and not confirm(counted or limit or 0):
        return Purchase(asked, counted, "refused")
    made = _create(client, journal, identity, asked, counted or limit or 0, mark)
    if made is None:  # nothing matched after all (v3 says so only now)
        return Purchase(asked, 0, "unchanged")
    return Purchase(asked, counted, "bought", made)


def awaited(
    client: Client, pending: Pending, wait: bool | float, progress: bool | None
) -> tuple[int, bool]:
    """Wait for the pending download: its records, and whether it holds every match.

    A download that could not hold every match is merged, but the mark must
    not move past records it left out.
    """
    rid = pending.request_id
    assert rid is not None
    try:
        done = wait_for(client, rid, wait, progress)
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
    return done.num_downloaded or done.num_requested or 0, complete


@contextlib.contextmanager
def merging(rid: int) -> Iterator[None]:
    """Errors of merging a sync's download ``rid``, saying how the sync goes on."""
    try:
        yield
    except ResultExpired as exc:
        raise ResultExpired(
            f"{exc} It is the download this sync asked for: pass forget_pending=True "
            "(--forget-pending) to ask for a new one (its records are bought again)."
        ) from None
    except ColumnNotFound:
        raise ColumnNotFound(
            f"Download request {rid} cannot be synced: a file of it has no 'id' or no "
            "'dateUpdated' column. A sync tells records apart by 'id' and moves its mark by "
            "'dateUpdated': sync with a view that includes both, and pass forget_pending=True "
            "(--forget-pending) so that this download is not tried again."
        ) from None


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
