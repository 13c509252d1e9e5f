"""A load's result files, downloaded in parallel and handed out in result-id order.

This is where the API client, the transport and the file store meet: each
file comes from the cache when it is there, is downloaded otherwise, and
when the bucket says a URL has expired the request's URLs are fetched again
(once per load) before giving up with :class:`ResultExpired`.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .cache import FileStore
from .client import Client
from .errors import ResultExpired, StorageError
from .models import ResultFile
from .progress import Progress
from .transport import Transport, UrlExpired, remove_quietly

__all__ = ["DEFAULT_MAX_WORKERS", "Download", "DownloadStats"]

logger = logging.getLogger("datafiniti_loader")

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
        self._local: dict[int, Path] = {}  # a second pass of this load reuses its copies
        self._fresh: dict[int, ResultFile] | None = None
        self._refreshed_once = False
        self._refresh_lock = threading.Lock()

    def local_files(self) -> Iterator[tuple[ResultFile, Path]]:
        """Yield ``(file, local path)`` in order while later files download."""
        window = self.max_workers * 2
        pending: deque[tuple[ResultFile, Future[Path]]] = deque()
        todo = iter(self.files)
        with ThreadPoolExecutor(self.max_workers, thread_name_prefix="dfl-get") as pool:
            try:
                for file in todo:
                    pending.append((file, pool.submit(self.fetch, file)))
                    if len(pending) >= window:
                        done, future = pending.popleft()
                        yield done, future.result()
                while pending:
                    done, future = pending.popleft()
                    yield done, future.result()
            finally:
                if pending:  # abandoned early: an error, or the consumer stopped
                    self.transport.cancel()
                    for _, future in pending:
                        future.cancel()

    def fetch(self, file: ResultFile) -> Path:
        """A complete local copy of ``file``: from the store, or downloaded into it."""
        if file.id in self._local:
            return self._local[file.id]
        path = self._fetch(file)
        self._local[file.id] = path
        self.progress.file_done()
        return path

    def _fetch(self, file: ResultFile) -> Path:
        cached = self.store.lookup(file)
        if cached is not None:
            logger.debug("%s: from the cache", file.name)
            self.stats.add(cached=1)
            return cached
        current = self._current(file)
        if not current.url:  # a file described without its URL (dask partitions)
            current = self._with_urls(file, refresh=False)
        if current.is_expired:
            raise _expired(current)
        part = _storage(lambda: self.store.part_path(file), f"prepare {self.store.root}")
        try:
            logger.debug("%s: downloading (result %d)", file.name, file.id)
            try:
                fetched = self.transport.download(current, part)
            except UrlExpired:
                current = self._with_urls(file, refresh=True)
                try:
                    fetched = self.transport.download(current, part)
                except UrlExpired:
                    raise _expired(current) from None
            path = _storage(
                lambda: self.store.commit(file, part, fetched.size, fetched.etag),
                f"store {file.name} in {self.store.root}",
            )
        finally:
            remove_quietly(part)
        self.stats.add(downloaded=1, nbytes=fetched.downloaded)
        return path

    def _current(self, file: ResultFile) -> ResultFile:
        with self._refresh_lock:
            return file if self._fresh is None else self._fresh.get(file.id, file)

    def _with_urls(self, file: ResultFile, *, refresh: bool) -> ResultFile:
        """The file with a URL from ``/results``.

        ``refresh=True`` replaces URLs the bucket called expired, at most once
        per load; ``refresh=False`` only fills in a missing URL.
        """
        with self._refresh_lock:
            stale = refresh and not self._refreshed_once
            if self._fresh is None or stale:
                if stale:
                    logger.info(
                        "pre-signed URLs expired; fetching fresh ones (request %d)", file.request_id
                    )
                    self._refreshed_once = True
                self._fresh = {f.id: f for f in self.client.results(file.request_id)}
            fresh = self._fresh.get(file.id)
        if fresh is None:
            raise _expired(file)
        return fresh


def _storage(action: Callable[[], Path], what: str) -> Path:
    """Run a file-system step of the store; a failure becomes a StorageError saying what to do."""
    try:
        return action()
    except OSError as exc:
        raise StorageError(
            f"Could not {what}: {exc.strerror or exc}. Free disk space, or point "
            "DATAFINITI_CACHE_DIR (or cache=) at a writable directory, or pass cache=False."
        ) from None


def _expired(file: ResultFile) -> ResultExpired:
    what = f"Result file {file.name} (result {file.id} of request {file.request_id})"
    if file.is_expired and file.expires_at is not None:
        why = (
            f"expired on {file.expires_at:%Y-%m-%d %H:%M} UTC: Datafiniti keeps result "
            "files for 7 days after they are created"
        )
    else:
        why = "has a URL the bucket calls expired, and fresh URLs from the API did not help"
    return ResultExpired(
        f"{what} {why}. Request the download again and load the new request id "
        "(files already in the cache still load)."
    )
