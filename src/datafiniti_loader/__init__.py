"""datafiniti-loader: Datafiniti download results into pandas, Arrow, polars, dask or Parquet.

>>> from datafiniti_loader import load_results          # doctest: +SKIP
>>> df = load_results(6073)                             # doctest: +SKIP

The names below load on first use (PEP 562), so that ``import
datafiniti_loader`` and ``datafiniti-loader --version`` do not import pandas,
pyarrow and the HTTP stacks until something needs them.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import (
    ApiError,
    AuthenticationError,
    ColumnConflict,
    ColumnNotFound,
    ConfigurationError,
    DatafinitiError,
    DownloadError,
    DownloadMayExist,
    NoResults,
    ParseError,
    RequestFailed,
    RequestNotFound,
    RequestNotReady,
    ResultExpired,
    StorageError,
    SyncMismatch,
    SyncPending,
    TableConflict,
    TargetExists,
    TooManyRecords,
    UnsupportedTable,
)

if TYPE_CHECKING:
    from .api import (
        count,
        create_download,
        delta_history,
        download_files,
        list_downloads,
        load_results,
        load_tables,
        to_delta,
        to_parquet,
    )
    from .display import DownloadList
    from .remote.client import Client
    from .remote.models import DownloadRequest, ResultFile
    from .retry import RetryPolicy
    from .sinks.delta import DeltaSummary
    from .sinks.parquet import ParquetSummary
    from .sinks.tables import Tables
    from .syncing import SyncSummary, sync

logging.getLogger("datafiniti_loader").addHandler(logging.NullHandler())

_LAZY = {
    "count": "api",
    "download_files": "api",
    "list_downloads": "api",
    "DownloadList": "display",
    "create_download": "api",
    "delta_history": "api",
    "to_delta": "api",
    "DeltaSummary": "sinks.delta",
    "load_results": "api",
    "load_tables": "api",
    "Tables": "sinks.tables",
    "to_parquet": "api",
    "Client": "remote.client",
    "DownloadRequest": "remote.models",
    "ResultFile": "remote.models",
    "ParquetSummary": "sinks.parquet",
    "RetryPolicy": "retry",
    "sync": "syncing",
    "SyncSummary": "syncing",
}

__all__ = [
    "ApiError",
    "AuthenticationError",
    "Client",
    "ColumnConflict",
    "ColumnNotFound",
    "ConfigurationError",
    "DatafinitiError",
    "DeltaSummary",
    "DownloadError",
    "DownloadList",
    "DownloadMayExist",
    "DownloadRequest",
    "NoResults",
    "ParquetSummary",
    "ParseError",
    "RequestFailed",
    "RequestNotFound",
    "RequestNotReady",
    "ResultExpired",
    "ResultFile",
    "RetryPolicy",
    "StorageError",
    "SyncMismatch",
    "SyncPending",
    "SyncSummary",
    "TableConflict",
    "Tables",
    "TargetExists",
    "TooManyRecords",
    "UnsupportedTable",
    "__version__",
    "count",
    "create_download",
    "delta_history",
    "download_files",
    "list_downloads",
    "load_results",
    "load_tables",
    "sync",
    "to_delta",
    "to_parquet",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'datafiniti_loader' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
