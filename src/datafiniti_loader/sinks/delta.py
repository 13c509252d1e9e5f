"""Sink: downloads merged into a Delta Lake table that lives on across downloads.

Datafiniti deletes result files after seven days and customers pull updates
again and again; a Delta table (through ``deltalake``, delta-rs) keeps every
record's newest copy with ACID commits, history and time travel, readable by
pandas, polars, DuckDB, Spark and Trino.

``mode="merge"`` applies the newest-copy rule of ``dedupe`` across the table
and the downloads: a record's copy wins on its newest ``dateUpdated``, ties
going to the newer download (the higher request id), so the table does not
depend on the order downloads were merged in. A winning copy replaces every
row the table has for that record, in one commit: the table's data files that
hold a replaced record are written again without its rows, the winning copies
go to new files, and one transaction removes the old files and adds the new.
Commits carry the request ids they merged, so merging a request again is
recognised without downloading anything, and ``history()`` tells where each
version came from. The decision needs only ``(id, dateUpdated, request)`` per
record (of the table and of the downloads), never the rows, and the files are
written a row group at a time: memory stays bounded. (delta-rs's own MERGE
holds the table side of its join in memory: 1.3 GB for a 1 GB table.)
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .._version import __version__
from ..errors import DatafinitiError, StorageError, TableConflict
from ..loader import LoadSource, RowCounter, data_schema, log_summary, with_provenance
from .deltafiles import DataFiles, create_table, rewritten
from .deltaplan import against_table, delta_types, plan_write, rows_to_write
from .deltarules import check_adds_only, check_writable
from .prefetch import prefetched

if TYPE_CHECKING:
    import pyarrow as pa
    from deltalake import DeltaTable

__all__ = [
    "COMMIT_KEY",
    "DELTA_MODES",
    "DeltaSummary",
    "Noted",
    "api_host",
    "commit_about",
    "commit_write",
    "committing",
    "history",
    "keep_append_only",
    "merged_requests",
    "note_version",
    "open_table",
    "require_deltalake",
    "shown_path",
    "table_notes",
    "write_delta",
]

logger = logging.getLogger("datafiniti_loader")

DELTA_MODES = ("merge", "append", "overwrite")
#: More commit metadata, from the downloads once read (a sync's query and mark).
Noted = Callable[[LoadSource], dict[str, Any]]
#: Commit metadata key: what each commit of this library merged.
COMMIT_KEY = "datafiniti_loader"


@dataclass(frozen=True)
class DeltaSummary:
    """What :func:`~datafiniti_loader.to_delta` did; its ``repr`` says it in one line.

    Attributes
    ----------
    path : str
        The table (absolute for a local path).
    version : int
        The table's version after the write (unchanged when nothing was committed).
    committed : bool
        False when nothing changed: the requests were merged before, or no
        copy was newer than the table's.
    rows_inserted : int
    records_added : int
        Records the table did not have.
    records_replaced : int
        Records whose rows were all replaced by a newer copy.
    records_unchanged : int
        Records whose copy in the downloads was not newer than the table's.
    requests : tuple of int
        The requests written.
    merged_before : bool
        Every request was merged before: nothing was downloaded or written.
    """

    path: str
    version: int
    committed: bool
    mode: str
    rows_inserted: int = 0
    records_added: int = 0
    records_replaced: int = 0
    records_unchanged: int = 0
    requests: tuple[int, ...] = ()
    note: str = ""
    #: True when every request was merged before: nothing was downloaded or written.
    merged_before: bool = False

    @classmethod
    def already_merged(
        cls, path: str, version: int, mode: str, requests: Sequence[int]
    ) -> DeltaSummary:
        """The summary of a write whose requests the table holds already."""
        listed = ", ".join(map(str, requests))
        note = f"request(s) {listed} already merged"
        return cls(
            path, version, False, mode, requests=tuple(requests), note=note, merged_before=True
        )

    def describe(self) -> str:
        """One line for people: what changed, or why nothing did."""
        what = ", ".join(map(str, self.requests))
        if not self.committed:
            return f"no new version of {self.path} (still version {self.version}): {self.note}"
        return (
            f"version {self.version} of {self.path}: {self.mode} of request(s) {what}: "
            f"{self.rows_inserted:,} rows inserted, {self.records_added:,} records added, "
            f"{self.records_replaced:,} replaced, {self.records_unchanged:,} unchanged"
            + (f" ({self.note})" if self.note else "")
        )

    def __repr__(self) -> str:
        return f"DeltaSummary({self.describe()})"

    def _repr_html_(self) -> str:
        from ..display import summary_html

        return summary_html(
            [
                ("table", self.path),
                ("version", f"{self.version}{'' if self.committed else ' (unchanged)'}"),
                ("mode", self.mode),
                ("requests", ", ".join(map(str, self.requests))),
                ("rows inserted", f"{self.rows_inserted:,}"),
                ("records added", f"{self.records_added:,}"),
                ("records replaced", f"{self.records_replaced:,}"),
                ("records unchanged", f"{self.records_unchanged:,}"),
                *([("note", self.note)] if self.note else []),
            ]
        )


def write_delta(
    source: LoadSource,
    path: str,
    *,
    mode: str = "merge",
    storage_options: dict[str, str] | None = None,
    noted: Noted | None = None,
) -> DeltaSummary:
    """Write ``source`` into the Delta table at ``path`` (see :func:`.api.to_delta`).

    ``noted(source)``, once the downloads are read, gives more commit
    metadata (a sync's query and mark) to record with the write.

    Every mode writes its own Parquet files into the table's directory, a row
    group at a time, and commits them in one transaction: ``merge`` rewrites
    the table's files that hold a replaced record (without its rows) and
    adds the winning copies; a schema change (a new column, a column turned to
    text) writes every file again, as Delta takes a new schema only then.
    """
    require_deltalake()
    shown = shown_path(path)
    table = open_table(path, storage_options)
    partition_by: list[str] = []
    if table is not None:
        check_writable(table, shown)  # before anything is downloaded or written
        partition_by = list(table.metadata().partition_columns)
    requests = tuple(source.request_ids)
    api_url = source.client.api_url
    merged_before = (
        merged_requests(table, api_url) if table is not None and mode == "merge" else set()
    )
    if table is not None and mode == "merge" and set(requests) <= merged_before:
        return DeltaSummary.already_merged(shown, table.version(), mode, requests)
    scan = source.scan(keep=False)
    schema = delta_types(with_provenance(data_schema(scan.builder, None, True, source.dtypes)))
    plan = plan_write(source, table)
    if table is not None and mode == "merge" and not plan.any_rows(source.newest, merged_before):
        return DeltaSummary(
            shown, table.version(), False, mode, 0, 0, 0, plan.unchanged, requests,
            note="no copy is newer than the table's",
        )  # fmt: skip
    changed: list[str] = []
    if table is not None and mode != "overwrite":
        schema, changed = against_table(schema, table)
    if table is not None:
        keep_append_only(table, shown, mode, changed, plan.replaced)
    logger.info(
        "%s into %s: %d record(s) new, %d newer than the table's, %d not newer",
        mode, shown, plan.added, plan.replaced, plan.unchanged,
    )  # fmt: skip
    files = DataFiles(path, storage_options, partition_by)
    try:  # a failure anywhere (a bad value, Ctrl-C, a lost race) leaves none of our files
        actions: list[Any] = []
        if table is not None and mode != "overwrite":
            if changed:  # Delta takes a new schema only with a rewrite: every file, one commit
                logger.info(
                    "the table's schema changes (%s): every data file is written again", changed
                )
            actions += rewritten(table, files, plan.existing_ids, schema, every=bool(changed))
        keep = plan.replace_ids if mode == "merge" else None
        rows = rows_to_write(source, schema, keep=keep, merged_before=merged_before)
        with contextlib.closing(prefetched(rows)) as made:  # made while the writer encodes
            counter = RowCounter(made)
            actions += files.write(iter(counter), schema)
        about = commit_about(
            requests, api_url, mode, rows_inserted=counter.rows, records_added=plan.added,
            records_replaced=plan.replaced, schema_changed=changed,
        )  # fmt: skip
        about.update(noted(source) if noted is not None else {})
        how = "overwrite" if mode == "overwrite" or changed else "append"
        commit = committing(table, path, schema, actions, how, partition_by, storage_options)
        commit_write(files, about, shown, commit)
    except BaseException:
        files.discard()
        raise
    log_summary(source, counter.rows, len(schema), target=shown)
    version = 0 if table is None else table.version() + 1
    return DeltaSummary(
        shown, version, True, mode, counter.rows, plan.added, plan.replaced, plan.unchanged,
        requests,
    )  # fmt: skip


def keep_append_only(
    table: DeltaTable, shown: str, mode: str, changed: list[str], replaced: int
) -> None:
    """Refuse, on an append-only table, a write that would remove any of its files."""
    why = ""
    if mode == "overwrite":
        why = "replace every file"
    elif changed:
        why = f"change its schema ({', '.join(changed)}), which writes every file again"
    elif mode == "merge" and replaced:
        why = f"replace the rows of {replaced:,} record(s) with newer copies"
    if why:
        check_adds_only(table, shown, why)


def api_host(api_url: str) -> str:
    """The API a request id belongs to: its URL's host and port (``api.datafiniti.co``)."""
    return urlsplit(api_url).netloc.rpartition("@")[2].lower()


def commit_about(requests: Sequence[int], api_url: str, mode: str, **more: Any) -> dict[str, Any]:
    """The commit metadata of this library: the requests written, the API they came from, more.

    Request ids are only unique within one API: two sandboxes (or Datafiniti
    and a test stand-in) both have a request 6073, and a table must not take
    the second for the first.
    """
    return {"request_ids": list(requests), "api": api_host(api_url), "library": __version__,
            "mode": mode, **more}  # fmt: skip


def merged_requests(table: DeltaTable, api_url: str) -> set[int]:
    """The request ids of ``api_url``'s API the table's current contents were merged from.

    Commits are read newest first, up to and including the last overwrite:
    what was merged before an overwrite is gone. Commits that name no API
    (written before this library recorded it) count for every API.
    """
    found: set[int] = set()
    host = api_host(api_url)
    for commit in table.history():
        about = _about(commit)
        if about.get("api") in (None, host):
            found.update(about.get("request_ids", []))
        mode = str((commit.get("operationParameters") or {}).get("mode", "")).lower()
        if commit.get("operation") in ("WRITE", "CREATE TABLE") and mode == "overwrite":
            break
    return found


def history(path: str, storage_options: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The table's versions, newest first: operation, time (UTC), requests merged, rows inserted."""
    require_deltalake()  # without the extra: an ImportError naming it, not deltalake's own
    table = open_table(path, storage_options)
    if table is None:
        raise DatafinitiError(f"There is no Delta table at {shown_path(path)}.")
    out = []
    for commit in table.history():
        about = _about(commit)
        metrics = commit.get("operationMetrics") or {}
        rows = about.get("rows_inserted")
        if rows is None:  # a commit of another writer: Delta's own count
            rows = metrics.get("num_target_rows_inserted", metrics.get("num_added_rows"))
        out.append(
            {
                "version": commit.get("version"),
                "timestamp": _when(commit.get("timestamp")),
                # This library's commits say what they did (merge, append, overwrite).
                "operation": str(about.get("mode") or commit.get("operation") or "").upper(),
                "request_ids": about.get("request_ids", []),
                "rows_inserted": rows,
                "library": about.get("library"),
                # A sync's commits name its query and the newest dateUpdated merged so far.
                "query": (about.get("sync") or {}).get("query"),
                "mark": (about.get("sync") or {}).get("mark"),
            }
        )
    return out


def table_notes(table: DeltaTable) -> list[dict[str, Any]]:
    """What this library recorded in each commit, newest first."""
    return [_about(c) for c in table.history()]


def note_version(path: str, about: dict[str, Any], storage_options: dict[str, str] | None) -> int:
    """Commit ``about`` with no data change (a sync's mark moving); the new version.

    For a sync that bought records the table already held: without the
    commit its mark would stay, and the next sync would buy them again.
    """
    table = open_table(path, storage_options)
    if table is None:
        raise DatafinitiError(f"There is no Delta table at {shown_path(path)}.")
    import pyarrow as pa

    schema = pa.schema(table.schema().to_arrow())
    partition_by = list(table.metadata().partition_columns)
    commit = committing(table, path, schema, [], "append", partition_by, storage_options)
    commit_write(DataFiles(path, storage_options, partition_by), about, shown_path(path), commit)
    return table.version() + 1


def _when(millis: Any) -> datetime | None:
    """A commit's time (Delta keeps epoch milliseconds) as an aware UTC datetime."""
    if not isinstance(millis, int | float):
        return None
    return datetime.fromtimestamp(millis / 1000, UTC)


def _about(commit: dict[str, Any]) -> dict[str, Any]:
    """What this library recorded in a commit (empty for commits of other writers)."""
    raw = commit.get(COMMIT_KEY)
    try:
        about = json.loads(raw) if isinstance(raw, str) else {}
        about["request_ids"] = [int(r) for r in about.get("request_ids", [])]
    except (ValueError, TypeError, AttributeError):
        return {}
    return about if isinstance(about, dict) else {}


def committing(
    table: DeltaTable | None,
    path: str,
    schema: pa.Schema,
    actions: list[Any],
    how: str,
    partition_by: list[str],
    storage_options: dict[str, str] | None,
) -> Callable[[Any], None]:
    """The commit of ``actions``: a new table at ``path``, or a transaction on ``table``."""

    def commit(props: Any) -> None:
        if table is None:
            create_table(path, schema, actions, storage_options, props)
        else:
            table.create_write_transaction(
                actions, how, schema, partition_by=partition_by or None, commit_properties=props
            )

    return commit


def commit_write(files: DataFiles, about: dict[str, Any], shown: str, write: Any) -> None:
    """Commit with this library's metadata; on any failure remove the files written for it.

    The commit never retries past another writer's commit: a lost race is a
    :class:`TableConflict`, and the table is as the other writer left it.
    """
    from deltalake import CommitProperties
    from deltalake.exceptions import CommitFailedError, DeltaError

    props = CommitProperties(custom_metadata={COMMIT_KEY: json.dumps(about)}, max_commit_retries=0)
    failure = ""
    try:
        write(props)
        return
    except CommitFailedError as exc:
        failure = str(exc)[:200]
    except DeltaError as exc:
        failure = str(exc)[:300]
        if "already exists" not in failure.lower() and "version" not in failure.lower():
            files.discard()
            raise StorageError(f"Could not write the Delta table at {shown}: {failure}") from None
    except BaseException:
        files.discard()
        raise
    files.discard()
    raise TableConflict(
        f"Another writer committed to the Delta table at {shown} while this write ran "
        f"({failure}); nothing of this write was committed and the table is intact. Run it "
        "again: it will merge against the new version."
    )


def open_table(path: str, storage_options: dict[str, str] | None) -> DeltaTable | None:
    """The Delta table at ``path``, or ``None`` where there is none yet."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        return DeltaTable(path, storage_options=storage_options)
    except TableNotFoundError:
        return None


def require_deltalake() -> Any:
    """The ``deltalake`` module, or an ImportError naming the extra that installs it."""
    try:
        import deltalake
    except ImportError:
        raise ImportError(
            "Delta tables need deltalake: pip install 'datafiniti-loader[delta]'"
        ) from None
    return deltalake


def shown_path(path: str) -> str:
    """``path`` as messages show it: absolute when local."""
    return os.path.abspath(path) if "://" not in str(path) else str(path)
