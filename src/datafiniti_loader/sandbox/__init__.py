"""A local stand-in for Datafiniti's API and its S3 bucket, for tests, demos and your own CI.

It behaves like the real services where a client can get things wrong:
HTTP Basic auth with the token as user name; ``/v3/results`` answering 404
while a request runs; pre-signed URLs whose signature covers the raw query
(a security token with ``+``, ``/`` and ``=`` included); 403 on HEAD and on
expiry; 400 when an ``Authorization`` header reaches the bucket; ``Range``,
``If-Range``, ``ETag`` and ``Content-Length``; and faults on demand.

Examples
--------
>>> from datafiniti_loader import load_results
>>> from datafiniti_loader.sandbox import Sandbox
>>> with Sandbox() as sandbox:                                  # doctest: +SKIP
...     rid = sandbox.add_request(["6073_1.csv", "6073_2.csv"])
...     df = load_results(rid, token=sandbox.token, api_url=sandbox.api_url)
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import os
import secrets
import ssl
import tempfile
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ..config import use_sandbox_cache
from ..fetch.orphans import owned_tempdir
from .server import ApiHandler, BucketHandler, Faults, LogEntry, SandboxServer, aware_now
from .signing import MAX_EXPIRES, Signer
from .since import Since, converted, narrowed, split_since

__all__ = ["Creation", "Faults", "LogEntry", "Sandbox", "SandboxQuery", "SandboxRequest"]

_BUCKET = "datafiniti-downloads"

#: Which fixture request answers every query of a data type and format.
_FIXTURE_QUERIES = {
    "products": ("products", "csv"),
    "products_json": ("products", "json"),
    "businesses": ("businesses", "csv"),
    "properties": ("properties", "json"),
}


@dataclass
class ServedObject:
    """A file the bucket serves."""

    name: str
    path: Path
    size: int
    etag: str


@dataclass
class SandboxRequest:
    """A download request the sandbox knows, and how it answers polls."""

    id: int
    files: list[tuple[int, ServedObject]]
    created: datetime
    status: str = "COMPLETED"
    error: str = ""
    pending_polls: int = 0
    data_type: str = "products"
    records_given: int | None = None
    #: How many records matched the query (v3's ``numFound``), when more than were asked for.
    records_found: int | None = None
    #: What ``/results`` reports as ``date_created`` (default: ``created``).
    reported_created: datetime | None = None
    #: What ``/results`` reports as each file's ``id`` (``None``: leave it out).
    reported_ids: list[int | None] | None = None
    #: Of the pending polls, how many first say ``queued`` (v4) before ``running``.
    queued_polls: int = 0
    query: str = "sandbox"
    view: str = "default"
    polls_taken: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @functools.cached_property
    def records(self) -> int:
        """Records in the files, counted by this library's readers when first asked."""
        if self.records_given is not None:
            return self.records_given
        return sum(_count_records(obj) for _, obj in self.files)

    def ready(self) -> bool:
        """True once polls are used up and the request completed without error."""
        with self.lock:
            return self.pending_polls <= 0 and self.status == "COMPLETED" and not self.error

    def poll(self) -> dict[str, Any]:
        """The ``/requests`` record; each poll brings a pending request one step closer."""
        with self.lock:
            state = self._state()
            if self.pending_polls > 0:
                self.pending_polls -= 1
            self.polls_taken += 1
        return state

    def peek(self) -> dict[str, Any]:
        """The ``/requests`` record, without counting as a poll."""
        with self.lock:
            return self._state()

    def cancel(self) -> bool:
        """Stop a running download where it is (v4's DELETE); False if it already ended."""
        with self.lock:
            if self.pending_polls <= 0 or self.status != "COMPLETED":
                return False
            state = self._state()
            self.files = self.files_written(state)
            self.records_given = state["numDownloaded"]
            self.__dict__.pop("records", None)
            self.status, self.pending_polls = "CANCELLED", 0
            return True

    def files_written(self, state: dict[str, Any]) -> list[tuple[int, ServedObject]]:
        """The files written by ``state``: all once it ended, a share while it runs."""
        if state["status"] not in ("QUEUED", "STARTED"):
            return self.files
        share = state["numDownloaded"] / state["numRequested"] if state["numRequested"] else 0
        return self.files[: int(len(self.files) * share)]

    def _state(self) -> dict[str, Any]:
        pending = self.pending_polls
        if pending > 0:
            status = "QUEUED" if self.polls_taken < self.queued_polls else "STARTED"
            done = 0 if status == "QUEUED" else self.records // (pending + 1)
        else:
            status, done = self.status, self.records
        stamp = f"{self.created:%Y-%m-%d %H:%M:%S}"
        fmt = "csv" if all(o.name.endswith(".csv") for _, o in self.files) else "json"
        return {
            "id": self.id,
            "records": "",
            "query": self.query,
            "dataType": self.data_type,
            "dataFormat": fmt,
            "view": self.view,
            "status": status,
            "error": self.error,
            "numDownloaded": done,
            "numFound": max(self.records_found or 0, self.records),
            "numRequested": self.records,
            "date_started": stamp,
            "date_completed": stamp if status == "COMPLETED" else "",
        }


@dataclass
class SandboxQuery:
    """Files a query matches, served as a new download each time one is created."""

    files: list[Path]
    records: int


@dataclass(frozen=True)
class Creation:
    """A download-creating (or counting) call the sandbox received, without its auth value.

    ``params`` is v3's query string or v4's JSON body; ``auth`` the scheme
    (``Basic`` or ``Bearer``) the call carried.
    """

    version: str
    method: str
    path: str
    params: dict[str, Any]
    auth: str


class Sandbox:
    """Datafiniti's API and bucket on 127.0.0.1, serving files you give it.

    Parameters
    ----------
    token : str, optional
        The API token it accepts (random by default).
    host : str
        Address to bind, loopback by default.
    tls : ssl.SSLContext, optional
        Serve HTTPS with this server-side context (certificate loaded).
    port : int
        The API's port (0: any free one). A fixed port and token keep a
        pipeline's settings, and its cache, valid across restarts.

    Attributes
    ----------
    api_url : str
        Pass as ``api_url=`` (or ``DATAFINITI_API_URL``).
    faults : Faults
        Queue faults here to see how your pipeline copes.
    log : list of LogEntry
        Every request both servers received.
    clock_offset : timedelta
        Shifts the bucket's clock (to make URLs expire).
    """

    def __init__(
        self,
        token: str | None = None,
        *,
        host: str = "127.0.0.1",
        tls: ssl.SSLContext | None = None,
        port: int = 0,
    ) -> None:
        self.token = token or "sandbox-" + secrets.token_urlsafe(18)
        self.signer = Signer()
        self.faults = Faults()
        self.log: list[LogEntry] = []
        self.clock_offset = timedelta(0)
        self.requests: dict[int, SandboxRequest] = {}
        self.objects: dict[str, ServedObject] = {}
        #: Registered queries, by (data type, format, query text); "*" matches any text.
        self.queries: dict[tuple[str, str, str], SandboxQuery] = {}
        #: Every download-creating call received, in order.
        self.creations: list[Creation] = []
        #: Every download created through the API, in order (see :attr:`credits_spent`).
        self.downloads_created: list[SandboxRequest] = []
        #: How a created download answers polls: this many ``queued``, then ``running``.
        self.creation_polls = (1, 1)
        self._create_lock = threading.Lock()
        self._ids = itertools.count(6073)
        self._result_ids = itertools.count(1)
        self._api = SandboxServer((host, port), ApiHandler, self, tls)
        self._bucket = SandboxServer((host, 0), BucketHandler, self, tls)
        self._threads: list[threading.Thread] = []
        self._scratch: tempfile.TemporaryDirectory[str] | None = None

    @property
    def api_url(self) -> str:
        """The v3 API base URL."""
        return f"{self._api.url()}/v3"

    @property
    def api_url_v4(self) -> str:
        """The v4 API base URL (Bearer auth, ``/downloads/{id}``)."""
        return f"{self._api.url()}/v4"

    @property
    def bucket_url(self) -> str:
        """The bucket's base URL."""
        return self._bucket.url()

    def now(self) -> datetime:
        """The bucket's idea of the time."""
        return aware_now(self.clock_offset)

    def start(self) -> Sandbox:
        """Serve in background threads."""
        for server in (self._api, self._bucket):
            thread = threading.Thread(
                target=server.serve_forever, args=(0.05,), daemon=True, name="dfl-sandbox"
            )
            thread.start()
            self._threads.append(thread)
        # Loads from this sandbox (with no cache named) keep their files here, not in the
        # user's cache: removed with the sandbox.
        use_sandbox_cache(self.api_url, lambda: Path(self._scratch_dir()) / "cache")
        return self

    def close(self) -> None:
        """Stop both servers and remove what they generated, the loads' cache included."""
        for server in (self._api, self._bucket):
            server.shutdown()
            server.server_close()
        use_sandbox_cache(self.api_url, None)
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch = None

    def add_fixture_requests(self, directory: Path | None = None) -> dict[str, int]:
        """Serve the built-in fixtures as requests; return their ids by name.

        Any query of products, businesses or properties then downloads (and
        counts) the fixtures of that type: CSV, or JSON for ``format="json"``.

        The files come from ``directory`` (the project's ``data/fixtures``),
        else they are generated into a directory that :meth:`close` removes.
        """
        from .fixtures import FIXTURE_REQUESTS, write_fixtures

        if directory is None:
            files = write_fixtures(self._scratch_dir())
        else:
            files = {n: [directory / f for f in names] for n, names in FIXTURE_REQUESTS.items()}
        for name, (data_type, fmt) in _FIXTURE_QUERIES.items():
            self.add_query("*", files[name], data_type=data_type, format=fmt)
        return {name: self.add_request(paths) for name, paths in files.items()}

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Sandbox(api_url={self.api_url!r}, requests={sorted(self.requests)})"

    def add_request(
        self,
        files: list[str | os.PathLike[str]] | list[Path],
        *,
        request_id: int | None = None,
        names: list[str] | None = None,
        status: str = "COMPLETED",
        error: str = "",
        pending_polls: int = 0,
        created: datetime | None = None,
        records: int | None = None,
        reported_created: datetime | None = None,
        result_ids: list[int | None] | None = None,
    ) -> int:
        """Serve ``files`` as the results of a download request; return its id.

        Parameters
        ----------
        files : list of paths
            Served in this order, as result ids ascending.
        request_id : int, optional
            Default: the next free id from 6073.
        names : list of str, optional
            File names in the URLs; default ``{request_id}_{n}.{csv|txt}``
            from each file's extension.
        status, error : str
            What ``/requests`` reports once polls are used up.
        pending_polls : int
            ``/requests`` says ``STARTED`` (and ``/results`` 404) this many polls.
        created : datetime, optional
            The results' ``date_created`` (default now); older than 7 days
            makes their URLs expired.
        reported_created : datetime, optional
            A ``date_created`` to report instead, without changing when the
            URLs expire (a client whose clock is off sees the same).
        result_ids : list of int or None, optional
            The ``id`` reported for each file, repeats allowed; ``None``
            leaves a file's ``id`` out.
        """
        rid = request_id if request_id is not None else next(self._ids)
        served = []
        for n, path in enumerate(files, start=1):
            path = Path(path)
            name = names[n - 1] if names else f"{rid}_{n}{_extension(path)}"
            obj = ServedObject(name, path, path.stat().st_size, _etag(path))
            self.objects[f"/{_BUCKET}/{rid}/{name}"] = obj
            served.append((next(self._result_ids), obj))
        self.requests[rid] = SandboxRequest(
            rid,
            served,
            (created or datetime.now(UTC)).replace(microsecond=0),
            status=status,
            error=error,
            pending_polls=pending_polls,
            records_given=records,
            reported_created=reported_created,
            reported_ids=result_ids,
        )
        return rid

    def add_query(
        self,
        query: str,
        files: list[str | os.PathLike[str]] | list[Path],
        *,
        data_type: str = "products",
        format: str = "csv",
        records: int | None = None,
    ) -> None:
        """Have downloads (and counts) of ``query`` serve ``files``.

        ``query="*"`` answers every query of that data type and format that
        no other registration names. A query nothing answers counts 0, and
        creating a download of it gets v3's ``400 numRequested cannot be <= 0``.
        Registering a query again replaces its files: a test's way to update
        and add records between two syncs.
        """
        paths = [Path(p) for p in files]
        if records is None:
            records = sum(_count_file(p) for p in paths)
        self.queries[(data_type, format.lower(), query)] = SandboxQuery(paths, records)

    def match(self, data_type: str, format: str | None, query: str) -> SandboxQuery | None:
        """The registration answering ``query``, if any (and with records).

        A ``dateUpdated:[X TO *]`` (or ``{X TO *]``) clause joined with ``AND``
        narrows the registration of the rest of the query to its records in
        range, as Datafiniti would: what an incremental sync counts and buys.
        A count (``format`` None) is answered by a registration of any format.
        """
        formats = [format.lower()] if format else ["csv", "json"]  # a count has no format
        for fmt in formats:
            found = self._registered(data_type, fmt, query)
            if found is not None and found.records > 0:
                return found
        if format:  # registered in the other format only: Datafiniti writes any format asked
            other = "json" if format.lower() == "csv" else "csv"
            found = self._registered(data_type, other, query)
            if found is not None and found.records > 0:
                target = Path(tempfile.mkdtemp(prefix="as-", dir=self._scratch_dir()))
                files = converted(found.files, target, format.lower())
                return SandboxQuery(files, sum(_count_file(p) for p in files))
        return None

    def _registered(self, data_type: str, format: str, query: str) -> SandboxQuery | None:
        key = (data_type, format)
        found = self.queries.get((*key, query.strip()))
        if found is None:
            rest, since = split_since(query)
            found = self.queries.get((*key, rest)) or self.queries.get((*key, "*"))
            if found is not None and since is not None:
                found = self._narrowed(found, since)
        return found

    def _narrowed(self, found: SandboxQuery, since: Since) -> SandboxQuery:
        """``found``'s records updated in range, as new files in the scratch directory."""
        target = Path(tempfile.mkdtemp(prefix="since-", dir=self._scratch_dir()))
        return SandboxQuery(*narrowed(found.files, target, since=since))

    def _scratch_dir(self) -> str:
        if self._scratch is None:  # made on first use: a sandbox that needs none makes none
            self._scratch = owned_tempdir("datafiniti-sandbox-")
        return self._scratch.name

    @property
    def credits_spent(self) -> int:
        """Records in every download created through the API: what Datafiniti would charge."""
        return sum(request.records for request in self.downloads_created)

    def create_download(
        self, found: SandboxQuery, query: str, data_type: str, wanted: int, view: str | None
    ) -> SandboxRequest:
        """A new request serving ``found``'s files, going queued -> running -> completed."""
        queued, running = self.creation_polls
        files = found.files
        if wanted < found.records:  # the download holds what it says: its first records
            target = Path(tempfile.mkdtemp(prefix="cut-", dir=self._scratch_dir()))
            files = narrowed(found.files, target, limit=wanted)[0]
        with self._create_lock:
            rid = next(self._ids)
            while rid in self.requests:
                rid = next(self._ids)
            self.add_request(
                files,
                request_id=rid,
                pending_polls=queued + running,
                records=min(wanted, found.records),
            )
            request = self.requests[rid]
            request.records_found = found.records
            self.downloads_created.append(request)
        request.queued_polls = queued
        request.data_type = data_type
        request.view = view or "default"
        request.query = query
        return request

    def note_creation(
        self, version: str, method: str, path: str, params: dict[str, Any], auth: str
    ) -> None:
        """Keep what a creating call asked (for tests: the right verb, path and arguments)."""
        self.creations.append(Creation(version, method, path.split("?", 1)[0], params, auth))

    def result_entry(
        self, request: SandboxRequest, result_id: int, obj: ServedObject, expired: bool
    ) -> dict[str, Any]:
        """One element of ``/results``, with a freshly signed URL."""
        path = f"/{_BUCKET}/{request.id}/{obj.name}"
        now = self.now().replace(microsecond=0)
        lifetime_left = int(
            (request.created + timedelta(seconds=MAX_EXPIRES) - now).total_seconds()
        )
        if expired:
            query = self.signer.sign(path, now - timedelta(hours=2), 3600)
        elif lifetime_left <= 0:
            query = self.signer.sign(path, request.created, MAX_EXPIRES)
        else:
            query = self.signer.sign(path, now, lifetime_left)
        created = request.reported_created or request.created
        entry: dict[str, Any] = {
            "id": result_id,
            "url": f"{self.bucket_url}{path}?{query}",
            "request_id": request.id,
            "downloaded": 0,  # internal to Datafiniti; clients ignore them
            "imported": 0,
            "date_created": f"{created.year}-{created.month}-{created.day} {created:%H:%M:%S}",
        }
        if request.reported_ids is not None:
            position = [rid for rid, _ in request.files].index(result_id)
            reported = request.reported_ids[position]
            if reported is None:
                del entry["id"]
            else:
                entry["id"] = reported
        return entry


def _extension(path: Path) -> str:
    suffixes = [s for s in path.suffixes if s != ".gz"]
    last = suffixes[-1].lower() if suffixes else ""
    return ".csv" if last == ".csv" else ".txt" if last in (".txt", ".json", ".jsonl", "") else last


def _etag(path: Path) -> str:
    with open(path, "rb") as handle:
        return f'"{hashlib.file_digest(handle, "md5").hexdigest()}"'


def _count_file(path: Path) -> int:
    return _count_records(ServedObject(path.name, path, 0, ""))


def _count_records(obj: ServedObject) -> int:
    from ..read.files import read_file
    from ..remote.models import format_from_name

    # A record spans several rows in flat views: count its ids, as Datafiniti counts records.
    read = read_file(obj.path, obj.name, format_from_name(obj.name))
    ids: set[object] = set()
    rows = 0
    for batch in read.batches:
        rows += batch.num_rows
        if "id" in batch.schema.names:
            ids.update(batch.column("id").to_pylist())
    return len(ids - {None}) or rows
