"""Where downloaded files live: a persistent cache keyed by what a file *is*, or a scratch dir.

A cache entry's key is the API host, the request id, the result id and the
file name, never the URL, whose signature changes every time ``/results``
is asked. An entry is a data file plus a small JSON record of its size and
ETag; both are written aside and renamed into place, data first, so a
crash leaves either a complete entry or none, and two processes loading the
same request at once each commit a whole file. Entries hold no token and no
URL query.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from .models import ResultFile
from .parsed import PARSED_FORMAT

__all__ = ["CacheInfo", "FileCache", "FileStore", "ScratchStore"]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _safe(part: str) -> str:
    cleaned = _UNSAFE.sub("_", part).strip("._")
    return cleaned or "_"


class FileStore(ABC):
    """Where a load's files are downloaded to: the cache, or a scratch directory."""

    root: Path

    @abstractmethod
    def lookup(self, file: ResultFile) -> Path | None:
        """A complete local copy of ``file``, or ``None``."""

    @abstractmethod
    def part_path(self, file: ResultFile) -> Path:
        """Where to download ``file`` to before :meth:`commit`."""

    @abstractmethod
    def commit(self, file: ResultFile, part: Path, size: int, etag: str | None) -> Path:
        """Make a finished download the file's entry; return its final path."""

    @abstractmethod
    def parsed_path(self, file: ResultFile) -> Path:
        """Where the file's parsed copy (Arrow IPC) lives."""

    def close(self) -> None:  # noqa: B027 - most stores hold nothing per load
        """Release what the store holds for this load only."""


@dataclass(frozen=True)
class CacheInfo:
    """What a cache directory holds."""

    path: Path
    files: int
    bytes: int  # everything: downloads, parsed copies, leftovers of interrupted runs


class FileCache(FileStore):
    """A persistent cache shared by runs and processes.

    Parameters
    ----------
    root : Path
        The cache directory.
    api_url : str
        Files of different API hosts never share entries.
    """

    def __init__(self, root: Path, api_url: str) -> None:
        self.root = Path(root)
        self._host = _safe(urlsplit(api_url).netloc or "api")

    def _entry(self, file: ResultFile) -> Path:
        return (
            self.root
            / self._host
            / str(int(file.request_id))
            / f"{int(file.id)}-{_safe(file.name)}"
        )

    def lookup(self, file: ResultFile) -> Path | None:
        """The entry's data file, if complete (its size matches its record)."""
        data = self._entry(file)
        meta = data.with_name(data.name + ".json")
        try:
            record = json.loads(meta.read_text(encoding="utf-8"))
            if data.stat().st_size == int(record["size"]):
                return data
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return None

    def part_path(self, file: ResultFile) -> Path:
        """A unique hidden name beside the entry, so concurrent loads never collide."""
        data = self._entry(file)
        data.parent.mkdir(parents=True, exist_ok=True)
        return data.with_name(f".{data.name}.{uuid.uuid4().hex}.part")

    def parsed_path(self, file: ResultFile) -> Path:
        """The parsed copy beside the entry, named for the parsed-copy format."""
        data = self._entry(file)
        return data.with_name(f"{data.name}.parsed-v{PARSED_FORMAT}.arrow")

    def commit(self, file: ResultFile, part: Path, size: int, etag: str | None) -> Path:
        """Rename the download into place, then write its record (size, ETag, dates)."""
        data = self._entry(file)
        self.parsed_path(file).unlink(missing_ok=True)  # it described the old bytes
        os.replace(part, data)
        record = {
            "request_id": file.request_id,
            "result_id": file.id,
            "name": file.name,
            "size": size,
            "etag": etag,
            "date_created": file.date_created.isoformat() if file.date_created else None,
            "cached_at": datetime.now(UTC).isoformat(),
        }
        meta = data.with_name(data.name + ".json")
        tmp = meta.with_name(f".{meta.name}.{uuid.uuid4().hex}.part")
        tmp.write_text(json.dumps(record, indent=1), encoding="utf-8")
        os.replace(tmp, meta)
        return data

    def info(self) -> CacheInfo:
        """Number of cached files and their total size."""
        files = 0
        total = 0
        if self.root.is_dir():
            for meta in self.root.rglob("*.json"):
                data = meta.with_name(meta.name.removesuffix(".json"))
                if not meta.name.startswith(".") and data.is_file():
                    files += 1
            total = sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())
        return CacheInfo(self.root, files, total)

    def clear(self) -> CacheInfo:
        """Delete every cached file; return what was there."""
        before = self.info()
        if self.root.is_dir():
            shutil.rmtree(self.root)
        return before


class ScratchStore(FileStore):
    """A temporary directory for one load (``cache=False``), removed by :meth:`close`."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="datafiniti-loader-"))

    def lookup(self, file: ResultFile) -> Path | None:
        """Nothing is reused across loads."""
        return None

    def part_path(self, file: ResultFile) -> Path:
        """A hidden name in the scratch directory."""
        return self.root / f".{int(file.id)}-{_safe(file.name)}.part"

    def parsed_path(self, file: ResultFile) -> Path:
        """The parsed copy in the scratch directory."""
        return self.root / f"{int(file.id)}.parsed.arrow"

    def commit(self, file: ResultFile, part: Path, size: int, etag: str | None) -> Path:
        """Rename the download into the scratch directory."""
        data = self.root / f"{int(file.id)}-{_safe(file.name)}"
        os.replace(part, data)
        return data

    def close(self) -> None:
        """Remove the scratch directory and everything in it."""
        shutil.rmtree(self.root, ignore_errors=True)
