"""The two entry points most users need: :func:`load_results` and :func:`to_parquet`."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

from .config import CacheSetting, positive_count
from .errors import ConfigurationError
from .loader import LoadOptions, Sources, open_load, read_head, read_table, request_ids
from .read.tidy import tidy
from .remote.client import Client
from .retry import RetryPolicy
from .sinks.outputs import OUTPUTS, labelled, to_pandas, to_polars, with_origin
from .sinks.parquet import ParquetSummary, dataset_metadata, write_parquet
from .sinks.tables import TABLE_OUTPUTS, Tables, tables_from
from .sinks.tablesparquet import check_options, write_tables

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from .display import DownloadList
    from .remote.models import DownloadRequest
    from .sinks.delta import DeltaSummary

__all__ = ["count", "create_download", "load_results", "load_tables", "to_delta", "to_parquet"]


@overload
def load_results(
    request_id: Sources,
    *,
    token: str | None = ...,
    api_url: str | None = ...,
    output: Literal["pandas"] = ...,
    columns: Sequence[str] | None = ...,
    provenance: bool = ...,
    wait: bool | float = ...,
    cache: CacheSetting = ...,
    max_workers: int | None = ...,
    progress: bool | None = ...,
    retry: RetryPolicy | None = ...,
    dedupe: bool = ...,
    dtype: Mapping[str, str] | None = ...,
    nrows: int | None = ...,
) -> pd.DataFrame: ...
@overload
def load_results(
    request_id: Sources,
    *,
    token: str | None = ...,
    api_url: str | None = ...,
    output: Literal["arrow"],
    columns: Sequence[str] | None = ...,
    provenance: bool = ...,
    wait: bool | float = ...,
    cache: CacheSetting = ...,
    max_workers: int | None = ...,
    progress: bool | None = ...,
    retry: RetryPolicy | None = ...,
    dedupe: bool = ...,
    dtype: Mapping[str, str] | None = ...,
    nrows: int | None = ...,
) -> pa.Table: ...
@overload
def load_results(
    request_id: Sources,
    *,
    token: str | None = ...,
    api_url: str | None = ...,
    output: Literal["polars", "dask"],
    columns: Sequence[str] | None = ...,
    provenance: bool = ...,
    wait: bool | float = ...,
    cache: CacheSetting = ...,
    max_workers: int | None = ...,
    progress: bool | None = ...,
    retry: RetryPolicy | None = ...,
    dedupe: bool = ...,
    dtype: Mapping[str, str] | None = ...,
    nrows: int | None = ...,
) -> Any: ...
def load_results(
    request_id: Sources,
    *,
    token: str | None = None,
    api_url: str | None = None,
    output: str = "pandas",
    columns: Sequence[str] | None = None,
    provenance: bool = True,
    wait: bool | float = False,
    cache: CacheSetting = None,
    max_workers: int | None = None,
    progress: bool | None = None,
    retry: RetryPolicy | None = None,
    dedupe: bool = False,
    dtype: Mapping[str, str] | None = None,
    nrows: int | None = None,
) -> Any:
    """Load every result file of a Datafiniti download request into one frame.

    Parameters
    ----------
    request_id : int, str, DownloadRequest, or a list of them
        The download request's id (the number in ``/v3/requests/ID``), or
        several: their rows follow in the list's order, and ``_request_id``
        says which request each row came from.
    token : str, optional
        API token. Default: ``DATAFINITI_API_TOKEN``, then ``~/.netrc``.
    api_url : str, optional
        Default: ``DATAFINITI_API_URL``, then ``https://api.datafiniti.co/v3``.
    output : {"pandas", "arrow", "polars", "dask"}
        What to return. Default ``"pandas"``.
    columns : list of str, optional
        Only these data columns, in this order (provenance columns still follow).
        A name given twice counts once; provenance names are accepted; ``[]``
        keeps every row with the provenance columns alone. A name no file has
        raises :class:`ColumnNotFound` with the closest names.
    provenance : bool
        Append ``_request_id``, ``_result_id``, ``_source_file``, ``_source_row``
        and ``_result_created_at``. Default True.
    wait : bool or float
        ``False``: a running request raises :class:`RequestNotReady`. ``True``:
        poll until it is done. A number: poll at most that many seconds.
    cache : path, False or None
        Where downloaded files are kept for the next load. ``None``: the
        ``DATAFINITI_CACHE_DIR`` environment variable, else the user cache dir.
        ``False``: keep nothing.
    max_workers : int, optional
        Files downloaded at once (default 4).
    progress : bool, optional
        Progress bars. Default: when stderr is a terminal or in Jupyter.
    retry : RetryPolicy, optional
        Attempts, backoff and timeouts of every API call and download.
    dedupe : bool
        For several downloads of overlapping records (repeated or incremental
        pulls): keep, for every record ``id``, only the rows of the download
        whose copy has the newest ``dateUpdated`` (ties: the later one in the
        list). A record's rows stay together: all rows of the winning copy,
        none of the others. Rows without an ``id`` stay. Needs the columns
        ``id`` and ``dateUpdated`` (else :class:`ColumnNotFound`).
    dtype : dict, optional
        Column types on request, as in ``pandas.read_csv``: ``{"prices.amountMax":
        "float64", "reviews.rating": "Int64", "prices.isSale": "boolean",
        "dateUpdated": "datetime64[ns, UTC]", "brand": "category", "upc":
        "string"}``. Other columns keep the lossless rules. A value that
        cannot be read as asked raises :class:`ParseError` naming the column,
        file, row and value; a column no file has, :class:`ColumnNotFound`.

    nrows : int, optional
        A quick look: the first ``nrows`` rows (not with ``dedupe`` nor
        ``output="dask"``). Only the files those rows need are fetched, in
        order; each of them whole. Columns are those of the files read, and
        their types are decided from the rows read.

    Returns
    -------
    pandas.DataFrame, pyarrow.Table, polars.DataFrame or dask.dataframe.DataFrame
        Rows in result-id order, then file order. CSV cells are text unless
        every value of the column reads back as the same text once typed.

    Raises
    ------
    DatafinitiError
        Or a subclass: ``AuthenticationError``, ``RequestNotFound``,
        ``RequestNotReady``, ``RequestFailed``, ``ResultExpired``,
        ``DownloadError``, ``ParseError``.

    Examples
    --------
    >>> df = load_results(6073)                                    # doctest: +SKIP
    >>> df.groupby("_source_file", observed=True).size()           # doctest: +SKIP
    """
    if output not in OUTPUTS:
        raise ConfigurationError(
            f"output must be one of {', '.join(map(repr, OUTPUTS))}; got {output!r}."
        )
    options = LoadOptions(token, api_url, wait, cache, max_workers, progress, retry, dedupe, dtype)
    if output == "dask" and nrows is not None:
        raise ConfigurationError("nrows= is a quick look in memory: not with output='dask'.")
    if output == "dask":
        from .sinks.dask import load_dask

        if dedupe:
            raise ConfigurationError(
                "dedupe=True is not available with output='dask' (each partition is one "
                "file; the newest copy of a record may be in another). Write a deduplicated "
                "dataset with to_parquet(..., dedupe=True) and read it with "
                "dask.dataframe.read_parquet."
            )
        return load_dask(request_id, options, columns=columns, provenance=provenance)
    sink = {"arrow": lambda table: table, "polars": to_polars, "pandas": to_pandas}[output]
    if nrows is not None:
        positive_count("nrows", nrows)
        if dedupe:
            raise ConfigurationError(
                "nrows= is a quick look at the first rows; dedupe=True needs every file "
                "(the newest copy of a record may be in the last one). Use one or the other."
            )
    with open_load(request_id, options) as source:
        about = origin_of(request_id, source.client.api_url)
        # No local name holds the table, so to_pandas can free it as it converts.
        return with_origin(
            sink(
                labelled(
                    read_table(source, columns, provenance)
                    if nrows is None
                    else read_head(source, columns, provenance, nrows),
                    about,
                )
            ),
            about,
        )


def origin_of(request_id: Sources, api_url: str) -> dict[str, Any]:
    """What a frame says of where it came from: requests, API host, query, library, time.

    The query and data type are those of the :class:`DownloadRequest` objects
    given, when they are (an id alone does not say them). Never the token.
    """
    from datetime import UTC, datetime

    from ._version import __version__
    from .remote.models import DownloadRequest
    from .sinks.delta import api_host

    given = request_id if isinstance(request_id, list | tuple) else [request_id]
    requests = [r for r in given if isinstance(r, DownloadRequest)]
    origin: dict[str, Any] = {
        "request_ids": request_ids(request_id),
        "api": api_host(api_url),
        "library": __version__,
        "loaded_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    queries = sorted({r.query for r in requests if r.query})
    kinds = sorted({r.data_type for r in requests if r.data_type})
    if queries:
        origin["query"] = queries[0] if len(queries) == 1 else queries
    if kinds:
        origin["data_type"] = kinds[0] if len(kinds) == 1 else kinds
    return origin


def load_tables(
    request_id: Sources,
    *,
    token: str | None = None,
    api_url: str | None = None,
    output: str = "pandas",
    columns: Sequence[str] | None = None,
    provenance: bool = True,
    wait: bool | float = False,
    cache: CacheSetting = None,
    max_workers: int | None = None,
    progress: bool | None = None,
    retry: RetryPolicy | None = None,
    dedupe: bool = False,
    dtype: Mapping[str, str] | None = None,
) -> Tables:
    """Load a download as tidy tables: one row per record, one table per nested list.

    Datafiniti's CSV views give one row per review (or price, menu item...),
    repeating the record's fields on each; JSON keeps lists of objects nested.
    Both become the same tables:

    - ``"records"``: one row per record ``id`` (per request; with ``dedupe``,
      one per id overall), its own fields (scalars, and lists of scalars as the
      flat load keeps them), taken from its first row;
    - one table per list of objects, named by the field (``"reviews"``,
      ``"prices"``, ``"features"``...): ``_record_id``, ``_index`` (the
      element's position in its record), then the element's fields without the
      prefix (``reviews.rating`` -> ``rating``; an element's own id stays
      ``id``). Lists inside an element stay values of its row, and so do lists
      of objects nested deeper. A CSV cell holding a JSON array of objects is
      such a list too, unless the file also has dotted columns of that name
      (which then make the table, and the cell stays a record field);
    - ``"conflicts"``: values of a record's fields that differ between its
      rows (``_record_id``, ``column``, ``value`` as text, ``_source_file``,
      ``_source_row``); the record keeps its first row's value, and a WARNING
      says how many differ.

    Every table ends with ``_request_id``, ``_source_file`` and ``_source_row``
    (a record's: its first row's), unless ``provenance=False``.

    Parameters
    ----------
    request_id, token, api_url, wait, cache, max_workers, progress, retry, dedupe
        As for :func:`load_results`.
    output : {"pandas", "arrow", "polars"}
        The kind of every frame. Default ``"pandas"``.
    columns : list of str, optional
        Flat names (``"reviews.rating"``) to keep; ``id`` is always kept.
    provenance : bool
        End every table with its provenance columns. Default True.
    dtype : dict, optional
        Types by flat name, as for :func:`load_results`: ``{"reviews.rating":
        "Int64"}`` types the ``rating`` column of ``reviews``.

    Returns
    -------
    Tables
        A read-only mapping from table name to frame.

    Raises
    ------
    ColumnNotFound
        The files have no ``id`` column (read them flat with :func:`load_results`).

    Examples
    --------
    >>> tables = load_tables(6073)                                  # doctest: +SKIP
    >>> tables["reviews"].groupby("_record_id")["rating"].mean()    # doctest: +SKIP
    """
    if output not in TABLE_OUTPUTS:
        raise ConfigurationError(
            f"output must be one of {', '.join(map(repr, TABLE_OUTPUTS))} for tables; "
            f"got {output!r}."
        )
    if columns is not None:
        columns = list(dict.fromkeys(["id", *([columns] if isinstance(columns, str) else columns)]))
    options = LoadOptions(token, api_url, wait, cache, max_workers, progress, retry, dedupe, dtype)
    with open_load(request_id, options) as source:
        tidy_tables = tidy(read_table(source, columns, True), per_request=not dedupe)
    return tables_from(tidy_tables, output, provenance)


def to_parquet(
    request_id: Sources,
    path: str,
    *,
    token: str | None = None,
    api_url: str | None = None,
    columns: Sequence[str] | None = None,
    provenance: bool = True,
    wait: bool | float = False,
    cache: CacheSetting = None,
    max_workers: int | None = None,
    progress: bool | None = None,
    partition_by: Sequence[str] | str | None = None,
    overwrite: bool = False,
    storage_options: dict[str, Any] | None = None,
    retry: RetryPolicy | None = None,
    dedupe: bool = False,
    dtype: Mapping[str, str] | None = None,
    tables: bool = False,
    engine: str = "local",
) -> ParquetSummary:
    """Convert a download request's results to a Parquet dataset, in bounded memory.

    Parameters
    ----------
    request_id, token, api_url, columns, provenance, wait, cache, max_workers, progress, retry
        As for :func:`load_results`.
    dtype : dict, optional
        As for :func:`load_results`; the Parquet columns get those types.
    dedupe : bool
        As for :func:`load_results`; memory stays bounded (the decision is
        made from an index of record ids and dates, not from the rows).
    path : str
        The dataset directory: a local path or any fsspec URL (``s3://...``).
    partition_by : str or list of str, optional
        Columns to partition by (hive-style directories).
    overwrite : bool
        Replace an existing dataset at ``path``. Default False: raise instead.
    storage_options : dict, optional
        Passed to fsspec for ``path``.
    tables : bool
        Write the tidy tables of :func:`load_tables` instead of the flat rows:
        one dataset per table under ``path`` (``path/records/``,
        ``path/reviews/``...), published together. Memory holds a fraction of
        the download at a time; records are grouped by a hash of their id, so
        their order is not the download's.

    Returns
    -------
    ParquetSummary
        Rows, result files read, Parquet bytes written and the path (with
        ``tables=True``, each table's rows in ``tables``).

    engine : {"local", "dask"}
        ``"dask"``: the dask workers (a ``distributed.Client`` in use) fetch,
        scan and convert the files, one Parquet file per result file written
        straight into the staging directory beside ``path`` (a path the
        workers share, or an object store); this process makes API calls,
        decides the types from the workers' findings, writes the manifest and
        publishes, as the local engine does; with ``dedupe`` the workers send
        each record's id and date, the client picks the winners, the workers
        write only their rows. Not yet with ``partition_by`` or ``tables``.

    Notes
    -----
    The dataset is written next to ``path`` and moved there when complete:
    after any failure nothing is left at ``path``. Each file's key-value
    metadata (key ``datafiniti_loader``) records the request id, result ids,
    file names, row counts, library version and load time.
    """
    options = LoadOptions(token, api_url, wait, cache, max_workers, progress, retry, dedupe, dtype)
    if engine not in ("local", "dask"):
        raise ConfigurationError(f"engine must be 'local' or 'dask'; got {engine!r}.")
    if engine == "dask":
        if partition_by or tables:
            raise ConfigurationError(
                "engine='dask' does not yet take partition_by or tables: use the local "
                "engine for those."
            )
        from .sinks.daskparquet import write_parquet_on_dask

        return write_parquet_on_dask(
            request_id, path, options, columns=list(columns) if columns else None,
            provenance=provenance, overwrite=overwrite, storage_options=storage_options,
        )  # fmt: skip
    if tables:
        check_options(partition_by)
        with open_load(request_id, options) as source:
            return write_tables(
                source, path, columns=columns, provenance=provenance,
                about=dataset_metadata(source), overwrite=overwrite,
                storage_options=storage_options,
            )  # fmt: skip
    with open_load(request_id, options) as source:
        return write_parquet(
            source,
            path,
            columns=columns,
            provenance=provenance,
            partition_by=partition_by,
            overwrite=overwrite,
            storage_options=storage_options,
        )


def to_delta(
    request_id: Sources,
    path: str,
    *,
    mode: str = "merge",
    storage_options: dict[str, str] | None = None,
    token: str | None = None,
    api_url: str | None = None,
    wait: bool | float = False,
    cache: CacheSetting = None,
    max_workers: int | None = None,
    progress: bool | None = None,
    retry: RetryPolicy | None = None,
    dtype: Mapping[str, str] | None = None,
    tables: bool = False,
    engine: str = "local",
) -> DeltaSummary:
    """Merge downloads into a Delta Lake table that lives on across downloads.

    Parameters
    ----------
    request_id : int, str, DownloadRequest, or a list of them
        The downloads to write.
    path : str
        The table: a local path or an object-store URI (``s3://...``).
    mode : {"merge", "append", "overwrite"}
        ``"merge"`` (default): for every record ``id``, a copy newer than the
        table's (``dateUpdated``; ties: the newer download, by request id)
        replaces all of that record's rows in the table, in one commit; older
        copies are ignored; new records are added. The result does not
        depend on the order downloads are merged in, and merging a request
        again changes nothing (no new version). ``"append"`` and
        ``"overwrite"`` write every row, as ``deltalake.write_deltalake``.
    storage_options : dict, optional
        Passed to deltalake for ``path`` (credentials of an object store).
    token, api_url, wait, cache, max_workers, progress, retry, dtype
        As for :func:`load_results`.

    tables : bool
        Keep the tidy tables of :func:`load_tables`, one Delta table per name
        under ``path`` (``path/records``, ``path/reviews``...), merged record
        by record: a record's newest copy replaces its ``records`` row and all
        of its rows in every other table. Tables are committed one at a time,
        ``records`` last; a merge stopped between two commits is completed by
        merging the same request again. Needs ``mode="merge"``.
    engine : {"local", "dask"}
        ``"dask"`` (``mode="merge"``, a ``distributed.Client`` in use): the
        workers fetch and scan the files and send each record's id and date;
        this process decides the winning copies, the workers write their
        rows' data files straight into the table (which they must reach: an
        object store, or a shared file system), and this process commits
        them in one commit. Not yet with ``tables`` or partitioned tables.

    Returns
    -------
    DeltaSummary
        Version, rows inserted, records added, replaced and unchanged, the
        requests written; ``committed`` is False when nothing changed.

    Raises
    ------
    TableConflict
        Another writer committed first; nothing of this write landed: run it again.

    Notes
    -----
    Each commit records the request ids it wrote and the library version
    (commit metadata ``datafiniti_loader``): :func:`delta_history` lists them.
    A column new in a download is added; a column whose values in a download
    are of another type than the table's becomes text (nothing is lost). In
    an existing table a column keeps the table's type: ``dtype=`` decides the
    columns the table does not have yet (and every column of a new table).
    Needs the ``[delta]`` extra.
    """
    from .sinks.delta import DELTA_MODES, require_deltalake, write_delta

    require_deltalake()  # before any download: without the extra, say so at once
    if tables and mode != "merge":
        raise ConfigurationError(
            "tables=True (--tables) merges record by record: mode must be 'merge'."
        )

    if mode not in DELTA_MODES:
        raise ConfigurationError(f"mode must be one of {', '.join(DELTA_MODES)}; got {mode!r}.")
    if engine not in ("local", "dask"):
        raise ConfigurationError(f"engine must be 'local' or 'dask'; got {engine!r}.")
    if engine == "dask":
        if tables or mode != "merge":
            raise ConfigurationError(
                "engine='dask' merges (mode='merge') into one table: not yet with tables=True "
                "or other modes; use the local engine for those."
            )
        from .sinks.daskdelta import write_delta_on_dask

        options = LoadOptions(
            token, api_url, wait, cache, max_workers, progress, retry, True, dtype, merging=True
        )
        return write_delta_on_dask(request_id, path, options, storage_options=storage_options)
    wanted = request_ids(request_id)
    # Ties go to the newer download: in request-id order, whatever order they were given.
    sources = sorted(wanted) if mode == "merge" else wanted
    merging = mode == "merge"
    options = LoadOptions(
        token, api_url, wait, cache, max_workers, progress, retry, merging, dtype, merging=merging
    )
    with open_load(sources, options) as source:
        if tables:
            from .sinks.deltatables import write_delta_tables

            return write_delta_tables(source, path, storage_options=storage_options)
        return write_delta(source, path, mode=mode, storage_options=storage_options)


def delta_history(path: str, storage_options: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """A Delta table's versions, newest first: operation, time, requests merged, rows inserted."""
    from .sinks.delta import history

    return history(path, storage_options)


def count(
    query: str,
    *,
    data_type: str = "products",
    token: str | None = None,
    api_url: str | None = None,
    retry: RetryPolicy | None = None,
) -> int:
    """How many records match ``query``, without creating a download or spending credits.

    Needs API v4 (``api_url`` ending in ``/v4``): a search for zero records.

    Examples
    --------
    >>> count("categories:hotels AND country:US", data_type="businesses")  # doctest: +SKIP
    48213
    """
    with Client(token, api_url, retry=retry) as client:
        return client.count(query, data_type=data_type)


def create_download(
    query: str,
    *,
    data_type: str = "products",
    num_records: int | str,
    format: str = "csv",
    view: str | None = None,
    token: str | None = None,
    api_url: str | None = None,
    retry: RetryPolicy | None = None,
) -> DownloadRequest:
    """Ask Datafiniti for a download of the records matching ``query``.

    ``num_records`` is required: a positive number, or ``"all"`` for every
    match (every record costs credits). Pass the returned request to
    :func:`load_results` with ``wait=True``. See :meth:`Client.create_download`.

    Examples
    --------
    >>> request = create_download("brand:Sony", num_records=500)  # doctest: +SKIP
    >>> df = load_results(request, wait=True)                     # doctest: +SKIP
    """
    with Client(token, api_url, retry=retry) as client:
        return client.create_download(
            query, data_type=data_type, num_records=num_records, format=format, view=view
        )


def download_files(
    request_id: Sources,
    *,
    dest: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    token: str | None = None,
    api_url: str | None = None,
    wait: bool | float = False,
    cache: CacheSetting = None,
    max_workers: int | None = None,
    progress: bool | None = None,
    retry: RetryPolicy | None = None,
) -> list[Path]:
    """The request's result files on local disk, verified and unparsed, in result order.

    Without ``dest`` the paths are the cache's own copies (read them, do not
    edit them); with ``dest`` each file is copied there under its name
    (``6073_1.csv``), whole or not at all. A file already in ``dest`` with the
    same bytes is kept; one with other bytes raises :class:`TargetExists`
    unless ``overwrite``. Files already in the cache are not downloaded again.

    Raises
    ------
    ConfigurationError
        ``cache=False`` without ``dest``: the files would be removed on return.

    Examples
    --------
    >>> paths = download_files(6073, dest="raw/6073")          # doctest: +SKIP
    >>> [p.name for p in paths]                                 # doctest: +SKIP
    ['6073_1.csv', '6073_2.csv']
    """
    from .fetch.keep import kept_copy

    if cache is False and dest is None:
        raise ConfigurationError(
            "download_files with cache=False (--no-cache) needs dest= (--dest): without a "
            "cache the files would be removed as the call returns."
        )
    options = LoadOptions(token, api_url, wait, cache, max_workers, progress, retry)
    folder = None if dest is None else Path(dest).expanduser()
    paths = []
    with open_load(request_id, options) as source:
        for file, path in source.download.local_files():
            paths.append(
                path if folder is None else kept_copy(file, path, folder, overwrite=overwrite)
            )
        source.download.progress.close()
    return paths


def list_downloads(
    *,
    limit: int | None = None,
    token: str | None = None,
    api_url: str | None = None,
    retry: RetryPolicy | None = None,
) -> DownloadList:
    """The account's past downloads, newest first: status, query, records, date.

    v3 ``GET /requests``, v4 ``GET /downloads``. Shown as a table in notebooks.

    Examples
    --------
    >>> list_downloads(limit=5)                           # doctest: +SKIP
    """
    from .display import DownloadList

    with Client(token, api_url, retry=retry) as client:
        return DownloadList(client.downloads(limit))
