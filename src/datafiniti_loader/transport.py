"""Transport: a result file's pre-signed URL to a complete, verified local file.

Files are streamed through fsspec's HTTP file system with the URL sent
byte-for-byte as signed (``encoded=True``: re-quoting ``%2B`` or ``%2F``
breaks the signature), in exactly one GET per attempt (no HEAD, which S3
refuses on a URL signed for GET, and no probing read), and with no
``Authorization`` header (S3 answers 400 when one arrives beside a signature).

What the bucket says is checked, not assumed: a ``206`` must carry the
``Content-Range`` that was asked for, and the bytes on disk must add up to the
size the bucket gave. A download that stops (a dropped connection, retries
spent, Ctrl-C, a killed process) leaves a :class:`Partial`: its bytes plus the
object's ``ETag``, from which a later attempt resumes with ``Range`` guarded
by ``If-Range``, so a changed object is fetched whole rather than spliced.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import re
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from fsspec.asyn import sync
from fsspec.implementations.http import HTTPFileSystem, HTTPStreamFile

from .config import ca_bundle, is_loopback
from .errors import DownloadError, StorageError
from .models import ResultFile
from .retry import RETRYABLE_STATUSES, RetryPolicy

__all__ = [
    "BucketFileSystem",
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


class _BucketStatus(Exception):
    """An error status from the bucket, with the response still open to read its body."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        super().__init__(response.status)
        self.response = response


class BucketFileSystem(HTTPFileSystem):  # type: ignore[misc]
    """fsspec's HTTP file system, tuned for pre-signed object URLs.

    ``open`` always streams with a single GET (never ``info()``/HEAD first),
    URLs go out exactly as given, and error statuses surface with their
    response so that S3's XML error code can be read.
    """

    # One instance per load: fsspec's instance cache keys on the call's
    # arguments, so it would hand back a file system (and an event-loop
    # session) made for another load's retry policy and options.
    cachable = False

    def __init__(self, policy: RetryPolicy, **storage_options: Any) -> None:
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=policy.connect_timeout, sock_read=policy.read_timeout
        )
        client_kwargs = {"timeout": timeout, "trust_env": True, "auto_decompress": False}
        client_kwargs.update(storage_options.pop("client_kwargs", {}))
        super().__init__(
            encoded=True,
            client_kwargs=client_kwargs,
            **storage_options,
        )

    def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> HTTPStreamFile:
        if mode != "rb":
            raise NotImplementedError("result files are read-only")
        for unused in ("block_size", "autocommit", "cache_type", "cache_options", "size"):
            kwargs.pop(unused, None)
        session = sync(self.loop, self.set_session)
        options = {**self.kwargs, **kwargs, "asynchronous": self.asynchronous}
        cafile = ca_bundle()
        if cafile and "ssl" not in options and urlsplit(path).scheme == "https":
            options["ssl"] = _tls_context(cafile)
        return HTTPStreamFile(self, path, mode=mode, loop=self.loop, session=session, **options)

    def _raise_not_found_for_status(self, response: aiohttp.ClientResponse, url: str) -> None:
        if response.status >= 400:
            raise _BucketStatus(response)


@functools.lru_cache(maxsize=4)
def _tls_context(cafile: str) -> ssl.SSLContext:
    """A TLS context trusting ``cafile``, built once per process and file.

    Loading a CA bundle takes ~50 ms, which every cold load paid before its
    first download began, whether or not the bucket spoke TLS.
    """
    return ssl.create_default_context(cafile=cafile)


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
        self.announced = False  # the bytes it will bring were counted in a progress total
        if partial.etag and partial.path.exists():
            self.received = partial.path.stat().st_size
            if self.received:
                logger.debug("%s: resuming after %d bytes", partial.path.name, self.received)
        else:
            self.restart()

    def restart(self) -> None:
        """Forget the bytes on disk: the next answer must be the whole object."""
        try:
            self.partial.path.write_bytes(b"")
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
    on_size : callable, optional
        Called once per download with the bytes it still has to bring.
    storage_options : dict, optional
        Passed to fsspec's HTTP file system (e.g. ``client_kwargs``).
    """

    def __init__(
        self,
        policy: RetryPolicy | None = None,
        *,
        on_bytes: Callable[[int], None] | None = None,
        on_size: Callable[[int], None] | None = None,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        self.policy = policy or RetryPolicy()
        self.on_bytes = on_bytes
        self.on_size = on_size
        self._storage_options = storage_options or {}
        self._fs: BucketFileSystem | None = None
        self._fs_lock = threading.Lock()
        self._cancelled = threading.Event()
        self._open: set[aiohttp.ClientResponse] = set()
        self._warned_plain_http = False

    @property
    def cancelled(self) -> threading.Event:
        """Set once the load is abandoned; waits elsewhere in the load watch it too."""
        return self._cancelled

    def cancel(self) -> None:
        """Stop every download of this transport now, closing bodies still arriving."""
        self._cancelled.set()
        with self._fs_lock:
            responses, fs = list(self._open), self._fs
        for response in responses:
            if fs is not None:
                fs.loop.call_soon_threadsafe(response.close)

    @property
    def fs(self) -> BucketFileSystem:
        """The file system, made on first use: a load served from the cache needs none."""
        with self._fs_lock:
            if self._fs is None:
                self._fs = BucketFileSystem(self.policy, **self._storage_options)
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
        stream = self._open_stream(file, headers)
        with stream:
            response: aiohttp.ClientResponse = stream.r
            total = _check_answer(response, offset, attempt)
            attempt.partial.describe(response.headers.get("ETag") or None)
            if not attempt.announced and total is not None and self.on_size is not None:
                attempt.announced = True
                self.on_size(total - attempt.received)
            with self._fs_lock:
                self._open.add(response)
            try:
                attempt.downloaded += self._write_body(response, attempt)
            except (TimeoutError, aiohttp.ClientError) as exc:
                raise _Retryable(
                    f"connection lost after {attempt.received:,} bytes ({type(exc).__name__})"
                ) from None
            finally:
                with self._fs_lock:
                    self._open.discard(response)
        if total is not None and attempt.received != total:
            if attempt.received > total:
                raise _Retryable(f"body ran past its {total:,} bytes", restart=True)
            raise _Retryable(f"body ended at {attempt.received:,} of {total:,} bytes")

    def _open_stream(self, file: ResultFile, headers: dict[str, str]) -> HTTPStreamFile:
        failure: _Retryable | DownloadError | None = None
        try:
            return self.fs.open(file.url, headers=headers)
        except _BucketStatus as exc:
            response = exc.response
        except aiohttp.ClientConnectorCertificateError:
            failure = DownloadError(
                f"TLS certificate verification failed downloading {file.name}. If a proxy "
                "inspects TLS, point REQUESTS_CA_BUNDLE (or SSL_CERT_FILE) at its CA."
            )
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            failure = _Retryable(f"connection failed ({type(exc).__name__})")
        if failure is not None:
            raise failure  # raised here, not in the except block: no chained URL
        self._raise_for_status(file, response)
        raise AssertionError("unreachable")  # pragma: no cover

    def _write_body(self, response: aiohttp.ClientResponse, attempt: _Attempt) -> int:
        path = attempt.partial.path
        mode = "ab" if attempt.received else "wb"
        try:
            out = open(path, mode)  # noqa: SIM115 - closed below
        except OSError as exc:
            raise _unwritable(path, exc) from None
        with out:
            return int(
                sync(self.fs.loop, _drain, response, out, attempt, self.on_bytes, self._cancelled)
            )

    def _raise_for_status(self, file: ResultFile, response: aiohttp.ClientResponse) -> None:
        status = response.status
        retry_after = response.headers.get("Retry-After")
        try:
            body = sync(self.fs.loop, response.read).decode("utf-8", "replace")
        except (TimeoutError, aiohttp.ClientError, OSError):
            body = ""
        finally:
            response.release()
        code = _xml_text(body, "Code")
        message = _xml_text(body, "Message")
        if status == 403 and ("expired" in message.lower() or code == "ExpiredToken"):
            raise UrlExpired(file.name)
        if status == 416:  # the bytes kept are not a prefix of this object: start over
            raise _Retryable("the bucket refused the resume range (HTTP 416)", restart=True)
        if status in RETRYABLE_STATUSES:
            raise _Retryable(f"HTTP {status}{' ' + code if code else ''}", status, retry_after)
        detail = f" {code}: {message}" if code else ""
        hint = {
            400: "The request to the bucket was malformed; make sure no proxy adds an "
            "Authorization header.",
            403: "The bucket refused the URL. Load again to get fresh URLs.",
            404: "The file is no longer on the bucket; request the download again.",
        }.get(status, "Try again later.")
        raise DownloadError(
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


def _check_answer(response: aiohttp.ClientResponse, offset: int, attempt: _Attempt) -> int | None:
    """The object's total size, after checking the answer is the bytes that were asked for.

    A ``200`` is the whole object (any bytes kept are dropped); a ``206`` must
    start exactly at ``offset`` (the bytes already on disk), whatever was asked.
    """
    length = response.headers.get("Content-Length", "")
    if response.status != 206:
        if offset:
            logger.debug("the bucket sent the whole object again; restarting")
            attempt.restart()
        return int(length) if length.isdigit() else None
    match = _CONTENT_RANGE.match(response.headers.get("Content-Range", "").strip())
    if match is None or match.group(3) == "*":
        raise _Retryable("a partial answer (HTTP 206) without a usable Content-Range")
    first, last, total = (int(g) for g in match.groups())
    if first != offset or (length.isdigit() and int(length) != last - first + 1):
        asked = f"from byte {offset:,}" if offset else "the whole file"
        raise _Retryable(
            f"asked for {asked}, the bucket sent bytes {first:,}-{last:,} of {total:,}"
        )
    return total


async def _drain(
    response: aiohttp.ClientResponse,
    out: Any,
    attempt: _Attempt,
    on_bytes: Callable[[int], None] | None,
    cancelled: threading.Event,
) -> int:
    written = 0
    while True:
        if cancelled.is_set():
            raise DownloadCancelled("the load was abandoned")
        chunk = await response.content.read(_READ_BYTES)
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


def _xml_text(body: str, tag: str) -> str:
    start = body.find(f"<{tag}>")
    end = body.find(f"</{tag}>")
    if start < 0 or end < start:
        return ""
    return body[start + len(tag) + 2 : end].strip()


def remove_quietly(path: Path) -> None:
    """Delete ``path`` if it exists."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
