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

import json
import logging
import os
import tempfile
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
    """Write ``source`` into the Delta table at ``path`` (see :func:`.api.to_delta`)."""
    deltalake = _deltalake()
    shown = _shown(path)
    table = _open(path, storage_options)
    if mode == "merge" and table is not None:
        before = merged_requests(table)
        if set(source.request_ids) <= before:
            return DeltaSummary(
                shown, table.version(), False, mode, requests=tuple(source.request_ids),
                note=f"request(s) {', '.join(map(str, source.request_ids))} already merged",
            )  # fmt: skip
    else:
        before = set()
    scan = source.scan(keep=False)
    schema = with_provenance(data_schema(scan.builder, None))
    about = {"request_ids": source.request_ids, "library": __version__, "mode": mode}
    if mode != "merge" or table is None:
        counter = RowCounter(_rows(source, schema, keep=None, merged_before=set()))
        batches = iter(counter)
        added = int(source.newest.winners.num_rows) if source.newest is not None else 0
        _commit(
            lambda props: deltalake.write_deltalake(
                path, pa.RecordBatchReader.from_batches(schema, batches),
                mode="error" if table is None else mode,
                schema_mode="merge" if mode == "append" else ("overwrite" if table else None),
                storage_options=storage_options, commit_properties=props,
            ),
            about, shown,
        )  # fmt: skip
        version = _open(path, storage_options).version()  # type: ignore[union-attr]
        log_summary(source, counter.rows, len(schema), target=shown)
        return DeltaSummary(
            shown, version, True, mode, rows_inserted=counter.rows, records_added=added,
            requests=tuple(source.request_ids),
        )  # fmt: skip
    return _merge(source, table, schema, path, shown, before, storage_options)


def _merge(
    source: LoadSource,
    table: DeltaTable,
    schema: pa.Schema,
    path: str,
    shown: str,
    merged_before: set[int],
    storage_options: dict[str, str] | None,
) -> DeltaSummary:
    """Replace the records whose copy in the downloads is newer than the table's, in one commit."""
    deltalake = _deltalake()
    assert source.newest is not None
    plan = _plan(source, table)
    decided = DeltaSummary(
        shown, table.version(), False, "merge", 0, plan.added, plan.replaced, plan.unchanged,
        tuple(source.request_ids),
    )  # fmt: skip
    if plan.added + plan.replaced == 0 and not _has_idless_rows(source, merged_before):
        return _no_change(decided, "no copy is newer than the table's")
    schema, widen = _against_table(schema, table)
    logger.info(
        "merging into %s: %d record(s) new, %d newer than the table's, %d not newer",
        shown, plan.added, plan.replaced, plan.unchanged,
    )  # fmt: skip
    counter = RowCounter(_rows(source, schema, keep=plan.replace_ids, merged_before=merged_before))
    rows = iter(counter)
    about = {"request_ids": source.request_ids, "library": __version__, "mode": "merge",
             "records_added": plan.added, "records_replaced": plan.replaced}  # fmt: skip
    if widen:
        # A column turns to text: the whole table is written again, in one commit.
        logger.info("columns %s become text in %s (a download holds values of another type)",
                    widen, shown)  # fmt: skip
        with tempfile.TemporaryDirectory(prefix="datafiniti-delta-") as scratch:
            # delta-rs cannot read the table while it writes it (one async runtime):
            # the rows kept go to a local Arrow file first, a batch at a time.
            kept = _staged(_table_rows(table, schema, drop=plan.existing_ids), schema, scratch)
            every = (b for part in (kept, rows) for b in part)
            _commit(
                lambda props: deltalake.write_deltalake(
                    path, pa.RecordBatchReader.from_batches(schema, every), mode="overwrite",
                    schema_mode="overwrite", storage_options=storage_options,
                    commit_properties=props,
                ),
                about | {"widened": widen}, shown,
            )  # fmt: skip
    else:
        source_schema = pa.schema([*schema, (_OP, pa.string()), (_KEY, pa.string())])
        marked = _merge_source(source_schema, plan.existing_ids, rows)
        names = [f.name for f in schema]

        def run(props: Any) -> None:
            merger = table.merge(
                pa.RecordBatchReader.from_batches(source_schema, marked),
                predicate=f"t.{_quoted(ID_COLUMN)} = s.{_KEY}",
                source_alias="s", target_alias="t", merge_schema=True, commit_properties=props,
            )  # fmt: skip
            merger = merger.when_matched_delete(predicate=f"s.{_OP} = 'delete'")
            merger = merger.when_not_matched_insert(
                updates={_quoted(n): f"s.{_quoted(n)}" for n in names},
                predicate=f"s.{_OP} = 'insert'",
            )
            merger.execute()

        _commit(run, about, shown)
    version = _open(path, storage_options).version()  # type: ignore[union-attr]
    log_summary(source, counter.rows, len(schema), target=shown)
    return DeltaSummary(
        shown, version, True, "merge", counter.rows, plan.added, plan.replaced, plan.unchanged,
        tuple(source.request_ids),
    )  # fmt: skip


@dataclass
class _Plan:
    """Which records the downloads bring a newer copy of."""

    replace_ids: pa.Array  # every record whose copy wins: its rows are inserted
    existing_ids: pa.Array  # of those, the ones the table has: their rows are deleted
    added: int
    replaced: int
    unchanged: int


def _plan(source: LoadSource, table: DeltaTable) -> _Plan:
    assert source.newest is not None
    winners = source.newest.winners
    requests = pa.array(source.request_ids, pa.int64())
    mine = pa.table(
        {
            "id": winners["id"],
            "when": winners["when"],
            "request": pc.take(requests, winners["download"]),
        }
    )
    theirs = _table_keys(table)
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


def _merge_source(
    schema: pa.Schema, existing: pa.Array, rows: Iterator[pa.RecordBatch]
) -> Iterator[pa.RecordBatch]:
    """Delete markers for the replaced records, then the new rows, as one MERGE source."""
    for start in range(0, len(existing), _MARKERS_PER_BATCH):
        ids = existing.slice(start, _MARKERS_PER_BATCH)
        n = len(ids)
        arrays = [pa.nulls(n, f.type) for f in schema if f.name not in (_OP, _KEY)]
        arrays += [pa.array(["delete"] * n, pa.string()), ids.cast(pa.string())]
        yield pa.RecordBatch.from_arrays(arrays, schema=schema)
    for batch in rows:
        n = batch.num_rows
        arrays = [*batch.columns, pa.array(["insert"] * n, pa.string()), pa.nulls(n, pa.string())]
        yield pa.RecordBatch.from_arrays(arrays, schema=schema)


def _against_table(schema: pa.Schema, table: DeltaTable) -> tuple[pa.Schema, list[str]]:
    """The rows' schema against the table's: its types where they agree, text where not.

    Returns the schema to write and the table's columns that must become
    text (a download has values of another type there: text keeps both).
    """
    theirs = pa.schema(table.schema().to_arrow())
    fields, widen = [], []
    for mine in schema:
        index = theirs.get_field_index(mine.name)
        if index < 0:
            fields.append(mine)  # a new column: the merge adds it
            continue
        their_type = theirs.field(index).type
        if _same(mine.type, their_type):
            fields.append(pa.field(mine.name, their_type))
        elif pa.types.is_string(their_type) or pa.types.is_large_string(their_type):
            fields.append(pa.field(mine.name, their_type))  # ours as their text: as written
        else:
            fields.append(pa.field(mine.name, pa.string()))
            widen.append(mine.name)
    if widen:  # the rewrite keeps the table's own columns too
        names = {f.name for f in fields}
        fields += [f for f in theirs if f.name not in names]
        fields = [pa.field(f.name, pa.string()) if f.name in widen else f for f in fields]
    return pa.schema(fields), widen


def _same(a: pa.DataType, b: pa.DataType) -> bool:
    """Types Delta stores alike (timestamps of any unit are microseconds there)."""
    if a.equals(b):
        return True
    if pa.types.is_timestamp(a) and pa.types.is_timestamp(b):
        return bool(a.tz) == bool(b.tz)
    text = (pa.types.is_string, pa.types.is_large_string, pa.types.is_string_view)
    return any(t(a) for t in text) and any(t(b) for t in text)


def _table_rows(table: DeltaTable, schema: pa.Schema, drop: pa.Array) -> Iterator[pa.RecordBatch]:
    """The table's rows, minus records in ``drop``, in ``schema`` (widened columns as text)."""
    for batch in table.to_pyarrow_dataset().to_batches():
        ids = record_ids(batch.column(ID_COLUMN))
        batch = batch.filter(pc.invert(pc.fill_null(pc.is_in(ids, value_set=drop), False)))
        yield conform(batch, schema)


def _staged(
    batches: Iterator[pa.RecordBatch], schema: pa.Schema, scratch: str
) -> Iterator[pa.RecordBatch]:
    """``batches`` written to an LZ4 Arrow file in ``scratch``, then read back one by one."""
    import pyarrow.ipc as ipc

    staged = os.path.join(scratch, "kept.arrow")
    options = ipc.IpcWriteOptions(compression="lz4")
    with ipc.new_file(staged, schema, options=options) as writer:
        for batch in batches:
            writer.write_batch(batch)
    reader = ipc.open_file(pa.memory_map(staged))
    return (reader.get_batch(i) for i in range(reader.num_record_batches))


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
        out.append(
            {
                "version": commit.get("version"),
                "timestamp": commit.get("timestamp"),
                "operation": commit.get("operation"),
                "request_ids": about.get("request_ids", []),
                "rows_inserted": metrics.get("num_target_rows_inserted",
                                             metrics.get("num_added_rows")),
                "library": about.get("library"),
            }
        )  # fmt: skip
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


def _commit(write: Any, about: dict[str, Any], shown: str) -> None:
    """Run ``write`` with this library's commit metadata; a lost race: :class:`TableConflict`."""
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
        if "already exists" not in str(exc).lower():
            raise StorageError(
                f"Could not write the Delta table at {shown}: {str(exc)[:300]}"
            ) from None
        failure = str(exc)[:200]
    raise TableConflict(
        f"Another writer committed to the Delta table at {shown} while this write ran "
        f"({failure}); nothing of this write was committed and the table is intact. Run it "
        "again: it will merge against the new version."
    )


def _no_change(summary: DeltaSummary, why: str) -> DeltaSummary:
    return DeltaSummary(**{**summary.__dict__, "note": why})


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


def _quoted(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"
