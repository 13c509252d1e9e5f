"""The exceptions users can act on.

Every failure a user can do something about is a :class:`DatafinitiError`
whose message says what happened and what to do next. Messages are built from
facts the library controls (request ids, file names, status codes), never from
URLs with their query strings or from the token.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "ColumnNotFound",
    "DatafinitiError",
    "DownloadError",
    "NoResults",
    "ParseError",
    "RequestFailed",
    "RequestNotFound",
    "RequestNotReady",
    "ResultExpired",
    "StorageError",
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
    """``columns=`` named a column that no result file has."""
