"""datafiniti-loader: Datafiniti download results into pandas, Arrow, polars, dask or Parquet.

>>> from datafiniti_loader import load_results          # doctest: +SKIP
>>> df = load_results(6073)                             # doctest: +SKIP
"""

from __future__ import annotations

import logging

from ._version import __version__
from .api import load_results, to_parquet
from .client import Client
from .errors import (
    ApiError,
    AuthenticationError,
    ColumnNotFound,
    ConfigurationError,
    DatafinitiError,
    DownloadError,
    NoResults,
    ParseError,
    RequestFailed,
    RequestNotFound,
    RequestNotReady,
    ResultExpired,
    StorageError,
    TargetExists,
)
from .models import DownloadRequest, ResultFile
from .parquet import ParquetSummary
from .retry import RetryPolicy

logging.getLogger("datafiniti_loader").addHandler(logging.NullHandler())

__all__ = [
    "ApiError",
    "AuthenticationError",
    "Client",
    "ColumnNotFound",
    "ConfigurationError",
    "DatafinitiError",
    "DownloadError",
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
    "TargetExists",
    "__version__",
    "load_results",
    "to_parquet",
]
