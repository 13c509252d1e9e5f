"""Sink: downloads merged into a Delta Lake table that lives on across downloads.

Datafiniti deletes result files after seven days and customers pull updates
again and again; a Delta table (through ``deltalake``, delta-rs) keeps every
record's newest copy with ACID commits, history and time travel, readable by
pandas, polars, DuckDB, Spark and Trino.

``mode="merge"`` applies the newest-copy rule of ``dedupe`` across the table
and the downloads: a record's copy wins on its newest ``dateUpdated``, ties
going to the newer download (the higher request id), so the table does not
depend on the order downloads were merged in. A winning copy replaces every
row the table has for that record, in one commit: a Delta MERGE whose source
is one delete marker per replaced record followed by the new rows. Commits
carry the request ids they merged, so merging a request again is recognised
without downloading anything, and ``history()`` tells where each version
came from. The decision needs only ``(id, dateUpdated, request)`` per record
(of the table and of the downloads), never the rows: memory stays bounded.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from ._version import __version__
from .dedupe import ID_COLUMN, UPDATED_COLUMN, record_dates, record_ids, starts_of_runs
from .errors import ColumnNotFound, DatafinitiError, StorageError, TableConflict
from .loader import (
    LoadSource,
    RowCounter,
    data_schema,
    log_summary,
    typed_batches,
    with_provenance,
)
from .parquet import write_row_groups
from .schema import PROVENANCE_SCHEMA, conform, release_arrow_memory

if TYPE_CHECKING:
    from deltalake import DeltaTable

__all__ = ["DELTA_MODES", "DeltaSummary", "history", "merged_requests", "write_delta"]

logger = logging.getLogger("datafiniti_loader")

DELTA_MODES = ("merge", "append", "overwrite")
#: Commit metadata key: what each commit of this library merged.
COMMIT_KEY = "datafiniti_loader"
_OP, _KEY = "_dfl_op", "_dfl_key"  # columns of the merge source only, never of the table
_MARKERS_PER_BATCH = 65_536


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

    def describe(self) -> str:
        """One line for people: what changed, or why nothing did."""
        what = ", ".join(map(str, self.requests))
        if not self.committed:
            return f"no new version of {self.path} (still version {self.version}): {self.note}"
        return (
            f"version {self.version} of {self.path}: {self.mode} of request(s) {what}: "
            f"{self.rows_inserted:,} rows inserted, {self.records_added:,} records added, "
            f"{self.records_replaced:,} replaced, {self.records_unchanged:,} unchanged"
        )

    def __repr__(self) -> str:
        return f"DeltaSummary({self.describe()})"

    def _repr_html_(self) -> str:
        from .display import summary_html

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
) -> DeltaSummary:
    """Write ``source`` into the Delta table at ``path`` (see :func:`.api.to_delta`).

    Every mode writes its own Parquet files into the table's directory, a row
    group at a time, and commits them in one transaction: ``merge`` rewrites
    the table's files that hold a replaced record (without its rows) and
    adds the winning copies; a schema change (a new column, a column turned to
    text) writes every file again, as Delta takes a new schema only then.
    """
    _deltalake()
    shown = _shown(path)
    table = _open(path, storage_options)
    requests = tuple(source.request_ids)
    merged_before = merged_requests(table) if table is not None and mode == "merge" else set()
    if table is not None and mode == "merge" and set(requests) <= merged_before:
        note = f"request(s) {', '.join(map(str, requests))} already merged"
        return DeltaSummary(shown, table.version(), False, mode, requests=requests, note=note)
    scan = source.scan(keep=False)
    schema = _delta_types(with_provenance(data_schema(scan.builder, None, True, source.dtypes)))
    plan = _plan(source, table)
    if table is not None and mode == "merge" and not plan.any_rows(source, merged_before):
        return DeltaSummary(
            shown, table.version(), False, mode, 0, 0, 0, plan.unchanged, requests,
            note="no copy is newer than the table's",
        )  # fmt: skip
    changed: list[str] = []
    if table is not None and mode != "overwrite":
        schema, changed = _against_table(schema, table)
    logger.info(
        "%s into %s: %d record(s) new, %d newer than the table's, %d not newer",
        mode, shown, plan.added, plan.replaced, plan.unchanged,
    )  # fmt: skip
    files = _DataFiles(path, storage_options)
    try:  # a failure anywhere (a bad value, Ctrl-C, a lost race) leaves none of our files
        actions: list[Any] = []
        if table is not None and mode != "overwrite":
            if changed:  # Delta takes a new schema only with a rewrite: every file, one commit
                logger.info(
                    "the table's schema changes (%s): every data file is written again", changed
                )
            actions += _rewritten(table, files, plan.existing_ids, schema, every=bool(changed))
        keep = plan.replace_ids if mode == "merge" else None
        counter = RowCounter(_rows(source, schema, keep=keep, merged_before=merged_before))
        actions += files.write(iter(counter), schema)
        about = {"request_ids": list(requests), "library": __version__, "mode": mode,
                 "rows_inserted": counter.rows, "records_added": plan.added,
                 "records_replaced": plan.replaced, "schema_changed": changed}  # fmt: skip
        how = "overwrite" if mode == "overwrite" or changed else "append"

        def commit(props: Any) -> None:
            if table is None:
                _create(path, schema, actions, storage_options, props)
            else:
                table.create_write_transaction(actions, how, schema, commit_properties=props)

        _commit(files, about, shown, commit)
    except BaseException:
        files.discard()
        raise
    log_summary(source, counter.rows, len(schema), target=shown)
    version = 0 if table is None else table.version() + 1
    return DeltaSummary(
        shown, version, True, mode, counter.rows, plan.added, plan.replaced, plan.unchanged,
        requests,
    )  # fmt: skip


def _rewritten(
    table: DeltaTable, files: _DataFiles, drop: pa.Array, schema: pa.Schema, *, every: bool
) -> list[Any]:
    """The table's files holding a record in ``drop`` (all when ``every``), written again.

    Returns the actions: the new files, and the removal of the old ones
    (unless ``every``: the overwrite that commits them removes every old file).
    """
    actions: list[Any] = []
    for old in _files_holding(table, files, drop, every=every):
        actions += files.write(_without(files.read(old.path), drop, schema), schema)
        if not every:
            actions.append(_removal(old))
    return actions


#: Arrow bytes per data file (Parquet compresses them several times).
_FILE_BYTES = 256 * 1024 * 1024


class _Batches:
    """Batches handed out file by file: up to a number of bytes each time."""

    def __init__(self, batches: Iterator[pa.RecordBatch]) -> None:
        self._batches = batches
        self._next: pa.RecordBatch | None = next(batches, None)

    def has_more(self) -> bool:
        return self._next is not None

    def up_to(self, limit: int) -> Iterator[pa.RecordBatch]:
        """The next batches, stopping once ``limit`` bytes have gone (at least one batch)."""
        sent = 0
        while self._next is not None and (sent == 0 or sent < limit):
            batch, self._next = self._next, None
            sent += batch.nbytes
            yield batch
            self._next = next(self._batches, None)


class _DataFiles:
    """Parquet data files written into the table's directory, for one transaction to add.

    Files are written through delta-rs's own storage handler, so a table on
    an object store takes the same ``storage_options``. Until the commit they
    are invisible to readers; if the commit fails they are deleted (they are
    this write's own).
    """

    def __init__(self, path: str, storage_options: dict[str, str] | None) -> None:
        self._path = str(path)
        self._options = storage_options
        self._made_dir = False
        self._handler: Any = None
        self.written: list[str] = []

    @property
    def _fs(self) -> Any:
        """The table's storage (a new local table's directory is made on first use)."""
        if self._handler is None:
            import pyarrow.fs as pafs
            from deltalake.fs import DeltaStorageHandler

            if "://" not in self._path and not os.path.isdir(self._path):
                os.makedirs(self._path)
                self._made_dir = True
            self._handler = pafs.PyFileSystem(DeltaStorageHandler(self._path, self._options))
        return self._handler

    def write(self, batches: Iterator[pa.RecordBatch], schema: pa.Schema) -> list[Any]:
        """New data files of ``batches``, a new one every ~256 MB of Arrow data; their actions.

        Several files of bounded size let a later merge rewrite only the
        files that hold a replaced record, not the whole table.
        """
        from deltalake.transaction import AddAction

        actions = []
        pending = _Batches(batches)
        while pending.has_more():
            name = f"part-{uuid.uuid4()}.parquet"
            self.written.append(name)
            with self._fs.open_output_stream(name) as sink:
                rows = write_row_groups(pending.up_to(_FILE_BYTES), sink, schema)
            size = self._fs.get_file_info(name).size or 0
            stats = json.dumps({"numRecords": rows})
            actions.append(AddAction(name, size, {}, int(time.time() * 1000), True, stats))
        return actions

    def read(self, name: str) -> Iterator[pa.RecordBatch]:
        """A data file of the table, a batch at a time."""
        import pyarrow.parquet as pq

        with self._fs.open_input_file(name) as handle:
            yield from pq.ParquetFile(handle).iter_batches(batch_size=2048, use_threads=False)

    def ids_in(self, name: str) -> pa.Array:
        """The record ids of a data file (one column: small)."""
        import pyarrow.parquet as pq

        with self._fs.open_input_file(name) as handle:
            column = pq.read_table(handle, columns=[ID_COLUMN]).column(0)
        return record_ids(column.combine_chunks())

    def discard(self) -> None:
        """Delete the files this write made (a failed commit)."""
        for name in self.written:
            with contextlib.suppress(OSError):
                self._fs.delete_file(name)
        if self._made_dir:  # the directory this write made, if nothing else is in it
            with contextlib.suppress(OSError):
                os.rmdir(self._path)


def _files_holding(
    table: DeltaTable, files: _DataFiles, ids: pa.Array, *, every: bool
) -> Iterator[Any]:
    """The table's active files that hold any of ``ids`` (all of them when ``every``)."""
    actions = pa.table(table.get_add_actions(flatten=True))
    for name, size in zip(
        actions["path"].to_pylist(), actions["size_bytes"].to_pylist(), strict=True
    ):
        if every or (len(ids) and pc.any(pc.is_in(files.ids_in(name), value_set=ids)).as_py()):
            yield _FileRef(name, int(size))


@dataclass(frozen=True)
class _FileRef:
    path: str
    size: int


def _removal(old: _FileRef) -> Any:
    from deltalake.transaction import RemoveAction

    return RemoveAction(old.path, True, int(time.time() * 1000), old.size, {})


def _without(
    batches: Iterator[pa.RecordBatch], drop: pa.Array, schema: pa.Schema
) -> Iterator[pa.RecordBatch]:
    """``batches`` without the rows of records in ``drop``, in ``schema``."""
    for batch in batches:
        ids = record_ids(batch.column(ID_COLUMN))
        kept = batch.filter(pc.invert(pc.fill_null(pc.is_in(ids, value_set=drop), False)))
        if kept.num_rows:
            yield conform(kept, schema)


def _create(
    path: str, schema: pa.Schema, added: list[Any], storage_options: dict[str, str] | None,
    props: Any,
) -> None:  # fmt: skip
    from deltalake import Schema
    from deltalake.transaction import create_table_with_add_actions

    create_table_with_add_actions(
        str(path), Schema.from_arrow(schema), added, mode="error",
        storage_options=storage_options, commit_properties=props,
    )  # fmt: skip


def _delta_types(schema: pa.Schema) -> pa.Schema:
    """Types as Delta stores them: timestamps in microseconds (their values unchanged)."""
    fields = []
    for f in schema:
        if pa.types.is_timestamp(f.type):
            f = pa.field(f.name, pa.timestamp("us", f.type.tz))
        fields.append(f)
    return pa.schema(fields, metadata=schema.metadata)


_NO_KEYS = pa.table(
    {
        "id": pa.array([], pa.string()),
        "when_t": pa.array([], pa.timestamp("us", "UTC")),
        "request_t": pa.array([], pa.int64()),
    }
)


@dataclass
class _Plan:
    """Which records the downloads bring a newer copy of."""

    replace_ids: pa.Array  # every record whose copy wins: its rows are inserted
    existing_ids: pa.Array  # of those, the ones the table has: their rows are deleted
    added: int
    replaced: int
    unchanged: int

    def any_rows(self, source: LoadSource, merged_before: set[int]) -> bool:
        """Whether anything is to be written: a newer copy, or rows without an id."""
        return self.added + self.replaced > 0 or _has_idless_rows(source, merged_before)


def _plan(source: LoadSource, table: DeltaTable | None) -> _Plan:
    """Which records to write: all of them into no table, the newer copies into a table.

    Without ``dedupe`` (append, overwrite) every row is written: nothing is planned.
    """
    if source.newest is None:
        return _Plan(pa.array([], pa.string()), pa.array([], pa.string()), 0, 0, 0)
    winners = source.newest.winners
    requests = pa.array(source.request_ids, pa.int64())
    mine = pa.table(
        {
            "id": winners["id"],
            "when": winners["when"],
            "request": pc.take(requests, winners["download"]),
        }
    )
    theirs = _table_keys(table) if table is not None else _NO_KEYS
    joined = mine.join(theirs, "id", join_type="left outer", right_suffix="_t")
    known = pc.is_valid(joined["when_t"])
    newer = pc.or_(
        pc.greater(joined["when"], joined["when_t"]),
        pc.and_(
            pc.equal(joined["when"], joined["when_t"]),
            pc.greater(joined["request"], joined["request_t"]),
        ),
    )
    wins = pc.or_(pc.invert(known), pc.fill_null(newer, False))
    replace = joined.filter(wins)
    existing = replace.filter(pc.is_valid(replace["when_t"]))
    return _Plan(
        replace["id"].combine_chunks(),
        existing["id"].combine_chunks(),
        added=replace.num_rows - existing.num_rows,
        replaced=existing.num_rows,
        unchanged=joined.num_rows - replace.num_rows,
    )


def _table_keys(table: DeltaTable) -> pa.Table:
    """Per record of the table: its newest ``dateUpdated`` and the request that brought it."""
    names = table.schema().to_arrow()
    present = set(pa.schema(names).names)
    missing = [c for c in (ID_COLUMN, UPDATED_COLUMN) if c not in present]
    if missing:
        raise ColumnNotFound(
            f"The Delta table has no {missing[0]!r} column, which merging needs to tell "
            "records apart and order their copies. Merge into a table written by to_delta, "
            "or use mode='append'."
        )
    columns = [ID_COLUMN, UPDATED_COLUMN] + (["_request_id"] if "_request_id" in present else [])
    parts = []
    for batch in table.to_pyarrow_dataset().to_batches(columns=columns):
        ids = record_ids(batch.column(ID_COLUMN))
        requests = (
            batch.column("_request_id")
            if "_request_id" in columns
            else pa.array([0] * batch.num_rows, pa.int64())
        )
        part = pa.table(
            {"id": ids, "when": record_dates(batch.column(UPDATED_COLUMN), "the Delta table"),
             "request": requests}
        ).filter(pc.is_valid(ids))  # fmt: skip
        parts.append(part.group_by(["id", "when"]).aggregate([("request", "max")]))
    every = (
        pa.concat_tables(parts).select(["id", "when", "request_max"])
        if parts
        else pa.table({"id": pa.array([], pa.string()),
                       "when": record_dates(pa.array([], pa.string()), "the Delta table"),
                       "request_max": pa.array([], pa.int64())})
    )  # fmt: skip
    every = every.rename_columns(["id", "when", "request"])
    ranked = every.sort_by([("id", "ascending"), ("when", "descending"), ("request", "descending")])
    top = ranked.filter(starts_of_runs(ranked["id"].combine_chunks()))
    return top.rename_columns(["id", "when_t", "request_t"])


def _rows(
    source: LoadSource, schema: pa.Schema, *, keep: pa.Array | None, merged_before: set[int]
) -> Iterator[pa.RecordBatch]:
    """The downloads' rows for the table: winning copies, and only records in ``keep``.

    Rows without an ``id`` cannot be matched later; they are written once, from
    requests the table has not merged before.
    """
    data = pa.schema([f for f in schema if f.name not in PROVENANCE_SCHEMA.names])
    for file, path in source.download.local_files():
        read = source.batches_of(file, path)
        for batch in typed_batches(file, read.batches, data, True, source.newest):
            batch = conform(batch, schema)
            if keep is not None:
                ids = record_ids(batch.column(ID_COLUMN))
                chosen = pc.is_in(ids, value_set=keep)
                if file.request_id not in merged_before:
                    chosen = pc.or_(chosen, pc.is_null(ids))
                batch = batch.filter(chosen)
            if batch.num_rows:
                yield batch
            release_arrow_memory()


def _has_idless_rows(source: LoadSource, merged_before: set[int]) -> bool:
    """Whether a request not merged before holds rows without an id (they are inserted)."""
    assert source.newest is not None
    counts = source.newest.idless_rows
    return any(counts.get(rid, 0) for rid in source.request_ids if rid not in merged_before)


def _against_table(schema: pa.Schema, table: DeltaTable) -> tuple[pa.Schema, list[str]]:
    """The table's schema grown to hold the rows: its types where they agree, text where not.

    Returns the schema to write (the table's columns in their order, then new
    ones) and the columns that change it: new ones, and the table's columns
    that must become text (a download has values of another type there).
    """
    theirs = pa.schema(table.schema().to_arrow())
    mine = {f.name: f for f in schema}
    fields, changed = [], []
    for field in theirs:
        ours = mine.get(field.name)
        if ours is None or _same(ours.type, field.type) or _is_text(field.type):
            fields.append(field)  # ours cast to theirs (text keeps ours as written)
        else:
            fields.append(pa.field(field.name, pa.string()))
            changed.append(field.name)
    for field in schema:
        if theirs.get_field_index(field.name) < 0:
            fields.append(field)
            changed.append(field.name)
    return pa.schema(fields), changed


def _is_text(type_: pa.DataType) -> bool:
    return bool(
        pa.types.is_string(type_) or pa.types.is_large_string(type_)
        or pa.types.is_string_view(type_)
    )  # fmt: skip


def _same(a: pa.DataType, b: pa.DataType) -> bool:
    """Types Delta stores alike (timestamps of any unit are microseconds there)."""
    if a.equals(b):
        return True
    if pa.types.is_timestamp(a) and pa.types.is_timestamp(b):
        return bool(a.tz) == bool(b.tz)
    return _is_text(a) and _is_text(b)


def merged_requests(table: DeltaTable) -> set[int]:
    """The request ids the table's current contents were merged from (by commit metadata).

    Commits are read newest first, up to and including the last overwrite:
    what was merged before an overwrite is gone.
    """
    found: set[int] = set()
    for commit in table.history():
        found.update(_about(commit).get("request_ids", []))
        mode = str((commit.get("operationParameters") or {}).get("mode", "")).lower()
        if commit.get("operation") in ("WRITE", "CREATE TABLE") and mode == "overwrite":
            break
    return found


def history(path: str, storage_options: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The table's versions, newest first: operation, time, requests merged, rows inserted."""
    table = _open(path, storage_options)
    if table is None:
        raise DatafinitiError(f"There is no Delta table at {_shown(path)}.")
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
                "timestamp": commit.get("timestamp"),
                # This library's commits say what they did (merge, append, overwrite).
                "operation": str(about.get("mode") or commit.get("operation") or "").upper(),
                "request_ids": about.get("request_ids", []),
                "rows_inserted": rows,
                "library": about.get("library"),
            }
        )
    return out


def _about(commit: dict[str, Any]) -> dict[str, Any]:
    """What this library recorded in a commit (empty for commits of other writers)."""
    raw = commit.get(COMMIT_KEY)
    try:
        about = json.loads(raw) if isinstance(raw, str) else {}
        about["request_ids"] = [int(r) for r in about.get("request_ids", [])]
    except (ValueError, TypeError, AttributeError):
        return {}
    return about if isinstance(about, dict) else {}


def _commit(files: _DataFiles, about: dict[str, Any], shown: str, write: Any) -> None:
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


def _open(path: str, storage_options: dict[str, str] | None) -> DeltaTable | None:
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        return DeltaTable(path, storage_options=storage_options)
    except TableNotFoundError:
        return None


def _deltalake() -> Any:
    try:
        import deltalake
    except ImportError:
        raise ImportError(
            "Delta tables need deltalake: pip install 'datafiniti-loader[delta]'"
        ) from None
    return deltalake


def _shown(path: str) -> str:
    return os.path.abspath(path) if "://" not in str(path) else str(path)
