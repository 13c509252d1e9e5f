"""The bucket as an fsspec file system: a pre-signed object URL, opened with one GET.

fsspec's own HTTP file system runs on aiohttp, with every download on one
shared event loop. Over loopback it moved the four real benchmark files in
0.33-0.56 s on one saturated core, where threads of ``requests`` took
0.15-0.21 s, and importing it added 0.15-0.29 s to every fresh process (see
BENCHMARKS.md). This file system is built on ``requests``, which the API
client uses already: each :meth:`~BucketFileSystem.open` is one GET on the
calling thread, so downloads receive and write on every core.

What a pre-signed URL needs, and gets here:

- The URL goes out byte-for-byte as signed: requests would re-quote it
  (``%7E`` to ``~``), and S3 checks the signature over what it receives.
- No ``Authorization`` header, ever (S3 answers 400 when one arrives beside a
  signature): no credentials from ``~/.netrc``, none added on a redirect.
- No redirect from a remote host to this machine or its link-local network,
  nor from https:// to plain http:// on another host (:class:`RedirectRefused`).
- No HEAD (S3 refuses it on a URL signed for GET) and no probing read.
- ``Accept-Encoding: identity``: the bytes on disk are the object's bytes,
  so ``Range`` offsets and sizes count the same bytes.
- No signature in a log line: urllib3 logs every request's URL at DEBUG, and
  its query is scrubbed here before any handler sees it.
- :meth:`~BucketFileSystem.abort` ends every wait at once, for an answer or
  for a body, where a read timeout could be a minute away (Ctrl-C).

Proxies (``HTTPS_PROXY``...) and CA bundles (``REQUESTS_CA_BUNDLE``,
``SSL_CERT_FILE``) come from the environment, as for the API client.
"""

from __future__ import annotations

import contextlib
import io
import logging
import socket
import ssl
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import requests
import urllib3
from fsspec.spec import AbstractFileSystem
from requests.adapters import HTTPAdapter

from .._version import __version__
from ..config import ca_bundle, unsafe_hop

__all__ = [
    "BucketError",
    "BucketFile",
    "BucketFileSystem",
    "BucketUnreachable",
    "RedirectRefused",
    "TlsRejected",
]

_ERROR_BODY_BYTES = 64 * 1024  # S3's XML errors are a few hundred bytes
_POOL_SIZE = 32  # connections kept per host: more than any sensible max_workers


class BucketError(Exception):
    """The bucket answered with an error status. S3's XML ``Code`` and ``Message`` are kept."""

    def __init__(self, status: int, code: str, message: str, retry_after: str | None) -> None:
        super().__init__(f"HTTP {status}{' ' + code if code else ''}")
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after


class BucketUnreachable(OSError):
    """No answer, or an answer that broke off: a refused or lost connection, or a timeout.

    The message names only the kind of failure: the libraries' own messages
    carry the URL, signature and all.
    """


class TlsRejected(BucketUnreachable):
    """The bucket's TLS certificate did not verify against the trusted CAs."""


class RedirectRefused(Exception):
    """The bucket redirected where no download may go (see :func:`~.config.unsafe_hop`)."""


class BucketFile(io.RawIOBase):
    """The body of one GET, read as it arrives.

    ``status`` and ``headers`` are the bucket's answer (``headers`` is
    case-insensitive).
    """

    def __init__(self, response: requests.Response) -> None:
        super().__init__()
        self._response = response
        self.status: int = response.status_code
        self.headers: Mapping[str, str] = response.headers

    def readable(self) -> bool:
        """Always: a body is read-only."""
        return True

    def read(self, size: int | None = -1) -> bytes:
        """Up to ``size`` bytes (fewer only at the end of the body); all of it if ``size < 0``."""
        return self._read(self._response.raw.read, size)

    def read1(self, size: int | None = -1) -> bytes:
        """Up to ``size`` bytes, from at most one read of the network: what has arrived."""
        return self._read(self._response.raw.read1, size)

    def _read(self, read: Callable[..., bytes], size: int | None) -> bytes:
        amount = None if size is None or size < 0 else size
        failure = None
        try:
            return read(amount, decode_content=False)
        except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            failure = _unreachable(exc)
        raise failure  # outside the except block: no chained library message

    def readinto(self, buffer: Any) -> int:
        """Read into ``buffer``; the number of bytes read (0 at the end of the body)."""
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        """Release the connection (back to the pool if the body was read to its end)."""
        self._response.close()
        super().close()


class BucketFileSystem(AbstractFileSystem):  # type: ignore[misc]
    """An fsspec file system whose paths are pre-signed object URLs, opened for reading.

    ``open(url, headers={"Range": ...})`` makes exactly one GET and returns a
    :class:`BucketFile`; an error status raises :class:`BucketError`, a
    failed connection :class:`BucketUnreachable`. Safe to share between
    threads: connections are pooled. :meth:`abort` ends, from any thread,
    every wait of every request on it, whether for an answer or for a body.

    Parameters
    ----------
    connect_timeout, read_timeout : float
        Seconds to connect, and seconds of silence while reading. No total
        timeout: a large file may take long to arrive.
    """

    protocol = ("https", "http")
    # One instance per load: fsspec's instance cache keys on the arguments,
    # and would share one connection pool between loads.
    cachable = False

    def __init__(self, connect_timeout: float = 10.0, read_timeout: float = 60.0) -> None:
        super().__init__()
        self.timeout = (connect_timeout, read_timeout)
        self._session = _BucketSession()
        _hide_signatures_from(logging.getLogger("urllib3.connectionpool"))

    @classmethod
    def _strip_protocol(cls, path: str) -> str:
        return str(path)  # the whole URL is the path, exactly as signed

    def _open(
        self,
        path: str,
        mode: str = "rb",
        block_size: int | None = None,
        autocommit: bool = True,
        cache_options: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> BucketFile:
        if mode != "rb":
            raise NotImplementedError("result files are read-only")
        response = self._get(path, headers or {})
        if response.status_code >= 400:
            raise _bucket_error(response)
        return BucketFile(response)

    def _get(self, url: str, headers: dict[str, str]) -> requests.Response:
        session = self._session
        request = session.prepare_request(
            requests.Request("GET", url, headers=headers, auth=_no_credentials)
        )
        request.url = url  # as signed: requests would have re-quoted it
        settings = session.merge_environment_settings(url, {}, True, None, None)
        failure = None
        try:
            return session.send(request, timeout=self.timeout, allow_redirects=True, **settings)
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
            failure = _unreachable(exc)
        raise failure  # outside the except block: the library's message names the URL

    def abort(self) -> None:
        """End every request now and refuse new ones: waits fail at once, not at a timeout."""
        self._session.connections.abort()


class _BucketSession(requests.Session):
    """A session that never sends an ``Authorization`` header, not even after a redirect."""

    def __init__(self) -> None:
        super().__init__()
        self.headers["User-Agent"] = f"datafiniti-loader/{__version__}"
        self.headers["Accept-Encoding"] = "identity"
        self.verify = ca_bundle() or True
        self.connections = _Connections()
        adapter = _TrackingAdapter(self.connections)
        self.mount("https://", adapter)
        self.mount("http://", adapter)

    def rebuild_auth(self, prepared_request: requests.PreparedRequest, response: Any) -> None:
        # Called for every redirect before it is followed: refuse where it may not go.
        reason = unsafe_hop(str(response.url), str(prepared_request.url))
        if reason:
            response.close()
            raise RedirectRefused(f"the bucket's redirect {reason}")
        # requests would add ~/.netrc credentials for the redirect's host
        _no_credentials(prepared_request)


class _Connections:
    """Every connection a file system opens, so that one call can end any wait on them.

    A GET still waiting for the bucket's answer has no response to close: its
    socket is shut down instead, which ends a wait (for an answer, a TLS
    handshake or a body) at once where the read timeout could be a minute
    away. Both the connection (whose socket changes while it connects) and
    its socket once connected are kept: a response that ends the connection
    (``Connection: close``) reads on from a socket its connection has let go.
    After :meth:`abort`, no new connection is made.
    """

    def __init__(self) -> None:
        self._live: weakref.WeakSet[Any] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._aborted = False

    def tracking(self, base: type) -> type:
        """A subclass of urllib3 connection class ``base`` whose connections are tracked."""
        connections = self

        class Tracked(base):  # type: ignore[misc]
            def connect(self) -> None:
                connections.add(self)
                super().connect()
                connections.add(self.sock)

        return Tracked

    def add(self, item: Any) -> None:
        """Track a connection or a socket, or refuse it once aborted."""
        with self._lock:
            if self._aborted:
                raise ConnectionAbortedError("the load was abandoned")
            if item is not None:
                self._live.add(item)

    def abort(self) -> None:
        """Shut down every tracked socket."""
        with self._lock:
            self._aborted = True
            live = list(self._live)
        for item in live:
            _shut(getattr(item, "sock", item))


def _shut(sock: Any) -> None:
    """Shut a socket down for both directions; under TLS, the plain socket beneath it."""
    while sock is not None and not isinstance(sock, socket.socket):
        sock = getattr(sock, "socket", None)  # urllib3's TLS-in-TLS wrapper
    if sock is not None:
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _TrackingAdapter(HTTPAdapter):
    """requests' adapter, with every connection pool (proxied ones too) tracking its sockets."""

    def __init__(self, connections: _Connections) -> None:
        self._connections = connections  # before super(): it makes the first pool manager
        super().__init__(pool_maxsize=_POOL_SIZE)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self._track(self.poolmanager)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        known = proxy in self.proxy_manager
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not known:
            self._track(manager)
        return manager

    def _track(self, manager: Any) -> None:
        """Give ``manager`` pool classes whose connections register themselves."""
        manager.pool_classes_by_scheme = {
            scheme: type(pool.__name__, (pool,), {
                "ConnectionCls": self._connections.tracking(pool.ConnectionCls)
            })
            for scheme, pool in manager.pool_classes_by_scheme.items()
        }  # fmt: skip


def _no_credentials(request: requests.PreparedRequest) -> requests.PreparedRequest:
    """Requests' auth hook, given so that it never looks in ``~/.netrc``: no header at all."""
    request.headers.pop("Authorization", None)
    return request


def _bucket_error(response: requests.Response) -> BucketError:
    try:
        body = response.raw.read(_ERROR_BODY_BYTES, decode_content=False)
    except (urllib3.exceptions.HTTPError, OSError):
        body = b""
    finally:
        response.close()
    text = body.decode("utf-8", "replace")
    return BucketError(
        response.status_code,
        _xml_text(text, "Code"),
        _xml_text(text, "Message"),
        response.headers.get("Retry-After"),
    )


def _unreachable(exc: BaseException) -> BucketUnreachable:
    """A message-safe stand-in for a library's connection error (whose text has the URL)."""
    if any(isinstance(e, ssl.SSLCertVerificationError) for e in _causes(exc)):
        return TlsRejected("TLS certificate verification failed")
    timed_out = isinstance(exc, requests.Timeout | urllib3.exceptions.TimeoutError | TimeoutError)
    return BucketUnreachable("timed out" if timed_out else type(exc).__name__)


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it wraps: causes, contexts, urllib3's ``reason``, exceptions in ``args``."""
    todo, seen = [exc], set()
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo.extend(
            e
            for e in (
                current.__cause__,
                current.__context__,
                getattr(current, "reason", None),
                *current.args,
            )
            if isinstance(e, BaseException)
        )


def _xml_text(body: str, tag: str) -> str:
    start = body.find(f"<{tag}>")
    end = body.find(f"</{tag}>")
    if start < 0 or end < start:
        return ""
    return body[start + len(tag) + 2 : end].strip()


class _ScrubSignatures(logging.Filter):
    """Cuts signed URL queries out of a record's arguments.

    urllib3 logs a request's path and query without its host, so a string
    argument with a ``?`` and a signature in it loses what follows the ``?``;
    the user's other requests log as they did.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_without_query(a) for a in record.args)
        return True


def _without_query(value: object) -> object:
    if isinstance(value, str) and "?" in value and "Signature" in value:
        return value.split("?", 1)[0] + "?..."
    return value


_SCRUB = _ScrubSignatures()


def _hide_signatures_from(logger: logging.Logger) -> None:
    if _SCRUB not in logger.filters:
        logger.addFilter(_SCRUB)
