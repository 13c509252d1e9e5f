"""The Delta table's data files as this library writes them: streamed, then committed.

delta-rs's own writers hold a whole file (``write_deltalake``) or the table
side of a join (``MERGE``) in memory. Instead, data files are written here a
row group at a time (the writer of ``to_parquet``), through delta-rs's storage
handler so that object stores take the same ``storage_options``, and handed to
one transaction as add and remove actions. Until that commit they are
invisible to readers; a failed write deletes them.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.compute as pc

from ..read.dedupe import ID_COLUMN, record_ids
from ..read.schema import cast_column, conform
from .parquet import MAX_PARTITIONS, write_row_groups

if TYPE_CHECKING:
    from deltalake import DeltaTable

__all__ = [
    "DataFiles",
    "create_table",
    "local_dir",
    "rewritten",
    "table_store",
]


def rewritten(
    table: DeltaTable, files: DataFiles, drop: pa.Array, schema: pa.Schema, *, every: bool
) -> list[Any]:
    """The table's files holding a record in ``drop`` (all when ``every``), written again.

    Returns the actions: the new files, and the removal of the old ones
    (unless ``every``: the overwrite that commits them removes every old file).
    """
    actions: list[Any] = []
    for old in _files_holding(table, files, drop, every=every):
        actions += files.write(_without(files.read(old, schema), drop, schema, files.key), schema)
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


class DataFiles:
    """Parquet data files written into the table's directory, for one transaction to add.

    Files are written through delta-rs's own storage handler, so a table on
    an object store takes the same ``storage_options``. Until the commit they
    are invisible to readers; if the commit fails they are deleted (they are
    this write's own).
    """

    def __init__(
        self,
        path: str,
        storage_options: dict[str, str] | None,
        partition_by: Sequence[str] = (),
        key: str = ID_COLUMN,
        tag: str = "",
    ) -> None:
        self.key = key  # the column naming a row's record (``_record_id`` in child tables)
        #: Starts the name of every file this write makes: one write's files, found by name.
        self.prefix = f"part-{tag}-" if tag else "part-"
        self._path = str(path)
        self._options = storage_options
        self._partition_by = list(partition_by)
        self._made_dir = False
        self._handler: Any = None
        self.written: list[str] = []

    @property
    def _fs(self) -> Any:
        """The table's storage (a new local table's directory is made on first use)."""
        if self._handler is None:
            self._handler, self._made_dir = table_store(self._path, self._options)
        return self._handler

    def prepare(self) -> None:
        """Reach the storage now (a new local table's directory is made)."""
        _ = self._fs

    def write(self, batches: Iterator[pa.RecordBatch], schema: pa.Schema) -> list[Any]:
        """New data files of ``batches``, a new one every ~256 MB of Arrow data; their actions.

        Several files of bounded size let a later merge rewrite only the
        files that hold a replaced record, not the whole table.
        """
        from deltalake.transaction import AddAction

        if self._partition_by:
            return self._write_partitioned(batches, schema)
        actions = []
        pending = _Batches(batches)
        while pending.has_more():
            name = f"{self.prefix}{uuid.uuid4()}.parquet"
            self.written.append(name)
            with self._fs.open_output_stream(name) as sink:
                rows = write_row_groups(pending.up_to(_FILE_BYTES), sink, schema)
            size = self._fs.get_file_info(name).size or 0
            stats = json.dumps({"numRecords": rows})
            actions.append(AddAction(name, size, {}, int(time.time() * 1000), True, stats))
        return actions

    def _write_partitioned(self, batches: Iterator[pa.RecordBatch], schema: pa.Schema) -> list[Any]:
        """Data files of ``batches``, each in its partition's directory (pyarrow's dataset writer).

        The files hold no partition column: its value is in the directory's name
        and in the add action, as Delta keeps it.
        """
        import pyarrow.dataset as pds
        from deltalake.transaction import AddAction

        visited: list[Any] = []
        key = pa.schema([schema.field(name) for name in self._partition_by])
        try:
            pds.write_dataset(
                batches, "", schema=schema, format="parquet", filesystem=self._fs,
                partitioning=pds.partitioning(key, flavor="hive"),
                basename_template=f"{self.prefix}{uuid.uuid4()}-{{i}}.parquet",
                use_threads=False, preserve_order=True, max_partitions=MAX_PARTITIONS,
                existing_data_behavior="overwrite_or_ignore", file_visitor=visited.append,
            )  # fmt: skip
        finally:  # a failure midway: what was written goes with the rest of this write
            self.written += [f.path.lstrip("/") for f in visited]
        now = int(time.time() * 1000)
        return [
            AddAction(
                f.path.lstrip("/"),
                f.size,
                _partition_values(f.path),
                now,
                True,
                json.dumps({"numRecords": f.metadata.num_rows}),
            )
            for f in visited
        ]

    def read(self, file: _FileRef, schema: pa.Schema) -> Iterator[pa.RecordBatch]:
        """A data file of the table, a batch at a time, with its partition's columns."""
        import pyarrow.parquet as pq

        with self._fs.open_input_file(file.path) as handle:
            for batch in pq.ParquetFile(handle).iter_batches(batch_size=2048, use_threads=False):
                for name, value in file.partition_values.items():
                    batch = batch.append_column(
                        schema.field(name),
                        _constant(value, schema.field(name).type, batch.num_rows),
                    )
                yield batch

    def ids_in(self, name: str) -> pa.Array:
        """The record ids of a data file (one column: small)."""
        import pyarrow.parquet as pq

        with self._fs.open_input_file(name) as handle:
            column = pq.read_table(handle, columns=[self.key]).column(0)
        return record_ids(column.combine_chunks())

    def discard(self) -> None:
        """Delete the files this write made (it failed before or at its commit)."""
        for name in self.written:
            with contextlib.suppress(OSError):
                self._fs.delete_file(name)
        if self._made_dir:  # the directory this write made, if nothing else is in it
            with contextlib.suppress(OSError):
                os.rmdir(self._path)


def table_store(path: str, storage_options: dict[str, str] | None) -> tuple[Any, bool]:
    """A pyarrow file system rooted at ``path``, over delta-rs's storage; whether it made ``path``.

    Everything this library writes beside a table goes through it, so one
    set of ``storage_options`` (deltalake's keys) reaches one store. A local
    directory is made first (delta-rs refuses one that does not exist).
    """
    import pyarrow.fs as pafs
    from deltalake.fs import DeltaStorageHandler

    local = local_dir(path)
    made = False
    if local is not None and not os.path.isdir(local):
        try:
            os.makedirs(local)
            made = True
        except FileExistsError:  # another process (a dask worker) made it meanwhile
            pass
    return pafs.PyFileSystem(DeltaStorageHandler(str(path), storage_options)), made


def local_dir(path: str) -> str | None:
    """The local directory ``path`` names (a plain path or ``file://``), or ``None``."""
    text = str(path)
    if text.startswith("file://"):
        return text.removeprefix("file://")
    return None if "://" in text else text


def _files_holding(
    table: DeltaTable, files: DataFiles, ids: pa.Array, *, every: bool
) -> Iterator[Any]:
    """The table's active files that hold any of ``ids`` (all of them when ``every``)."""
    actions = pa.table(table.get_add_actions(flatten=True))
    prefix = "partition."
    keys = [name for name in actions.column_names if name.startswith(prefix)]
    for row in actions.select(["path", "size_bytes", *keys]).to_pylist():
        # The log keeps paths as URIs; the storage handler takes them as the files are named.
        name = unquote(row["path"])
        if every or (len(ids) and pc.any(pc.is_in(files.ids_in(name), value_set=ids)).as_py()):
            values = {key[len(prefix) :]: row[key] for key in keys}
            yield _FileRef(name, int(row["size_bytes"]), values)


@dataclass(frozen=True)
class _FileRef:
    path: str  # as the file is named in the table's directory (not URI-encoded)
    size: int
    partition_values: dict[str, Any] = field(default_factory=dict)


_NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__"


def _partition_values(path: str) -> dict[str, str | None]:
    """A written file's partition values, from its hive directories (``brand=a%2Fb/...``)."""
    values: dict[str, str | None] = {}
    for segment in path.strip("/").split("/")[:-1]:
        name, _, value = segment.partition("=")
        values[unquote(name)] = None if value == _NULL_PARTITION else unquote(value)
    return values


def _constant(value: Any, type_: pa.DataType, rows: int) -> pa.Array:
    """A partition value, as the column's type, repeated for every row of a batch."""
    if value is None:
        return pa.nulls(rows, type_)
    one = cast_column(pa.array([str(value)], pa.string()), type_)
    return pa.repeat(one[0], rows) if rows else pa.array([], type_)


def _removal(old: _FileRef) -> Any:
    from deltalake.transaction import RemoveAction

    return RemoveAction(old.path, True, int(time.time() * 1000), old.size, {})


def _without(
    batches: Iterator[pa.RecordBatch], drop: pa.Array, schema: pa.Schema, key: str
) -> Iterator[pa.RecordBatch]:
    """``batches`` without the rows of records in ``drop`` (by column ``key``), in ``schema``."""
    for batch in batches:
        ids = record_ids(batch.column(key))
        kept = batch.filter(pc.invert(pc.fill_null(pc.is_in(ids, value_set=drop), False)))
        if kept.num_rows:
            yield conform(kept, schema)


def create_table(
    path: str, schema: pa.Schema, added: list[Any], storage_options: dict[str, str] | None,
    props: Any,
) -> None:  # fmt: skip
    """A new table at ``path`` whose first version is the files ``added``."""
    from deltalake import Schema
    from deltalake.transaction import create_table_with_add_actions

    create_table_with_add_actions(
        str(path), Schema.from_arrow(schema), added, mode="error",
        storage_options=storage_options, commit_properties=props,
    )  # fmt: skip
