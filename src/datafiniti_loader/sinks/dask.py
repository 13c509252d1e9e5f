"""Sink: a download as a dask DataFrame, one partition per result file.

Column types are decided up front from all the data (that is what ``meta``
must say), which downloads every file once into the cache. Each partition
then loads its own file: from the cache when the worker shares it, or with a
fresh pre-signed URL fetched when the partition runs, so a graph computed
hours later never meets an expired URL. The graph holds no URL, and the
token inside it (workers need it) never shows in a ``repr``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from ..config import resolve_cache_dir, resolve_token
from ..fetch.cache import FileCache, FileStore, ScratchStore
from ..fetch.download import Download
from ..fetch.transport import Transport
from ..loader import LoadOptions, Sources, data_schema, open_load, typed_batches, with_provenance
from ..read.files import read_file
from ..remote.client import Client
from ..remote.models import ResultFile
from ..retry import RetryPolicy
from .outputs import to_pandas

__all__ = ["load_dask"]


@dataclass(frozen=True)
class _Token:
    """The API token, travelling inside the task graph without showing in its repr."""

    value: str

    def __repr__(self) -> str:
        return "_Token('***')"


@dataclass(frozen=True)
class _Partition:
    """Everything a worker needs to load one result file (no URL)."""

    api_url: str
    token: _Token
    cache_dir: str | None
    retry: RetryPolicy
    file: ResultFile
    schema: pa.Schema
    data_columns: int
    provenance: bool
    text_columns: frozenset[str] = frozenset()


def _load_partition(part: _Partition) -> pd.DataFrame:
    store: FileStore
    if part.cache_dir is None:
        store = ScratchStore()
    else:
        store = FileCache(Path(part.cache_dir), part.api_url)
    try:
        with Client(part.token.value, part.api_url, retry=part.retry) as client:
            download = Download(client, [part.file], store, Transport(part.retry), max_workers=1)
            path = download.fetch(part.file)
            data = pa.schema(list(part.schema)[: part.data_columns])
            read = read_file(path, part.file.name, part.file.format, text_columns=part.text_columns)
            batches = list(typed_batches(part.file, read.batches, data, part.provenance))
            return to_pandas(pa.Table.from_batches(batches, schema=part.schema))
    finally:
        store.close()


def load_dask(
    request_id: Sources,
    options: LoadOptions,
    *,
    columns: Sequence[str] | None = None,
    provenance: bool = True,
) -> Any:
    """A lazy dask DataFrame of the request's results (see :func:`load_results`)."""
    try:
        import dask
        import dask.dataframe as dd
    except ImportError:
        raise ImportError(
            "output='dask' needs dask: pip install 'datafiniti-loader[dask]'"
        ) from None
    with open_load(request_id, options) as source:
        scan = source.scan(keep=False)
        data = data_schema(scan.builder, columns, provenance, source.dtypes)
        schema = with_provenance(data) if provenance else data
        client = source.client
        files = source.files
        json_text = source.json_text
    secret = _Token(resolve_token(options.token, client.api_url))
    cache_dir = resolve_cache_dir(options.cache)
    parts = [
        _Partition(
            api_url=client.api_url,
            token=secret,
            cache_dir=None if cache_dir is None else str(cache_dir),
            retry=client.retry,
            file=replace(f, url=""),
            schema=schema,
            data_columns=len(data),
            provenance=provenance,
            text_columns=json_text.get(f.key, frozenset()),
        )
        for f in files
    ]
    meta = to_pandas(schema.empty_table())
    # dask would turn object columns into strings: nested lists and dicts must stay as they are.
    nested = any(pa.types.is_nested(f.type) for f in schema)
    with dask.config.set({"dataframe.convert-string": False} if nested else {}):
        return dd.from_map(  # type: ignore[no-untyped-call]
            _load_partition, parts, meta=meta, label="datafiniti-results"
        )
