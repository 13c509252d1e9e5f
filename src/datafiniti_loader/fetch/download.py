"""A load's result files, downloaded in parallel and handed out in load order.

This is where the API client, the transport and the file store meet: each
file comes from the store when a verified copy is there, and is downloaded
otherwise (resuming what an earlier load left). The bucket decides expiry:
every file is tried with its URL, and only when the bucket calls a URL
expired are the request's URLs fetched again (once per load) before giving
up with :class:`ResultExpired`.

:meth:`Download.close` stops everything at once: downloads in flight are cut
at their next chunk (their bytes stay in the cache for the next load) and
waits end, so Ctrl-C stops a load within a moment.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DatafinitiError, ResultExpired, StorageError
from ..progress import Progress
from ..remote.client import Client
from ..remote.models import FileKey, ResultFile
from .cache import FileStore
from .transport import Fetched, Partial, Transport, UrlExpired

__all__ = ["DEFAULT_MAX_WORKERS", "Download", "DownloadStats"]

logger = logging.getLogger(__name__)

#: Parallel downloads when ``max_workers`` is not given.
DEFAULT_MAX_WORKERS = 4


@dataclass
class DownloadStats:
    """What a load fetched: files from the network and from the cache, and bytes moved."""

    downloaded_files: int = 0
    cached_files: int = 0
    bytes_downloaded: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, *, downloaded: int = 0, cached: int = 0, nbytes: int = 0) -> None:
        """Count files and bytes (thread-safe: downloads run in parallel)."""
        with self._lock:
            self.downloaded_files += downloaded
            self.cached_files += cached
            self.bytes_downloaded += nbytes


class Download:
    """Fetches the files of one request into a :class:`FileStore`.

    Parameters
    ----------
    client : Client
        Used again only to refresh expired URLs.
    files : list of ResultFile
        The request's files, in load order.
    store : FileStore
        The cache or a scratch directory.
    transport : Transport
    max_workers : int
        Files downloaded at once.
    progress : Progress
    """

    def __init__(
        self,
        client: Client,
        files: list[ResultFile],
        store: FileStore,
        transport: Transport,
        *,
        max_workers: int = DEFAULT_MAX_WORKERS,
        progress: Progress | None = None,
    ) -> None:
        self.client = client
        self.files = files
        self.store = store
        self.transport = transport
        self.max_workers = max(1, max_workers)
        self.progress = progress or Progress(False, 0, "")
        self.stats = DownloadStats()
        # Keyed by position, id and name: ids can repeat, or be missing.
        self._local: dict[FileKey, Path] = {}
        # URLs listed again by /results, per request (at most one refresh each per load).
        self._fresh: dict[FileKey, ResultFile] = {}
        self._listed: set[int] = set()
        self._refreshed: set[int] = set()
        self._refresh_lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    def local_files(
        self, while_waiting: Callable[[], None] | None = None
    ) -> Iterator[tuple[ResultFile, Path]]:
        """Yield ``(file, local path)`` in order while later files download.

        ``while_waiting``, if given, is called every tenth of a second while a
        download is awaited; what it raises ends the wait (and the downloads).
        """
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.max_workers, thread_name_prefix="dfl-get")
        window = self.max_workers * 2
        pending: deque[tuple[ResultFile, Future[Path]]] = deque()
        todo = iter(self.files)
        try:
            for file in todo:
                pending.append((file, self._pool.submit(self.fetch, file)))
                if len(pending) >= window:
                    done, future = pending.popleft()
                    yield done, _awaited(future, while_waiting)
            while pending:
                done, future = pending.popleft()
                yield done, _awaited(future, while_waiting)
        finally:
            if pending:  # abandoned early: an error, Ctrl-C, or the consumer stopped
                self.close()

    def close(self) -> None:
        """Stop every download now and wait for the workers to notice (a moment)."""
        self.transport.cancel()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def fetch(self, file: ResultFile) -> Path:
        """A complete local copy of ``file``: from the store, or downloaded into it."""
        if file.key in self._local:
            return self._local[file.key]
        path = self._fetch(file)
        self._local[file.key] = path
        self.progress.file_done()
        return path

    def _fetch(self, file: ResultFile) -> Path:
        """From the store, else downloaded into it; a file-system failure is a StorageError."""
        failure: OSError | None = None
        try:
            return self._from_store_or_bucket(file)
        except OSError as exc:
            failure = exc
        raise StorageError(  # outside the except block: the OSError need not ride along
            f"Could not use {self.store.root} for {file.name}: {failure.strerror or failure}. "
            "Free disk space, or point DATAFINITI_CACHE_DIR (cache=, --cache-dir) at a writable "
            "directory, or pass cache=False (--no-cache)."
        )

    def _from_store_or_bucket(self, file: ResultFile) -> Path:
        cached = self.store.lookup(file)
        if cached is not None:
            logger.debug("%s: from the cache", file.name)
            self.stats.add(cached=1)
            return cached
        with self.store.claim(file, self.transport.cancelled) as partial:
            cached = self.store.lookup(file)
            if cached is not None:  # another process downloaded it while we waited
                self.stats.add(cached=1)
                return cached
            current = self._current(file)
            if not current.url:  # a file described without its URL (dask partitions)
                current = self._with_urls(file, refresh=False)
            fetched = self._download(file, current, partial)
            path = self.store.commit(file, fetched)
        self.stats.add(downloaded=1, nbytes=fetched.downloaded)
        return path

    def _download(self, file: ResultFile, current: ResultFile, partial: Partial) -> Fetched:
        """Download with the URL at hand; if the bucket calls it expired, again with a fresh one."""
        logger.debug("%s: downloading (result %d)", file.name, file.id)
        try:
            return self.transport.download(current, partial)
        except UrlExpired:
            pass
        current = self._with_urls(file, refresh=True)
        try:
            return self.transport.download(current, partial)
        except UrlExpired:
            pass
        raise _expired(current)

    def _current(self, file: ResultFile) -> ResultFile:
        with self._refresh_lock:
            return self._fresh.get(file.key, file)

    def _with_urls(self, file: ResultFile, *, refresh: bool) -> ResultFile:
        """The file with a URL from its request's ``/results``.

        ``refresh=True`` replaces URLs the bucket called expired, at most once
        per request and load; ``refresh=False`` only fills in a missing URL.
        """
        rid = file.request_id
        with self._refresh_lock:
            stale = refresh and rid not in self._refreshed
            if rid not in self._listed or stale:
                if stale:
                    logger.info("pre-signed URLs expired; fetching fresh ones (request %d)", rid)
                    self._refreshed.add(rid)
                self._fresh.update((f.key, f) for f in self.client.results(rid))
                self._listed.add(rid)
            fresh = self._fresh.get(file.key)
        if fresh is None:
            raise DatafinitiError(
                f"Result file {file.name} (result {file.id}) is no longer among the files "
                f"of request {rid}. Load the request again."
            )
        return fresh


_WAIT_POLL = 0.1  # seconds between calls of ``while_waiting``


def _awaited(future: Future[Path], while_waiting: Callable[[], None] | None) -> Path:
    if while_waiting is not None:
        while not future.done():
            while_waiting()
            wait([future], timeout=_WAIT_POLL)
    return future.result()


def _expired(file: ResultFile) -> ResultExpired:
    what = f"Result file {file.name} (result {file.id} of request {file.request_id})"
    age = ""
    if file.expires_at is not None:
        age = (
            f" It was created on {file.date_created:%Y-%m-%d %H:%M} (as the API reports it); "
            "Datafiniti keeps result files for 7 days."
        )
    return ResultExpired(
        f"{what} has a URL the bucket calls expired, and fresh URLs from the API did not "
        f"help.{age} Request the download again and load the new request id (files already "
        "in the cache still load)."
    )
