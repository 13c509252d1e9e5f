"""Transport: a result file's pre-signed URL to a complete, verified local file.

Files are streamed through fsspec's HTTP file system with the URL sent
byte-for-byte as signed (``encoded=True``: re-quoting ``%2B`` or ``%2F``
breaks the signature), in exactly one GET per attempt (no HEAD, which S3
refuses on a URL signed for GET, and no probing read), and with no
``Authorization`` header (S3 answers 400 when one arrives beside a signature).
A dropped connection resumes with ``Range`` from the bytes already on disk,
guarded by ``If-Range`` with the object's ``ETag``. A body shorter than its
``Content-Length`` is never accepted.
"""

from __future__ import annotations

import contextlib
import logging
import os
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from fsspec.asyn import sync
from fsspec.implementations.http import HTTPFileSystem, HTTPStreamFile

from .config import ca_bundle
from .errors import DownloadError, StorageError
from .models import ResultFile
from .retry import RETRYABLE_STATUSES, RetryPolicy

__all__ = ["BucketFileSystem", "DownloadCancelled", "Fetched", "Transport", "UrlExpired"]

logger = logging.getLogger("datafiniti_loader")

_READ_BYTES = 1024 * 1024


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
    # arguments, so it would hand back a file system whose TLS settings were
    # resolved from an older environment.
    cachable = False

    def __init__(self, policy: RetryPolicy, **storage_options: Any) -> None:
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=policy.connect_timeout, sock_read=policy.read_timeout
        )
        client_kwargs = {"timeout": timeout, "trust_env": True, "auto_decompress": False}
        client_kwargs.update(storage_options.pop("client_kwargs", {}))
        cafile = ca_bundle()
        if cafile and "ssl" not in storage_options:
            storage_options["ssl"] = ssl.create_default_context(cafile=cafile)
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
        return HTTPStreamFile(self, path, mode=mode, loop=self.loop, session=session, **options)

    def _raise_not_found_for_status(self, response: aiohttp.ClientResponse, url: str) -> None:
        if response.status >= 400:
            raise _BucketStatus(response)


@dataclass(frozen=True)
class Fetched:
    """A complete local copy of a result file."""

    path: Path
    size: int
    etag: str | None
    downloaded: int  # bytes that crossed the network for it


class _Attempt:
    """What one download has got so far, carried across retries."""

    def __init__(self, part: Path) -> None:
        self.part = part
        self.etag: str | None = None
        self.total: int | None = None
        self.downloaded = 0

    @property
    def received(self) -> int:
        return self.part.stat().st_size if self.part.exists() else 0


class Transport:
    """Downloads result files with retries, resume and S3 error mapping.

    Parameters
    ----------
    policy : RetryPolicy
        Attempts, backoff and timeouts.
    on_bytes : callable, optional
        Called with the number of bytes each time some arrive (progress bars).
    storage_options : dict, optional
        Passed to fsspec's HTTP file system (e.g. ``client_kwargs``).
    """

    def __init__(
        self,
        policy: RetryPolicy | None = None,
        *,
        on_bytes: Callable[[int], None] | None = None,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        self.policy = policy or RetryPolicy()
        self.on_bytes = on_bytes
        self._storage_options = storage_options or {}
        self._fs: BucketFileSystem | None = None
        self._fs_lock = threading.Lock()
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        """Stop every download of this transport at its next chunk (a load was abandoned)."""
        self._cancelled.set()

    @property
    def fs(self) -> BucketFileSystem:
        """The file system, made on first use: a load served from the cache needs none."""
        with self._fs_lock:
            if self._fs is None:
                self._fs = BucketFileSystem(self.policy, **self._storage_options)
            return self._fs

    def download(self, file: ResultFile, part: Path) -> Fetched:
        """Download ``file`` into ``part`` (resumed if it already holds a prefix).

        Raises
        ------
        UrlExpired
            The bucket says the URL has expired; fetch a fresh one and call again.
        DownloadError
            The file could not be downloaded after all retries.
        """
        attempt = _Attempt(part)
        for retry in range(self.policy.attempts):
            if self._cancelled.is_set():
                raise DownloadCancelled(file.name)
            last_try = retry == self.policy.attempts - 1
            try:
                self._get(file, attempt)
            except _Retryable as exc:
                if last_try:
                    raise DownloadError(
                        f"Could not download {file.name} (result {file.id}) after "
                        f"{self.policy.attempts} tries: {exc}. Check your connection and "
                        "load again; bytes already received are kept and resumed.",
                        status=exc.status,
                    ) from None
                wait = self.policy.delay(retry, exc.retry_after)
                logger.debug("%s: %s; retry %d in %.2fs", file.name, exc, retry + 1, wait)
                self._cancelled.wait(wait)
                continue
            size = attempt.received
            return Fetched(part, size, attempt.etag, attempt.downloaded)
        raise AssertionError("unreachable")  # pragma: no cover

    def _get(self, file: ResultFile, attempt: _Attempt) -> None:
        received = attempt.received
        headers = {}
        if received and attempt.etag:
            headers = {"Range": f"bytes={received}-", "If-Range": attempt.etag}
        elif received:
            received = 0  # nothing tells us the object is unchanged: start over
        try:
            stream = self.fs.open(file.url, headers=headers)
        except _BucketStatus as exc:
            self._raise_for_status(file, exc.response)
        except aiohttp.ClientConnectorCertificateError:
            raise DownloadError(
                f"TLS certificate verification failed downloading {file.name}. If a proxy "
                "inspects TLS, point REQUESTS_CA_BUNDLE (or SSL_CERT_FILE) at its CA."
            ) from None
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise _Retryable(f"connection failed ({type(exc).__name__})") from None
        with stream:
            response: aiohttp.ClientResponse = stream.r
            append = response.status == 206
            if not append:
                received = 0
            attempt.etag = response.headers.get("ETag") or attempt.etag
            attempt.total = _expected_total(response, received)
            try:
                out = open(attempt.part, "ab" if append else "wb")  # noqa: SIM115
            except OSError as exc:
                raise _unwritable(attempt.part, exc) from None
            try:
                with out:
                    attempt.downloaded += sync(
                        self.fs.loop, _drain, response, out, self.on_bytes, self._cancelled
                    )
            except (TimeoutError, aiohttp.ClientError) as exc:
                raise _Retryable(
                    f"connection lost after {attempt.received:,} bytes ({type(exc).__name__})"
                ) from None
        if attempt.total is not None and attempt.received != attempt.total:
            raise _Retryable(f"body ended at {attempt.received:,} of {attempt.total:,} bytes")

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
    def __init__(self, reason: str, status: int | None = None, retry_after: str | None = None):
        super().__init__(reason)
        self.status = status
        self.retry_after = retry_after


def _expected_total(response: aiohttp.ClientResponse, offset: int) -> int | None:
    length = response.headers.get("Content-Length")
    if length is None or not length.isdigit():
        return None
    return offset + int(length)


async def _drain(
    response: aiohttp.ClientResponse,
    out: Any,
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
        except OSError as exc:  # the disk, not the network: retrying will not help
            raise _unwritable(Path(out.name), exc) from None
        written += len(chunk)
        if on_bytes is not None:
            on_bytes(len(chunk))


def _unwritable(path: Path, exc: OSError) -> StorageError:
    return StorageError(
        f"Could not write a download to {path.parent}: {exc.strerror or exc}. Free disk "
        "space, or point DATAFINITI_CACHE_DIR (or cache=) at another directory."
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
