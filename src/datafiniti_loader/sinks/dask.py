"""Sink: a download as a dask DataFrame, one partition per result file, fetched on workers.

Column types must be known before the frame exists (dask's ``meta``), and
they are decided from all the data, as :func:`~datafiniti_loader.load_results`
decides them. The client makes API calls only: it lists the files, then
runs one scan task per file on the workers. Each task downloads its file
(with a fresh pre-signed URL, fetched on the worker), keeps it on the
worker's disk (the cache when there is one, else the worker's own scratch
space) and sends back only its column-type verdicts. The client merges
them, in file order, into the schema; each partition then reads the copy
its scan kept. Every file is fetched once in all, and the client's machine
never holds the download's bytes.

A partition that runs where its file was not kept (a worker that died, a
cluster of several machines that places it elsewhere) downloads it again
there, with a fresh URL: a graph computed hours later never meets an
expired one. The graph holds no URL, and the token inside it (workers need
it) never shows in a ``repr``.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ..config import resolve_cache_dir, resolve_token
from ..fetch.cache import FileCache
from ..fetch.download import Download
from ..fetch.orphans import owned_tempdir
from ..fetch.transport import Transport
from ..loader import (
    LoadOptions,
    Sources,
    close_batches,
    data_schema,
    request_files,
    request_ids,
    typed_batches,
    with_provenance,
)
from ..read.dedupe import ID_COLUMN, NewestCopies, record_ids
from ..read.dtypes import arrow_types
from ..read.files import read_file
from ..read.schema import SchemaBuilder
from ..remote.client import Client
from ..remote.models import ResultFile
from ..retry import RetryPolicy
from .outputs import to_pandas

__all__ = [
    "Hidden",
    "Scanned",
    "load_dask",
    "partition_batches",
    "require_dask",
    "run_all",
    "scanned",
]


@dataclass(frozen=True)
class Hidden:
    """A secret (the API token, an object store's keys) in the task graph, never in its repr."""

    value: Any

    def __repr__(self) -> str:
        return "Hidden('***')"


@dataclass(frozen=True)
class _Job:
    """What a worker needs to fetch one result file (no URL: it asks for a fresh one)."""

    api_url: str
    token: Hidden
    cache_dir: str | None
    retry: RetryPolicy
    file: ResultFile
    dedupe: bool = False
    merging: bool | str = False


@dataclass(frozen=True)
class _Kept:
    """What a file's scan found, and where its worker kept the file."""

    verdicts: SchemaBuilder
    json_text: frozenset[str]
    path: str
    host: str
    #: With ``dedupe``: the file's record ids and their newest dates, and its id-less rows.
    seen: pa.Table | None = None
    idless: int = 0


@dataclass(frozen=True)
class _Partition:
    """One partition: the file, where it was kept, and the schema it is read into."""

    job: _Job
    kept: _Kept
    schema: pa.Schema
    data_columns: int
    provenance: bool
    #: The record ids whose rows are kept (``None``: every row), and whether id-less rows are.
    keep: pa.Array | None = None
    keep_idless: bool = True


def _scan(job: _Job) -> _Kept:
    """On a worker: fetch the file, keep it, and say what its columns (and records) hold."""
    path = _fetched(job)
    verdicts = SchemaBuilder()
    copies = NewestCopies([job.file.request_id], merging=job.merging) if job.dedupe else None
    read = read_file(path, job.file.name, job.file.format)
    for batch in read.batches:
        verdicts.observe(batch, text=read.text)
        if copies is not None:
            copies.observe(job.file, batch)
    json_text = frozenset() if read.text else verdicts.text_conflicts()
    seen, idless = copies.seen() if copies is not None else (None, 0)
    return _Kept(verdicts, json_text, str(path), socket.gethostname(), seen, idless)


def _load_partition(part: _Partition) -> pd.DataFrame:
    """On a worker: the file its scan kept (fetched again only where it is not), typed."""
    batches, close = partition_batches(part)
    try:
        return to_pandas(pa.Table.from_batches(list(batches), schema=part.schema))
    finally:
        close()


def _fetched(job: _Job) -> Path:
    """The file in the worker's store (the cache, or its own keep directory), fetched if absent."""
    root = Path(job.cache_dir) if job.cache_dir is not None else _keep_dir()
    store = FileCache(root, job.api_url)
    try:
        with Client(job.token.value, job.api_url, retry=job.retry) as client:
            download = Download(client, [job.file], store, Transport(job.retry), max_workers=1)
            return download.fetch(job.file)
    finally:
        store.close()


_KEEP: dict[str, Any] = {}


def _keep_dir() -> Path:
    """Where this worker keeps files when there is no cache: its own scratch space.

    A dask worker's local directory goes with the worker; elsewhere (dask's
    local schedulers) a temporary directory removed when the process ends.
    """
    try:
        from distributed import get_worker

        return Path(get_worker().local_directory) / "datafiniti-kept"
    except (ImportError, ValueError):
        pass
    if "dir" not in _KEEP:  # removed when the process ends; by the next one if it is killed
        _KEEP["dir"] = owned_tempdir("datafiniti-kept-")
    return Path(_KEEP["dir"].name)


@dataclass(frozen=True)
class Scanned:
    """A download scanned on the workers: its partitions and the schema they are read into.

    ``newest``: with ``dedupe``, every record's winning copy, decided here
    from the ids and dates the workers sent (never the rows).
    """

    request_ids: list[int]
    files: list[ResultFile]
    parts: list[_Partition]
    schema: pa.Schema
    api_url: str
    newest: NewestCopies | None = None


def scanned(
    request_id: Sources,
    options: LoadOptions,
    *,
    columns: Sequence[str] | None = None,
    provenance: bool = True,
) -> Scanned:
    """List the files (API calls only), scan each on a worker, decide the types here.

    With ``options.dedupe`` each partition keeps only the rows of the copies
    that win (and rows without an id).
    """
    from dask.delayed import delayed

    dtypes = arrow_types(options.dtype)  # a type not understood fails before any request
    rids = request_ids(request_id)
    with Client(options.token, options.api_url, retry=options.retry) as api:
        files = [f for rid in rids for f in request_files(api, rid, options)]
        api_url, retry = api.api_url, api.retry
    secret = Hidden(resolve_token(options.token, api_url))
    cache_dir = resolve_cache_dir(options.cache, api_url)
    where = None if cache_dir is None else str(cache_dir)
    jobs = [
        _Job(api_url, secret, where, retry, replace(f, url=""), options.dedupe, options.merging)
        for f in files
    ]
    # The scans run where dask runs tasks (the workers, on a cluster); only verdicts come back.
    scans = [delayed(_scan, pure=False)(job) for job in jobs]
    kept: list[_Kept] = run_all(scans)
    builder = SchemaBuilder()
    for found in kept:  # in file order: the types load_results decides
        builder.merge(found.verdicts)
    data = data_schema(builder, columns, provenance, dtypes)
    schema = with_provenance(data) if provenance else data
    newest = None
    if options.dedupe:
        newest = NewestCopies(rids, merging=options.merging)
        for job, found in zip(jobs, kept, strict=True):
            assert found.seen is not None
            newest.include(job.file, found.seen, found.idless)
        newest.decide()
    parts = [
        _Partition(
            job, found, schema, len(data), provenance,
            keep=None if newest is None else newest.winners_of(job.file.request_id),
        )
        for job, found in zip(jobs, kept, strict=True)
    ]  # fmt: skip
    return Scanned(rids, files, parts, schema, api_url, newest)


def run_all(tasks: list[Any]) -> list[Any]:
    """Every task's result; on a failure, raised only once every task has ended.

    A task still writing when the first one fails would otherwise leave its
    file behind the cleanup. On a distributed cluster the tasks are waited
    for as futures; dask's local schedulers end them all before raising.
    """
    from dask.base import compute

    try:
        from distributed import get_client, wait

        client = get_client()
    except (ImportError, ValueError):
        return list(compute(*tasks))  # type: ignore[no-untyped-call]
    futures = client.compute(tasks)  # type: ignore[no-untyped-call]
    wait(futures)  # type: ignore[no-untyped-call]
    return [future.result() for future in futures]


def require_dask() -> None:
    """An ImportError naming the extra, where dask is missing."""
    try:
        import dask.dataframe  # noqa: F401
    except ImportError:
        raise ImportError(
            "output='dask' and engine='dask' need dask: pip install 'datafiniti-loader[dask]'"
        ) from None


def load_dask(
    request_id: Sources,
    options: LoadOptions,
    *,
    columns: Sequence[str] | None = None,
    provenance: bool = True,
) -> Any:
    """A lazy dask DataFrame of the request's results (see :func:`load_results`)."""
    require_dask()
    import dask
    import dask.dataframe as dd

    found = scanned(request_id, options, columns=columns, provenance=provenance)
    meta = to_pandas(found.schema.empty_table())
    # dask would turn object columns into strings: nested lists and dicts must stay as they are.
    nested = any(pa.types.is_nested(f.type) for f in found.schema)
    with dask.config.set({"dataframe.convert-string": False} if nested else {}):
        return dd.from_map(  # type: ignore[no-untyped-call]
            _load_partition, found.parts, meta=meta, label="datafiniti-results"
        )


def partition_batches(part: _Partition) -> tuple[Iterator[pa.RecordBatch], Callable[[], None]]:
    """On a worker: a partition's typed batches (see :func:`_load_partition`), and their closer."""
    kept = Path(part.kept.path)
    here = part.kept.host == socket.gethostname() and kept.is_file()
    path = kept if here else _fetched(part.job)
    file = part.job.file
    data = pa.schema(list(part.schema)[: part.data_columns])
    read = read_file(path, file.name, file.format, text_columns=part.kept.json_text)
    typed = typed_batches(file, read.batches, data, part.provenance)
    if part.keep is not None:
        typed = (batch.filter(_kept_rows(batch, part)) for batch in typed)
    return typed, lambda: close_batches(read.batches)


def _kept_rows(batch: pa.RecordBatch, part: _Partition) -> pa.Array:
    ids = record_ids(batch.column(ID_COLUMN))
    chosen = pc.fill_null(pc.is_in(ids, value_set=part.keep), False)
    return pc.or_(chosen, pc.is_null(ids)) if part.keep_idless else chosen
