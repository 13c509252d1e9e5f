"""Merging repeated downloads: for every record ``id``, only the newest copy's rows stay.

Customers pull the same records again and again (weekly updates, a query
run twice). A record's copy in one download is all of that download's rows
with its ``id`` (flat views give one row per review or price), dated by its
newest ``dateUpdated``. The copy with the newest date wins, ties going to the
download later in the list; every row of the winning copy stays and every
row of the other copies goes, even when the newer copy has fewer rows.

The decision needs every download's ids before the first row is written, so
it is made in the first pass of a load, from a small index of
``(id, newest date, download)`` per record (about 50 bytes each), never from
the rows themselves: Parquet conversions keep their bounded memory.
"""

from __future__ import annotations

import threading

import pyarrow as pa
import pyarrow.compute as pc

from ..errors import ColumnNotFound, ParseError
from ..remote.models import ResultFile
from .schema import timestamp_from_text

__all__ = [
    "ID_COLUMN",
    "NO_DATE",
    "UPDATED_COLUMN",
    "NewestCopies",
    "newest_per_id",
    "record_dates",
    "record_ids",
]

#: The record identity and the date that orders copies of it.
ID_COLUMN = "id"
UPDATED_COLUMN = "dateUpdated"

_WHEN = pa.timestamp("us", "UTC")
#: The date :func:`record_dates` gives a copy without one: older than any real date.
NO_DATE = -(2**62)
_OLDEST = NO_DATE


class NewestCopies:
    """Which download holds each record's newest copy.

    Parameters
    ----------
    request_ids : list of int
        The downloads in the order the user listed them (later wins ties).

    Call :meth:`observe` with every batch of every file, then :meth:`decide`
    once; :meth:`keep` then says which rows of a batch stay.
    """

    def __init__(self, request_ids: list[int], *, merging: bool | str = False) -> None:
        self._order = {rid: n for n, rid in enumerate(request_ids)}
        #: For a Delta merge (not ``dedupe``): its errors say what a merge needs.
        self.merging = merging
        self._lock = threading.Lock()
        self._seen: list[pa.Table] = []
        self._winners: dict[int, pa.Array] | None = None
        #: Records seen in more than one download (known after :meth:`decide`).
        self.repeated_records = 0
        #: Rows without an ``id``, per request id (they are never merged away).
        self.idless_rows: dict[int, int] = {}
        #: After :meth:`decide`: one row per record, ``id``, ``download`` (its
        #: place in ``request_ids``) and ``when`` (its newest ``dateUpdated``).
        self.winners: pa.Table = _empty()

    def observe(self, file: ResultFile, batch: pa.RecordBatch) -> None:
        """Note the ids and dates of one batch of ``file`` (as read, before typing)."""
        ids, when = _identity(file, batch, merging=self.merging)
        present = pc.is_valid(ids)
        table = pa.table({"id": ids, "when": when}).filter(present)
        # A flat view repeats a record on many rows: keep one line per id early.
        table = table.group_by("id").aggregate([("when", "max")])
        order = pa.array([self._order[file.request_id]] * table.num_rows, pa.int32())
        with self._lock:  # files are read side by side
            if ids.null_count:
                self.idless_rows[file.request_id] = (
                    self.idless_rows.get(file.request_id, 0) + ids.null_count
                )
            self._seen.append(table.append_column("download", order))

    def seen(self) -> tuple[pa.Table, int]:
        """What :meth:`observe` noted of one file (``id``, newest ``when``), and its id-less rows.

        For a file observed elsewhere (a dask worker): :meth:`include` adds it here.
        """
        seen = pa.concat_tables(self._seen) if self._seen else _empty()
        seen = seen.group_by("id").aggregate([("when_max", "max")])
        seen = pa.table({"id": seen["id"], "when_max": seen["when_max_max"]})
        return seen, sum(self.idless_rows.values())

    def include(self, file: ResultFile, seen: pa.Table, idless: int) -> None:
        """Add what another process's :meth:`seen` gave for ``file``."""
        order = pa.array([self._order[file.request_id]] * seen.num_rows, pa.int32())
        with self._lock:
            if idless:
                self.idless_rows[file.request_id] = (
                    self.idless_rows.get(file.request_id, 0) + idless
                )
            self._seen.append(seen.select(["id", "when_max"]).append_column("download", order))

    def winners_of(self, request_id: int) -> pa.Array:
        """The ids whose newest copy is in download ``request_id`` (after :meth:`decide`)."""
        if self._winners is None:
            raise RuntimeError("decide() first")
        return self._winners[self._order[request_id]]

    def decide(self) -> None:
        """Pick every record's winning download (newest date, then the later download)."""
        seen = pa.concat_tables(self._seen) if self._seen else _empty()
        self._seen = []
        copies = seen.group_by(["id", "download"]).aggregate([("when_max", "max")])
        copies = copies.select(["id", "download", "when_max_max"])
        copies = copies.rename_columns(["id", "download", "when"])
        winners = newest_per_id(copies, tiebreak="download")
        self.repeated_records = copies.num_rows - winners.num_rows
        self.winners = winners
        self._winners = {}
        for download in set(self._order.values()):
            chosen = winners.filter(pc.equal(winners["download"], download))["id"]
            self._winners[download] = chosen.combine_chunks()

    def keep(self, file: ResultFile, batch: pa.RecordBatch) -> pa.Array:
        """Which rows of ``batch`` belong to winning copies (rows without an id stay)."""
        if self._winners is None:
            raise RuntimeError("decide() first")
        ids, _ = _identity(file, batch, dates=False, merging=self.merging)
        winning = self._winners[self._order[file.request_id]]
        return pc.or_(pc.is_in(ids, value_set=winning), pc.is_null(ids))


def _identity(
    file: ResultFile, batch: pa.RecordBatch, *, dates: bool = True, merging: bool | str = False
) -> tuple[pa.Array, pa.Array]:
    """The batch's ids as text and its dates as UTC timestamps.

    ``merging``: ``True`` for a Delta merge, or the name of another merger
    (``"the dlt source"``); a missing column's error says what that one needs.
    """
    names = batch.schema.names
    missing = [c for c in (ID_COLUMN, UPDATED_COLUMN) if c not in names]
    if missing:
        if merging is True:
            what = "Merging into a Delta table"
            otherwise = "or write with mode='append' (merge --mode append), which keeps every row"
        elif merging:
            what = f"Merging with {merging}"
            otherwise = "or load it with load_tables or to_parquet(tables=True), which need neither"
        else:
            what, otherwise = "dedupe=True (--dedupe)", "or load without dedupe"
        raise ColumnNotFound(
            f"{what} needs the columns {ID_COLUMN!r} and {UPDATED_COLUMN!r} in every file (they "
            f"tell a record's copies apart and which is newest), and {file.name} (request "
            f"{file.request_id}) has no {missing[0]!r}. Download with a view that includes "
            f"them, {otherwise}."
        )
    ids = record_ids(batch.column(ID_COLUMN))
    if not dates:
        return ids, ids
    return ids, record_dates(
        batch.column(UPDATED_COLUMN), f"{file.name} (request {file.request_id})"
    )


def record_ids(values: pa.Array) -> pa.Array:
    """Record ids as text, however the file typed them (ids are opaque strings)."""
    return values if pa.types.is_string(values.type) else pc.cast(values, pa.string())


def record_dates(values: pa.Array, what: str) -> pa.Array:
    """``dateUpdated`` values (text or timestamps) as UTC timestamps, oldest for none.

    ``what`` names where they come from in a :class:`ParseError`.
    """
    dates = _timestamps(values, what)
    return pc.fill_null(dates, pa.scalar(_OLDEST, _WHEN))


def _timestamps(values: pa.Array, what: str) -> pa.Array:
    """``dateUpdated`` as UTC timestamps; a value that is no date is a :class:`ParseError`."""
    if pa.types.is_timestamp(values.type):
        typed = values if values.type.tz else pc.assume_timezone(values, "UTC")
        return pc.cast(typed, _WHEN)
    if pa.types.is_null(values.type):
        return pa.nulls(len(values), _WHEN)
    text = pc.cast(values, pa.string())
    text = pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.string()), text)
    try:  # ISO 8601, as Datafiniti writes them; without a zone, UTC
        return timestamp_from_text(text, _WHEN)
    except pa.ArrowInvalid:
        pass
    bad = _first_unparsed(text)
    raise ParseError(
        f"Merging orders copies of a record by {UPDATED_COLUMN!r}, and {what} has {bad!r} "
        "there, which is not a date. Load without dedupe and check that column.",
        file=what,
    )


def _first_unparsed(text: pa.Array) -> str:
    for value in text.to_pylist():
        if value is None:
            continue
        try:
            timestamp_from_text(pa.array([value]), _WHEN)
        except pa.ArrowInvalid:
            return str(value)[:60]
    return "?"


def newest_per_id(copies: pa.Table, *, tiebreak: str) -> pa.Table:
    """One row of ``copies`` per ``id``: the newest ``when``, ties to the highest ``tiebreak``."""
    ranked = copies.sort_by([("id", "ascending"), ("when", "descending"), (tiebreak, "descending")])
    ids = ranked["id"].combine_chunks()
    if len(ids) == 0:
        return ranked
    # The first row of each run of equal ids: where an id differs from the one before.
    first = pa.concat_arrays(
        [pa.array([True]), pc.not_equal(ids.slice(1), ids.slice(0, len(ids) - 1))]
    )
    return ranked.filter(first)


def _empty() -> pa.Table:
    return pa.table(
        {
            "id": pa.array([], pa.string()),
            "when_max": pa.array([], _WHEN),
            "download": pa.array([], pa.int32()),
        }
    )
