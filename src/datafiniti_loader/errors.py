"""The exceptions users can act on.

Every failure a user can do something about is a :class:`DatafinitiError`
whose message says what happened and what to do next. Messages are built from
facts the library controls (request ids, file names, status codes), never from
URLs with their query strings or from the token.
"""

from __future__ import annotations

import base64
import re
import threading

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
    "UnsupportedTable",
    "register_secret",
    "scrub",
]


_URL_QUERY = re.compile(r"(https?://[^\s\"'<>?]*)\?[^\s\"'<>]*")
# A query that signs a request, with or without the URL's scheme and host before it.
_SIGNING = r"(?:signature|x-amz-|awsaccesskeyid|credential|security-?token|x-goog-)"
_SIGNED_QUERY = re.compile(rf"\?[^\s\"'<>]*?{_SIGNING}[^\s\"'<>]*", re.IGNORECASE)
_SIGNING_PARAM = re.compile(rf"(\b{_SIGNING}[\w-]*=)[^\s&\"'<>]+", re.IGNORECASE)
# A credential after its scheme (``Basic xyz``), or a token given as ``token=xyz``:
# eight characters or more, with a digit or a base64 sign (not a word like "failed").
_CREDENTIALS = re.compile(
    r"\b((?:Basic|Bearer)\s+|token[=:])(?=[\w+/=.~-]*[\d+/=])[\w+/=.~-]{8,}", re.IGNORECASE
)
_SHORTEST_SECRET = 6
_secrets: set[str] = set()
_secrets_lock = threading.Lock()


def register_secret(token: str) -> None:
    """Remember a token, so that no message of this process can ever show it.

    Its HTTP Basic form (base64 of ``token:``) is remembered too: an API that
    echoes its request's headers in an error body would show that.
    """
    if len(token) < _SHORTEST_SECRET:  # a test's "t": replacing it would garble every message
        return
    basic = base64.b64encode(f"{token}:".encode()).decode()
    with _secrets_lock:
        _secrets.update((token, basic, basic.rstrip("=")))


def scrub(text: str, *secrets: str) -> str:
    """``text`` without URL queries, signing parameters, credentials and known tokens.

    Signed queries are cut whether or not their URL has a scheme
    (``/bucket/key?X-Amz-Signature=...``), as servers echo them in errors.
    """
    text = _URL_QUERY.sub(r"\1?...", text)
    text = _SIGNED_QUERY.sub("?...", text)
    text = _SIGNING_PARAM.sub(r"\1***", text)
    text = _CREDENTIALS.sub(r"\1***", text)
    with _secrets_lock:
        known = sorted(_secrets.union(s for s in secrets if s), key=len, reverse=True)
    for secret in known:
        text = text.replace(secret, "***")
    return text


class DatafinitiError(Exception):
    """Base class of every error this library raises on purpose.

    Its message is scrubbed (:func:`scrub`) whatever went into it: text from
    a server (an S3 error's ``Message``, an API's error body) may echo a
    signed URL or the request's ``Authorization`` header.

    Attributes
    ----------
    status : int or None
        The HTTP status behind the error, when there was one.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(scrub(message))
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
    """A column cannot go where it must, and nothing was written.

    A result file has a column named like a provenance column
    (``_source_row``...): the library never renames a file's column nor lets
    one hide another, so such files load with ``provenance=False``. Or (the dlt
    source) a download has values the destination's column type would change,
    such as ``02134`` for a ``bigint`` column.
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


class UnsupportedTable(DatafinitiError):
    """The Delta table has a rule this library's writes cannot keep (named in the message).

    A CHECK constraint, a generated column, column mapping, deletion vectors...:
    the table is refused before anything is downloaded or written, never
    committed around.
    """


class TableConflict(StorageError):
    """Another writer committed to the Delta table first; nothing of this write landed.

    Run the write again: it merges against the new version.
    """


class DownloadMayExist(DatafinitiError):
    """A call that may have created a download failed after it was sent.

    It is not sent again: a second download would spend credits again. Look
    at your downloads (Datafiniti's portal) before asking once more.
    """


class SyncMismatch(DatafinitiError, ValueError):
    """The path holds a table of another query, data type, view or format, or not a sync's.

    A synced table is one query's: its high-water mark means nothing for
    another query. Sync that query into a path of its own.
    """


class TooManyRecords(DatafinitiError):
    """A sync would download more records than ``max_records``; nothing was spent.

    Attributes
    ----------
    count : int
        How many records would have been downloaded.
    """

    def __init__(self, message: str, *, count: int) -> None:
        super().__init__(message)
        self.count = count


class SyncPending(DatafinitiError):
    """An earlier sync asked for a download and never heard whether it was made.

    The message says how to go on: with that download (``request_id=``), or
    without it (``forget_pending=True``) once you know none was made.
    """
