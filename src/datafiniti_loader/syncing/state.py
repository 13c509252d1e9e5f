"""What a synced path remembers: whose query it is, how far it got, and a download in flight.

Two records, kept where the table is (any fsspec path):

- the table's own commits. Each commit a sync makes carries, in this
  library's commit metadata, the query it was synced with (text, data type,
  format, view, tables) and the mark: the newest ``dateUpdated`` merged. The
  mark moves in the same commit as the data, so it can never run ahead of it.
- a small journal, ``_datafiniti_sync.json`` beside the table's log (or
  beside the tidy tables), written
  before a download is asked for and given its id as soon as the API answers;
  removed once the download is merged. A sync stopped in between (Ctrl-C
  while waiting, a crash, a lost connection) finds it and goes on with that
  download instead of buying the same records again. Delta readers and
  ``VACUUM`` leave files whose names start with ``_`` alone.
"""

from __future__ import annotations

import contextlib
import json
import logging
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from ..errors import StorageError, SyncMismatch
from ..read.tidy import RECORDS
from ..sinks.delta import open_table, shown_path, table_notes
from ..sinks.deltafiles import table_store

__all__ = [
    "JOURNAL",
    "Journal",
    "Pending",
    "SyncIdentity",
    "TableState",
    "synced_mark",
    "table_state",
]

logger = logging.getLogger(__name__)

JOURNAL = "_datafiniti_sync.json"


@dataclass(frozen=True)
class SyncIdentity:
    """What makes a synced table one query's: a mark means nothing for another query."""

    query: str
    data_type: str
    format: str
    view: str | None
    tables: bool

    def differences(self, other: SyncIdentity) -> list[str]:
        """``name: theirs -> ours`` for each setting that differs."""
        mine, theirs = asdict(self), asdict(other)
        return [f"{k} {theirs[k]!r} (now {mine[k]!r})" for k in mine if mine[k] != theirs[k]]

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> SyncIdentity:
        """An identity as a commit, a journal or dlt's state recorded it."""
        return cls(
            str(raw.get("query")),
            str(raw.get("data_type")),
            str(raw.get("format")),
            raw.get("view"),
            bool(raw.get("tables")),
        )


@dataclass(frozen=True)
class TableState:
    """A synced table: its identity, mark and version (``mark`` None: nothing merged yet)."""

    identity: SyncIdentity
    mark: str | None
    version: int


def table_state(
    path: str, identity: SyncIdentity, storage_options: dict[str, str] | None
) -> TableState | None:
    """The table a sync at ``path`` continues, or ``None`` for a first sync.

    Raises
    ------
    SyncMismatch
        The path holds a table synced with other settings, a table this
        library did not sync, or tidy tables where a flat table is asked (or
        the other way round).
    """
    root = str(path).rstrip("/")
    shown = shown_path(root)
    flat = open_table(root, storage_options)
    records = open_table(f"{root}/{RECORDS}", storage_options)
    if flat is not None and identity.tables:
        raise SyncMismatch(
            f"{shown} is one Delta table, not a directory of tidy tables: sync it without "
            "tables=True (--tables), or sync into a new path."
        )
    if records is not None and not identity.tables:
        raise SyncMismatch(
            f"{shown} holds tidy tables (records, ...): sync it with tables=True (--tables), "
            "or sync into a new path."
        )
    table = records if identity.tables else flat
    if table is None:
        return None
    synced = _latest_sync(table)
    if synced is None:
        raise SyncMismatch(
            f"{shown} holds a Delta table that no sync made, so nothing says which of its "
            "records are current. Sync into a new path (to_delta merges downloads into this one)."
        )
    theirs = SyncIdentity.from_json(synced)
    if theirs != identity:
        raise SyncMismatch(
            f"{shown} is kept current from another query: "
            f"{'; '.join(identity.differences(theirs))}. A synced table is one "
            "query's; sync this one into a new path."
        )
    return TableState(theirs, synced.get("mark"), table.version())


def synced_mark(path: str, tables: bool, storage_options: dict[str, str] | None) -> str | None:
    """The mark of the latest sync of ``path`` (``None``: none yet), whatever its query."""
    root = str(path).rstrip("/")
    table = open_table(f"{root}/{RECORDS}" if tables else root, storage_options)
    synced = _latest_sync(table) if table is not None else None
    mark = synced.get("mark") if synced is not None else None
    return str(mark) if mark is not None else None


def _latest_sync(table: Any) -> dict[str, Any] | None:
    """What the newest commit of a sync recorded (query settings and mark), if any."""
    for about in table_notes(table):  # newest first
        if isinstance(about.get("sync"), dict):
            synced: dict[str, Any] = about["sync"]
            return synced
    return None


@dataclass(frozen=True)
class Pending:
    """A download a sync asked for and has not merged yet (``request_id`` None: no answer)."""

    identity: SyncIdentity
    asked: str  # the query sent, with its dateUpdated clause
    records: int  # what was counted (v4) or allowed (v3) when it was asked for
    previous_mark: str | None
    asked_at: str
    request_id: int | None = None

    def to_json(self) -> dict[str, Any]:
        """The journal's content (no token, no URL)."""
        return {**asdict(self), "identity": asdict(self.identity)}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Pending:
        """The journal read back; a malformed one raises ``ValueError``/``TypeError``."""
        rid = raw.get("request_id")
        return cls(
            SyncIdentity.from_json(raw["identity"]),
            str(raw["asked"]),
            int(raw["records"]),
            raw.get("previous_mark"),
            str(raw["asked_at"]),
            None if rid is None else int(rid),
        )

    @classmethod
    def asking(
        cls, identity: SyncIdentity, asked: str, records: int, previous_mark: str | None
    ) -> Pending:
        """The entry written just before a download is asked for."""
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return cls(identity, asked, records, previous_mark, now)


class Journal:
    """The journal of a synced path, kept through delta-rs's storage like the table's files.

    The same ``storage_options`` reach the same store as the table's own
    commits (an object store's keys, endpoint and region, as deltalake takes them).
    """

    def __init__(self, path: str, storage_options: dict[str, str] | None) -> None:
        self._root = str(path).rstrip("/")
        self._options = storage_options
        self._handler: Any = None
        self.shown = shown_path(f"{self._root}/{JOURNAL}")

    @classmethod
    def in_directory(cls, directory: Path) -> Journal:
        """A journal in a local directory (made if missing), kept without deltalake.

        For runs that keep no Delta table: the dlt source keeps its journal in
        the pipeline's working directory.
        """
        import pyarrow.fs as pafs

        directory.mkdir(parents=True, exist_ok=True)
        journal = cls(str(directory), None)
        journal._handler = pafs.SubTreeFileSystem(str(directory), pafs.LocalFileSystem())
        return journal

    @property
    def _fs(self) -> Any:
        if self._handler is None:
            self._handler = table_store(self._root, self._options)[0]
        return self._handler

    def read(self) -> Pending | None:
        """The download in flight, if any."""
        import pyarrow.fs as pafs

        try:
            if self._fs.get_file_info(JOURNAL).type == pafs.FileType.NotFound:
                return None
            with self._fs.open_input_stream(JOURNAL) as handle:
                raw = json.loads(handle.read())
            return Pending.from_json(raw)
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise StorageError(
                f"The sync journal {self.shown} cannot be read ({type(exc).__name__}). It names "
                "a download an earlier sync asked for: look at it, then remove it by hand."
            ) from None

    def write(self, pending: Pending, *, then: str) -> None:
        """Record ``pending``, whole or not at all (written aside, then moved into place).

        ``then`` says, in an error, where that leaves the sync.
        """
        body = json.dumps(pending.to_json(), indent=1).encode()
        aside = f"_datafiniti_sync.{uuid.uuid4().hex}.tmp"
        try:
            # Buffered: delta-rs's stream takes bytes, which only Arrow's buffered writer hands it.
            with pa.BufferedOutputStream(self._fs.open_output_stream(aside), 1 << 16) as handle:
                handle.write(body)
            self._fs.move(aside, JOURNAL)
        except OSError as exc:
            raise StorageError(
                f"Could not write the sync journal {self.shown} ({exc.strerror or exc}); {then}"
            ) from None

    def remove(self) -> None:
        """Forget the download in flight (merged, or given up)."""
        with contextlib.suppress(FileNotFoundError):
            self._fs.delete_file(JOURNAL)
