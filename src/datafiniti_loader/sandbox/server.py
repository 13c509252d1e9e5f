"""The sandbox's two HTTP servers on loopback: a Datafiniti-like API and an S3-like bucket.

Both are plain ``http.server`` servers, one thread per connection, speaking
HTTP/1.1 with keep-alive, so clients exercise their real HTTP stacks.
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote

if TYPE_CHECKING:
    from ..sandbox import Sandbox

__all__ = ["ApiHandler", "BucketHandler", "Faults", "LogEntry", "SandboxServer"]

_CHUNK = 256 * 1024


@dataclass
class LogEntry:
    """One request a sandbox server received (no query string, no header values kept)."""

    server: str
    method: str
    path: str
    status: int
    range: str | None = None
    had_authorization: bool = False


@dataclass
class Faults:
    """Faults served on demand; each queued fault is used once, in order.

    Attributes
    ----------
    api_errors : deque of (status, retry_after)
        Served by the API before answering normally.
    bucket_errors : deque of (status, retry_after)
        Served by the bucket before answering normally.
    drops : deque of int
        Each bucket GET takes the next number and closes the connection after
        sending that many body bytes (the headers promise the full length).
    expire_signings : int
        The next this many ``/results`` replies hand out already-expired URLs.
    stalls : deque of float
        Each bucket GET takes the next number and waits that many seconds
        after the headers before sending the body (a read timeout).
    silences : deque of float
        Each bucket GET takes the next number and waits that many seconds
        before answering at all (a bucket or proxy that holds a request).
    throttle : float or None
        Bytes per second per bucket connection.
    api_redirect : str or None
        When set, the API answers every call with a 302 to this URL.
    api_bodies : deque of (status, content_type, body)
        Served by the API, as given, before answering normally (a proxy's
        login page, a body that is not JSON).
    partial_answers : deque of (int, bool)
        Each bucket GET that asked for no ``Range`` takes the next pair and
        answers ``206`` with only that many first bytes, with or without a
        ``Content-Range`` saying so (a broken server or proxy).
    api_hangups : int
        The next this many API calls are read, then the connection is closed
        without an answer (the call may have acted: a lost reply).
    bucket_answers : deque of (status, headers, body)
        Served by the bucket, as given, to a correctly signed GET before
        answering normally (a ``204``, a ``304``, an HTML page with ``200``,
        an error whose message echoes the URL). ``{url}`` in the body is
        replaced by the URL asked for, signature and all; ``{path}`` by its
        path and query alone.
    ignore_if_range : bool
        Serve a ``Range`` even when ``If-Range`` names another ETag, as a
        broken server or proxy does: the bytes of a changed object, labelled
        with its new ETag.
    creation_hangups : int
        The next this many download creations are made, then their
        connection is closed without an answer: the download exists (and is
        charged) but the client never hears of it.
    """

    api_errors: deque[tuple[int, float | None]] = field(default_factory=deque)
    bucket_errors: deque[tuple[int, float | None]] = field(default_factory=deque)
    drops: deque[int] = field(default_factory=deque)
    stalls: deque[float] = field(default_factory=deque)
    silences: deque[float] = field(default_factory=deque)
    expire_signings: int = 0
    throttle: float | None = None
    api_redirect: str | None = None
    api_bodies: deque[tuple[int, str, bytes]] = field(default_factory=deque)
    partial_answers: deque[tuple[int, bool]] = field(default_factory=deque)
    api_hangups: int = 0
    bucket_answers: deque[tuple[int, dict[str, str], bytes]] = field(default_factory=deque)
    ignore_if_range: bool = False
    creation_hangups: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def take(self, queue: deque[Any]) -> Any:
        """The next queued fault, or ``None``."""
        with self.lock:
            return queue.popleft() if queue else None

    def take_expired_signing(self) -> bool:
        """Whether this ``/results`` reply should hand out expired URLs."""
        return self._count_down("expire_signings")

    def take_hangup(self) -> bool:
        """Whether this API call should go unanswered."""
        return self._count_down("api_hangups")

    def take_creation_hangup(self) -> bool:
        """Whether this download, once made, should go unanswered."""
        return self._count_down("creation_hangups")

    def _count_down(self, name: str) -> bool:
        with self.lock:
            left = getattr(self, name)
            if left > 0:
                setattr(self, name, left - 1)
                return True
            return False


class SandboxServer(ThreadingHTTPServer):
    """A threading server that knows its sandbox."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        sandbox: Sandbox,
        tls: ssl.SSLContext | None = None,
    ):
        super().__init__(address, handler)
        self.sandbox = sandbox
        self.scheme = "http"
        if tls is not None:
            self.socket = tls.wrap_socket(self.socket, server_side=True)
            self.scheme = "https"

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up mid-answer is normal (Ctrl-C, a cancelled load): no traceback."""
        import sys

        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)

    def url(self) -> str:
        """The server's base URL."""
        host, port = self.server_address[:2]
        return f"{self.scheme}://{host!s}:{port}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: SandboxServer
    name = "?"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    @property
    def sandbox(self) -> Sandbox:
        return self.server.sandbox

    def record(self, status: int) -> None:
        self.sandbox.log.append(
            LogEntry(
                self.name,
                self.command,
                self.path.split("?", 1)[0],
                status,
                self.headers.get("Range"),
                "Authorization" in self.headers,
            )
        )

    def send_body(
        self, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None
    ) -> None:
        self.record(status)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


class ApiHandler(_Handler):
    """``/v3/results/{id}`` and ``/v3/requests/{id}``, with HTTP Basic auth."""

    name = "api"

    def do_GET(self) -> None:
        """Answer v3's /results, /requests and /data, and v4's /downloads (one, or all)."""
        if self._answered_before_routing():
            return
        parts = self._parts()
        if parts == ["v4", "downloads"]:  # the account's downloads (a listing polls nothing)
            listed = list(self.sandbox.requests.values())
            return self.json(200, [self._download_v4(r, poll=False) for r in listed])
        if parts == ["v3", "requests"]:
            return self.json(200, [self._listed_v3(r) for r in self.sandbox.requests.values()])
        if len(parts) == 3 and parts[:2] == ["v4", "downloads"]:
            request = self._known(parts[2])
            if request is None:
                return self.json(404, {"error": "Not Found", "message": "Download not found"})
            return self.json(200, self._download_v4(request))
        if len(parts) == 3 and parts[0] == "v3" and parts[1] in ("results", "requests"):
            if not parts[2].isdigit():
                return self.json(
                    500, {"error": "Internal Server Error", "message": "Invalid id", "code": 500}
                )
            request = self.sandbox.requests.get(int(parts[2]))
            if parts[1] == "requests":
                return self._request(request)
            return self._results(request)
        if len(parts) == 3 and parts[:2] == ["v3", "data"]:
            return self._create_v3(parts[2])
        return self._no_endpoint()

    def do_POST(self) -> None:
        """v4's ``POST /v4/{type}/search``: a count (``num_records: 0``) or a new download."""
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if self._answered_before_routing():
            return
        parts = self._parts()
        if len(parts) != 3 or parts[0] != "v4" or parts[2] != "search":
            return self._no_endpoint()
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("query"), str):
            return self.json(400, {"message": "A JSON body with a 'query' is required"})
        wanted = body.get("num_records")
        format = str(body.get("format") or "csv")
        found = self.sandbox.match(parts[1], None if wanted == 0 else format, body["query"])
        if not body.get("download"):
            if wanted == 0:
                count = found.records if found else 0
                return self.json(200, {"num_found": count, "total_cost": 0, "records": []})
            return self.json(400, {"message": "The sandbox serves counts and downloads only"})
        self.sandbox.note_creation("v4", "POST", self.path, body, "Bearer")
        if found is None or not isinstance(wanted, int) or wanted <= 0:
            return self.json(400, {"message": "numRequested cannot be <= 0"})
        request = self.sandbox.create_download(
            found, body["query"], parts[1], wanted, body.get("view")
        )
        if self._hung_up_after_creating():
            return None
        return self.json(202, self._download_v4(request, poll=False))

    def do_DELETE(self) -> None:
        """v4's ``DELETE /v4/downloads/{id}``: stop a download; files written so far stay."""
        if self._answered_before_routing():
            return
        parts = self._parts()
        if len(parts) != 3 or parts[:2] != ["v4", "downloads"]:
            return self._no_endpoint()
        request = self._known(parts[2])
        if request is None:
            return self.json(404, {"error": "Not Found", "message": "Download not found"})
        if not request.cancel():
            return self.json(400, {"message": f"Download is already {request.status.lower()}"})
        return self.json(200, self._download_v4(request, poll=False))

    def _create_v3(self, data_type: str) -> None:
        """``GET /v3/data/{type}?q=..&download=true``: 303 to the new request."""
        query = {k: v[-1] for k, v in parse_qs(self.path.partition("?")[2]).items()}
        self.sandbox.note_creation("v3", "GET", self.path, query, "Basic")
        if query.get("download") != "true":
            return self.json(400, {"message": "The sandbox serves downloads only"})
        found = self.sandbox.match(data_type, query.get("format", "csv"), query.get("q", ""))
        records = query.get("records")
        if found is None or (records is not None and not records.isdigit()):
            return self.json(
                400,
                {"error": "Bad Request", "message": "numRequested cannot be <= 0", "code": 400},
            )
        wanted = int(records) if records is not None else found.records
        request = self.sandbox.create_download(
            found, query.get("q", ""), data_type, wanted, query.get("view")
        )
        if self._hung_up_after_creating():
            return None
        return self.send_body(303, b"", "text/plain", {"Location": f"/v3/requests/{request.id}"})

    def _answered_before_routing(self) -> bool:
        """Serve a queued fault, a redirect or a 401 instead of the real answer."""
        if self.sandbox.faults.take_hangup():
            self._hang_up()
            return True
        fault = self.sandbox.faults.take(self.sandbox.faults.api_errors)
        if fault is not None:
            status, retry_after = fault
            extra = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else {}
            self.json(
                status, {"error": "Fault", "message": "injected fault", "code": status}, extra
            )
            return True
        raw = self.sandbox.faults.take(self.sandbox.faults.api_bodies)
        if raw is not None:
            status, content_type, body = raw
            self.send_body(status, body, content_type)
            return True
        redirect = self.sandbox.faults.api_redirect
        if redirect:
            self.send_body(302, b"", "text/plain", {"Location": redirect})
            return True
        if not self._authorized():
            self.json(
                401,
                {
                    "error": "Unauthorized",
                    "message": "Authentication required. Please provide a valid API token",
                    "code": 401,
                },
            )
            return True
        return False

    def _hung_up_after_creating(self) -> bool:
        """Close the connection without an answer, if a creation hangup is queued."""
        if not self.sandbox.faults.take_creation_hangup():
            return False
        self._hang_up()
        return True

    def _hang_up(self) -> None:
        self.record(0)
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)

    def _parts(self) -> list[str]:
        return self.path.split("?", 1)[0].strip("/").split("/")

    def _known(self, ident: str) -> Any:
        return self.sandbox.requests.get(int(ident)) if ident.isdigit() else None

    def _no_endpoint(self) -> None:
        self.json(404, {"error": "Not Found", "message": "No such endpoint", "code": 404})

    def _authorized(self) -> bool:
        header = self.headers.get("Authorization", "")
        if self.path.startswith("/v4/"):
            return header == f"Bearer {self.sandbox.token}"
        if not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        return user == self.sandbox.token and password == ""

    @staticmethod
    def _listed_v3(request: Any) -> dict[str, Any]:
        state: dict[str, Any] = request.peek()
        if state["status"] == "QUEUED":  # v3 knows no queue: its requests start at once
            state["status"] = "STARTED"
        return state

    def _request(self, request: Any) -> None:
        if request is None:
            return self.json(
                404, {"error": "Not Found", "message": "Request not found", "code": 404}
            )
        state = request.poll()
        if state["status"] == "QUEUED":  # v3 knows no queue: its requests start at once
            state["status"] = "STARTED"
        return self.json(200, [state])

    def _download_v4(self, request: Any, *, poll: bool = True) -> dict[str, Any]:
        """API v4's download object: status, counts, and the result URLs written so far."""
        state = request.poll() if poll else request.peek()
        status = {"QUEUED": "queued", "STARTED": "running", "COMPLETED": "completed"}.get(
            state["status"], state["status"].lower()
        )
        if state["error"]:
            status = "cancelled"
        expired = self.sandbox.faults.take_expired_signing()
        written = request.files_written(state)
        urls = [self.sandbox.result_entry(request, rid, f, expired)["url"] for rid, f in written]
        stamp = request.created.strftime("%Y-%m-%dT%H:%M:%S.000Z")
        return {
            "id": str(request.id),
            "status": status,
            "format": state["dataFormat"],
            "num_records": state["numRequested"],
            "num_downloaded": state["numDownloaded"],
            "data_type": request.data_type,
            "query": state["query"],
            "results": urls,
            "date_started": stamp,
            "date_updated": stamp,
        }

    def _results(self, request: Any) -> None:
        if request is None or not request.ready() or not request.files:
            return self.json(
                404, {"error": "Not Found", "message": "No results found", "code": 404}
            )
        expired = self.sandbox.faults.take_expired_signing()
        return self.json(
            200, [self.sandbox.result_entry(request, rid, f, expired) for rid, f in request.files]
        )

    def json(self, status: int, body: Any, extra: dict[str, str] | None = None) -> None:
        """Send ``body`` as JSON."""
        self.send_body(status, json.dumps(body).encode(), "application/json", extra)


class BucketHandler(_Handler):
    """An S3-like bucket: strict pre-signed GETs, ``Range``/``If-Range``, ``ETag``, faults."""

    name = "bucket"

    def do_HEAD(self) -> None:
        """Refuse: S3 answers 403 to HEAD on a URL signed for GET (signatures cover the method)."""
        self.send_body(403, b"", "application/xml")

    def do_GET(self) -> None:
        """Serve an object to a correctly signed, unexpired, unauthenticated GET."""
        raw_path, _, raw_query = self.path.partition("?")
        if "Authorization" in self.headers:
            return self.error(
                400,
                "InvalidArgument",
                "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, "
                "Signature query string parameter or the Authorization header should be specified",
            )
        verdict = self.sandbox.signer.verify(raw_path, raw_query, self.sandbox.now())
        if not verdict.ok:
            return self.error(403, verdict.code, verdict.message)
        fault = self.sandbox.faults.take(self.sandbox.faults.bucket_errors)
        if fault is not None:
            status, retry_after = fault
            extra = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else {}
            return self.error(
                status, "SlowDown" if status == 503 else "InternalError", "injected fault", extra
            )
        answer = self.sandbox.faults.take(self.sandbox.faults.bucket_answers)
        if answer is not None:
            status, headers, body = answer
            url = f"http://{self.headers.get('Host')}{self.path}"
            body = body.replace(b"{url}", url.encode()).replace(b"{path}", self.path.encode())
            kind = headers.get("Content-Type", "")
            extra = {k: v for k, v in headers.items() if k.lower() != "content-type"}
            return self.send_body(status, body, kind, extra)
        served = self.sandbox.objects.get(unquote(raw_path))
        if served is None:
            return self.error(404, "NoSuchKey", "The specified key does not exist.")
        silence = self.sandbox.faults.take(self.sandbox.faults.silences)
        if silence:
            time.sleep(silence)
        self._send_object(served)

    def _send_object(self, served: Any) -> None:
        size = served.size
        start, end = 0, size - 1
        status = 200
        wanted = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        faults = self.sandbox.faults
        honoured = if_range in (None, served.etag) or faults.ignore_if_range
        if wanted and honoured and wanted.startswith("bytes="):
            first, _, last = wanted[6:].partition("-")
            if first.isdigit():
                start = int(first)
                end = min(int(last), size - 1) if last.isdigit() else size - 1
                if start >= size:
                    return self.error(416, "InvalidRange", "The requested range is not satisfiable")
                status = 206
        labelled = True
        cut = None if wanted else self.sandbox.faults.take(self.sandbox.faults.partial_answers)
        if cut is not None:
            (first_bytes, labelled), status = cut, 206
            end = min(first_bytes, size) - 1
        length = end - start + 1
        self.record(status)
        self.send_response(status)
        self.send_header(
            "Content-Type", "text/csv" if served.name.endswith(".csv") else "text/plain"
        )
        self.send_header("Content-Length", str(length))
        self.send_header("ETag", served.etag)
        self.send_header("Accept-Ranges", "bytes")
        if status == 206 and labelled:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        drop_after = self.sandbox.faults.take(self.sandbox.faults.drops)
        stall = self.sandbox.faults.take(self.sandbox.faults.stalls)
        if stall:
            self.wfile.flush()
            time.sleep(stall)
        throttle = self.sandbox.faults.throttle
        self._stream(served.path, start, length, drop_after, throttle)

    def _stream(
        self, path: Path, start: int, length: int, drop_after: int | None, throttle: float | None
    ) -> None:
        sent = 0
        began = time.monotonic()
        with open(path, "rb") as source:
            source.seek(start)
            if drop_after is None and throttle is None:
                self.connection.sendfile(source, start, length)
                return
            # Throttled bodies go out in tenth-of-a-second slices, paced before each send.
            slice_bytes = _CHUNK if not throttle else max(4096, min(_CHUNK, int(throttle / 10)))
            while sent < length:
                step = min(slice_bytes, length - sent)
                if drop_after is not None:
                    step = min(step, drop_after - sent)
                    if step <= 0:
                        # Let the client take in what was sent, as on a real network,
                        # then cut the connection with the body incomplete.
                        self.wfile.flush()
                        time.sleep(0.1)
                        self.close_connection = True
                        self.connection.shutdown(2)
                        return
                if throttle:
                    ahead = (sent + step) / throttle - (time.monotonic() - began)
                    if ahead > 0:
                        time.sleep(ahead)
                self.wfile.write(source.read(step))
                sent += step

    def error(
        self, status: int, code: str, message: str, extra: dict[str, str] | None = None
    ) -> None:
        """Answer with an S3-style XML error."""
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{code}</Code><Message>{message}</Message>"
            f"<RequestId>{int(time.time() * 1000):X}</RequestId></Error>"
        ).encode()
        self.send_body(status, body, "application/xml", extra)


def aware_now(offset: timedelta) -> datetime:
    """The sandbox's clock: real UTC time shifted by ``offset``."""
    return datetime.now(UTC) + offset
