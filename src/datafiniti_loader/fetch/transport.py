"""Transport: a result file's pre-signed URL to a complete, verified local file.

Files are streamed through :class:`~.bucketfs.BucketFileSystem`, an fsspec
file system over ``requests`` that sends each URL byte-for-byte as signed, in
exactly one GET per attempt (no HEAD, which S3 refuses on a URL signed for
GET, and no probing read), and with no ``Authorization`` header (S3 answers
400 when one arrives beside a signature).

What the bucket says is checked, not assumed: a ``206`` must carry the
``Content-Range`` that was asked for, and the bytes on disk must add up to the
size the bucket gave. A download that stops (a dropped connection, retries
spent, Ctrl-C, a killed process) leaves a :class:`Partial`: its bytes plus the
object's ``ETag``, from which a later attempt resumes with ``Range`` guarded
by ``If-Range``, so a changed object is fetched whole rather than spliced.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit

from ..config import is_loopback
from ..errors import DownloadError, StorageError
from ..remote.models import ResultFile
from ..retry import RETRYABLE_STATUSES, RetryPolicy
from .bucketfs import (
    BucketError,
    BucketFile,
    BucketFileSystem,
    BucketUnreachable,
    RedirectRefused,
    TlsRejected,
)
from .nofollow import open_to_write

__all__ = [
    "DownloadCancelled",
    "Fetched",
    "Partial",
    "Transport",
    "UrlExpired",
    "sha256_of",
]

logger = logging.getLogger(__name__)

_READ_BYTES = 1024 * 1024
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


class UrlExpired(Exception):
    """The bucket said the pre-signed URL has expired (internal: the loader refreshes it)."""


class DownloadCancelled(Exception):
    """The load this download belonged to was abandoned (an error elsewhere, or Ctrl-C)."""


@dataclass(frozen=True)
class Fetched:
    """A complete local copy of a result file, as the bucket described it."""

    path: Path
    size: int
    etag: str | None
    downloaded: int  # bytes that crossed the network for it


@dataclass
class Partial:
    """A download in progress: the bytes on disk and what makes resuming them safe.

    ``etag`` is the bucket's word on the object whose prefix ``path`` holds;
    a resume sends ``If-Range: etag`` so that a changed object comes back
    whole instead of being spliced onto old bytes. ``on_change`` is called
    whenever it changes, so a store can persist it before more bytes land (a
    killed process can then still be resumed). ``kept``: the bytes outlive
    the load (the cache), so the next load resumes them.
    """

    path: Path
    etag: str | None = None
    kept: bool = False
    on_change: Callable[[Partial], None] | None = field(default=None, repr=False)

    def describe(self, etag: str | None) -> None:
        """Record the object's ETag, as the bucket gave it."""
        if etag != self.etag:
            self.etag = etag
            if self.on_change is not None:
                self.on_change(self)


class _Attempt:
    """What a download has got so far, carried across retries: the bytes on disk."""

    def __init__(self, partial: Partial) -> None:
        self.partial = partial
        self.downloaded = 0
        self.received = 0
        if partial.etag and partial.path.exists() and not partial.path.is_symlink():
            self.received = partial.path.stat().st_size
            if self.received:
                logger.debug("%s: resuming after %d bytes", partial.path.name, self.received)
        else:
            self.restart()

    def restart(self) -> None:
        """Forget the bytes on disk: the next answer must be the whole object."""
        try:
            open_to_write(self.partial.path, append=False).close()
        except OSError as exc:
            raise _unwritable(self.partial.path, exc) from None
        self.received = 0


class Transport:
    """Downloads result files with retries, resume, size checks and S3 error mapping.

    Parameters
    ----------
    policy : RetryPolicy
        Attempts, backoff and timeouts.
    on_bytes : callable, optional
        Called with the number of bytes each time some arrive (progress bars).
    """

    def __init__(
        self,
        policy: RetryPolicy | None = None,
        *,
        on_bytes: Callable[[int], None] | None = None,
    ) -> None:
        self.policy = policy or RetryPolicy()
        self.on_bytes = on_bytes
        self._fs: BucketFileSystem | None = None
        self._fs_lock = threading.Lock()
        self._cancelled = threading.Event()
        self._warned_plain_http = False

    @property
    def cancelled(self) -> threading.Event:
        """Set once the load is abandoned; waits elsewhere in the load watch it too."""
        return self._cancelled

    def cancel(self) -> None:
        """Stop every download of this transport now, whether waiting for an answer or a body."""
        self._cancelled.set()
        with self._fs_lock:
            fs = self._fs
        if fs is not None:
            fs.abort()

    @property
    def fs(self) -> BucketFileSystem:
        """The file system, made on first use: a load served from the cache needs none."""
        with self._fs_lock:
            if self._fs is None:
                self._fs = BucketFileSystem(self.policy.connect_timeout, self.policy.read_timeout)
            return self._fs

    def download(self, file: ResultFile, partial: Partial) -> Fetched:
        """Download ``file`` into ``partial.path``, resuming the bytes already there.

        Raises
        ------
        UrlExpired
            The bucket says the URL has expired; fetch a fresh one and call again.
        DownloadError
            The file could not be downloaded after all retries.
        DownloadCancelled
            :meth:`cancel` was called.
        """
        self._warn_if_plain_http(file)
        attempt = _Attempt(partial)
        for retry in range(self.policy.attempts):
            if self._cancelled.is_set():
                raise DownloadCancelled(file.name)
            try:
                self._get(file, attempt)
            except _Retryable as exc:
                if self._cancelled.is_set():
                    raise DownloadCancelled(file.name) from None
                if exc.restart:
                    attempt.restart()
                if retry == self.policy.attempts - 1:
                    error = DownloadError(
                        f"Could not download {file.name} (result {file.id}) after "
                        f"{self.policy.attempts} tries: {exc}. Check your connection and "
                        f"load again{_resume_hint(partial, attempt)}.",
                        status=exc.status,
                    )
                    break
                wait = 0.0 if exc.restart else self.policy.delay(retry, exc.retry_after)
                logger.debug("%s: %s; retry %d in %.2fs", file.name, exc, retry + 1, wait)
                self._cancelled.wait(wait)
                continue
            return Fetched(partial.path, attempt.received, partial.etag, attempt.downloaded)
        raise error  # outside the except block: no exception holding the URL rides along

    def _warn_if_plain_http(self, file: ResultFile) -> None:
        if self._warned_plain_http or not file.url.startswith("http://") or is_loopback(file.url):
            return
        self._warned_plain_http = True
        logger.warning(
            "result files of request %d are served over plain http:// from %s: their bytes "
            "can be read or altered on the way. Ask Datafiniti about https:// result URLs.",
            file.request_id,
            urlsplit(file.url).hostname,
        )

    def _get(self, file: ResultFile, attempt: _Attempt) -> None:
        offset = attempt.received
        headers = {}
        if offset:
            headers = {"Range": f"bytes={offset}-", "If-Range": str(attempt.partial.etag)}
        with self._open_body(file, headers) as body:
            total = _check_answer(body.status, body.headers, offset, attempt)
            attempt.partial.describe(body.headers.get("ETag") or None)
            try:
                attempt.downloaded += self._write_body(body, attempt)
            except BucketUnreachable as exc:
                raise _Retryable(
                    f"connection lost after {attempt.received:,} bytes ({exc})"
                ) from None
        if total is not None and attempt.received != total:
            if attempt.received > total:
                raise _Retryable(f"body ran past its {total:,} bytes", restart=True)
            raise _Retryable(f"body ended at {attempt.received:,} of {total:,} bytes")
        _check_not_a_page(attempt.partial.path)

    def _open_body(self, file: ResultFile, headers: dict[str, str]) -> BucketFile:
        failure: Exception
        try:
            body: BucketFile = self.fs.open(file.url, headers=headers)  # fsspec's open: one GET
            return body
        except BucketError as exc:
            failure = _status_failure(file, exc)
        except RedirectRefused as exc:
            failure = DownloadError(f"Could not download {file.name} (result {file.id}): {exc}.")
        except TlsRejected:
            failure = DownloadError(
                f"TLS certificate verification failed downloading {file.name}. If a proxy "
                "inspects TLS, point REQUESTS_CA_BUNDLE (or SSL_CERT_FILE) at its CA."
            )
        except BucketUnreachable as exc:
            failure = _Retryable(f"connection failed ({exc})")
        raise failure  # raised here, not in the except block: nothing chained

    def _write_body(self, body: BucketFile, attempt: _Attempt) -> int:
        path = attempt.partial.path
        try:
            out = open_to_write(path, append=bool(attempt.received))
        except OSError as exc:
            raise _unwritable(path, exc) from None
        with out:
            return _drain(body, out, attempt, self.on_bytes, self._cancelled, self.policy)


def _status_failure(file: ResultFile, error: BucketError) -> Exception:
    """What an error status means for this download: refresh the URL, retry, or give up."""
    status, code = error.status, error.code
    if status == 403 and ("expired" in error.message.lower() or code == "ExpiredToken"):
        return UrlExpired(file.name)
    if status == 416:  # the bytes kept are not a prefix of this object: start over
        return _Retryable("the bucket refused the resume range (HTTP 416)", restart=True)
    if status in RETRYABLE_STATUSES:
        return _Retryable(str(error), status, error.retry_after)
    detail = f" {code}: {error.message}" if code else ""
    hint = {
        400: "The request to the bucket was malformed; make sure no proxy adds an "
        "Authorization header.",
        403: "The bucket refused the URL. Load again to get fresh URLs.",
        404: "The file is no longer on the bucket; request the download again.",
    }.get(status, "Try again later.")
    return DownloadError(
        f"Could not download {file.name} (result {file.id}): HTTP {status}{detail}. {hint}",
        status=status,
    )


class _Retryable(Exception):
    def __init__(
        self,
        reason: str,
        status: int | None = None,
        retry_after: str | None = None,
        *,
        restart: bool = False,
    ):
        super().__init__(reason)
        self.status = status
        self.retry_after = retry_after
        self.restart = restart  # the bytes kept are of no use: retry from byte 0, at once


def _check_answer(
    status: int, headers: Mapping[str, str], offset: int, attempt: _Attempt
) -> int | None:
    """The object's total size, after checking the answer is the bytes that were asked for.

    A ``200`` is the whole object (any bytes kept are dropped); a ``206`` must
    start exactly at ``offset`` (the bytes already on disk), whatever was asked.
    """
    length = headers.get("Content-Length", "")
    if status not in (200, 206):  # a 204, 304, 300 without Location...: not the file
        raise _Retryable(f"the bucket answered HTTP {status} {_phrase(status)}, not the file")
    _check_media_type(headers.get("Content-Type", ""))
    if status != 206:
        if offset:
            logger.debug("the bucket sent the whole object again; restarting")
            attempt.restart()
        return int(length) if length.isdigit() else None
    match = _CONTENT_RANGE.match(headers.get("Content-Range", "").strip())
    if match is None or match.group(3) == "*":
        raise _Retryable("a partial answer (HTTP 206) without a usable Content-Range")
    first, last, total = (int(g) for g in match.groups())
    etag = headers.get("ETag") or None
    if offset and (etag is None or etag != attempt.partial.etag):
        # The bucket ignored If-Range: these are bytes of another version of the object.
        raise _Retryable("the bucket resumed another version of the file (its ETag changed)",
                         restart=True)  # fmt: skip
    if first != offset or (length.isdigit() and int(length) != last - first + 1):
        asked = f"from byte {offset:,}" if offset else "the whole file"
        raise _Retryable(
            f"asked for {asked}, the bucket sent bytes {first:,}-{last:,} of {total:,}"
        )
    return total


#: Media types of pages, never of a result file (CSV or JSON, perhaps gzipped).
_PAGE_TYPES = ("text/html", "application/xhtml+xml", "application/xml", "text/xml")
#: How a page (a proxy's login form, a bucket's error document) starts.
_PAGE_STARTS = (b"<!doctype", b"<html", b"<?xml", b"<error>", b"<head", b"<body")


def _check_media_type(content_type: str) -> None:
    """Refuse an answer whose ``Content-Type`` says it is a page, not a result file."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media in _PAGE_TYPES:
        raise _Retryable(f"the bucket sent a page ({media}), not the file", restart=True)


def _check_not_a_page(path: Path) -> None:
    """Refuse a download whose first bytes are an HTML or XML page, whatever it was labelled."""
    with open(path, "rb") as head:
        start = head.read(512).lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if start.startswith(_PAGE_STARTS):
        kind = "an XML document" if start.startswith((b"<?xml", b"<error>")) else "an HTML page"
        raise _Retryable(f"the bucket sent {kind}, not a CSV or JSON file", restart=True)


def _phrase(status: int) -> str:
    try:
        return f"({HTTPStatus(status).phrase})"
    except ValueError:
        return "(an unknown status)"


def _drain(
    body: BucketFile,
    out: BinaryIO,
    attempt: _Attempt,
    on_bytes: Callable[[int], None] | None,
    cancelled: threading.Event,
    policy: RetryPolicy,
) -> int:
    written = 0
    pace = _Pace(policy.min_rate, policy.rate_window)
    while True:
        if cancelled.is_set():
            raise DownloadCancelled("the load was abandoned")
        chunk = body.read1(_READ_BYTES)  # what has arrived: progress and resume keep up
        if not chunk:
            return written
        try:
            out.write(chunk)
            out.flush()  # on disk before it counts: a killed process resumes from here
        except OSError as exc:  # the disk, not the network: retrying will not help
            raise _unwritable(Path(out.name), exc) from None
        attempt.received += len(chunk)
        written += len(chunk)
        if on_bytes is not None:
            on_bytes(len(chunk))
        pace.check(len(chunk))


class _Pace:
    """The ``min_rate`` rule of :class:`RetryPolicy`, checked as bytes arrive."""

    def __init__(self, min_rate: float | None, window: float) -> None:
        self._min_rate = min_rate
        self._window = window
        self._since = time.monotonic()
        self._bytes = 0

    def check(self, arrived: int) -> None:
        if self._min_rate is None:
            return
        self._bytes += arrived
        elapsed = time.monotonic() - self._since
        if elapsed < self._window:
            return
        rate = self._bytes / elapsed
        if rate < self._min_rate:
            raise _Retryable(
                f"the body arrived at {rate:,.0f} bytes/s over {elapsed:.1f} s, under the "
                f"minimum rate of {self._min_rate:,.0f} (RetryPolicy.min_rate)"
            )
        self._since, self._bytes = time.monotonic(), 0


def sha256_of(path: Path) -> str:
    """The SHA-256 of a file, as hex (hashlib releases the GIL while it hashes)."""
    hasher = hashlib.sha256()
    with open(path, "rb") as source:
        while block := source.read(_READ_BYTES):
            hasher.update(block)
    return hasher.hexdigest()


def _resume_hint(partial: Partial, attempt: _Attempt) -> str:
    if attempt.received and partial.kept:
        return f"; the {attempt.received:,} bytes received are kept and the next load resumes"
    return ""


def _unwritable(path: Path, exc: OSError) -> StorageError:
    return StorageError(
        f"Could not write a download to {path.parent}: {exc.strerror or exc}. Free disk "
        "space, or point DATAFINITI_CACHE_DIR (cache=, --cache-dir) at another directory."
    )


def remove_quietly(path: Path) -> None:
    """Delete ``path`` if it exists."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
