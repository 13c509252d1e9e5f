"""The exceptions users can act on.

Every failure a user can do something about is a :class:`DatafinitiError`
whose message says what happened and what to do next. Messages are built from
facts the library controls (request ids, file names, status codes), never from
URLs with their query strings or from the token.
"""

from __future__ import annotations

__all__ = [
    "ApiError",
    "AuthenticationError",
    "ColumnConflict",
    "ColumnNotFound",
    "ConfigurationError",
    "DatafinitiError",
    "DownloadError",
    "NoResults",
    "ParseError",
    "RequestFailed",
    "RequestNotFound",
    "RequestNotReady",
    "ResultExpired",
    "StorageError",
    "TableConflict",
    "TargetExists",
]


class DatafinitiError(Exception):
    """Base class of every error this library raises on purpose.

    Attributes
    ----------
    status : int or None
        The HTTP status behind the error, when there was one.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class AuthenticationError(DatafinitiError):
    """No API token was found, or the API refused it (HTTP 401/403)."""


class RequestNotFound(DatafinitiError):
    """The API knows no download request with this id."""


class NoResults(RequestNotFound):
    """The request completed but produced no result files."""


class RequestNotReady(DatafinitiError):
    """The download request is still running; its message gives status and progress."""

    def __init__(self, message: str, *, status_text: str = "", progress: float | None = None):
        super().__init__(message)
        self.status_text = status_text
        self.progress = progress


class RequestFailed(DatafinitiError):
    """The download request ended with an error or was cancelled."""


class ResultExpired(DatafinitiError):
    """A result file's URL has expired and fresh URLs do not help."""


class DownloadError(DatafinitiError):
    """A result file could not be downloaded after retries."""


class ParseError(DatafinitiError):
    """A result file could not be read; the message names the file and the line or record."""

    def __init__(self, message: str, *, file: str = "", line: int | None = None):
        super().__init__(message)
        self.file = file
        self.line = line


class StorageError(DatafinitiError):
    """A local file (cache, scratch copy or output) could not be written."""


class ColumnNotFound(DatafinitiError, ValueError):
    """``columns=``, ``partition_by=`` or ``dtype=`` named a column that no result file has."""


class ColumnConflict(DatafinitiError, ValueError):
    """A result file has a column named like a provenance column (``_source_row``...).

    The library never renames a file's column nor lets one hide another: such
    files load with ``provenance=False``.
    """


class ApiError(DatafinitiError):
    """The API answered something Datafiniti does not send (a proxy's page, a broken body).

    The message gives the status, content type and the first bytes of the
    answer (with URL queries and the token removed).
    """


class ConfigurationError(DatafinitiError, ValueError):
    """A setting or argument cannot work (an API URL that is not Datafiniti's, plain http)."""


class TargetExists(StorageError, FileExistsError):
    """The output path holds something this library will not replace.

    Either ``overwrite`` was not asked for, or what is there is not a dataset
    this library wrote (it never deletes files it did not write).
    """


class TableConflict(StorageError):
    """Another writer committed to the Delta table first; nothing of this write landed.

    Run the write again: it merges against the new version.
    """
