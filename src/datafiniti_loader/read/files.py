"""Readers: a downloaded result file to Arrow record batches.

CSV batches hold every cell as text (types are decided later, across files,
by :mod:`datafiniti_loader.read.schema`); JSON batches arrive typed. Each reader
raises :class:`~datafiniti_loader.errors.ParseError` naming the file and the
line or record when a file cannot be read.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import pyarrow as pa

from ..errors import ParseError
from .csvfile import iter_csv_batches
from .jsonfile import json_batches

__all__ = [
    "DEFAULT_MAX_COLUMNS",
    "DEFAULT_MAX_GZIP_RATIO",
    "MAX_COLUMNS_ENV",
    "MAX_GZIP_RATIO_ENV",
    "FileBatches",
    "check_width",
    "detect_format",
    "open_bytes",
    "read_file",
]

_GZIP_MAGIC = b"\x1f\x8b"


def open_bytes(path: Path, name: str = "", *, arrow: bool = False) -> IO[bytes]:
    """Open a local file for reading, decompressing it when it is gzip (by magic bytes).

    Decompression is bounded (see :class:`_BoundedGzip`): a damaged or hostile
    file cannot expand without end into memory or onto disk.

    ``arrow=True`` opens a plain file as Arrow's ``OSFile``, whose
    ``read_buffer`` reads into Arrow's memory pool: pyarrow's CSV reader then
    gets blocks in memory it reuses, where every Python ``read`` takes fresh
    pages the kernel must zero (measured reading a 100 MB CSV: 740 page faults
    instead of 8,000).
    """
    raw = open(path, "rb")  # noqa: SIM115 - returned to the caller
    if raw.read(2) == _GZIP_MAGIC:
        raw.close()
        return cast(IO[bytes], _BoundedGzip(path, name or path.name))
    if arrow:
        raw.close()
        return cast(IO[bytes], pa.OSFile(str(path)))
    raw.seek(0)
    return raw


#: A gzip result file may expand to this many times its size (real ones: 2-52x)...
DEFAULT_MAX_GZIP_RATIO = 200
#: ...or to this many bytes, whichever is more (small files compress best).
GZIP_FLOOR_BYTES = 256 * 1024 * 1024
MAX_GZIP_RATIO_ENV = "DATAFINITI_MAX_GZIP_RATIO"


class _BoundedGzip(io.RawIOBase):
    """A gzip file that refuses to expand past ``max(floor, ratio x compressed size)``."""

    def __init__(self, path: Path, name: str) -> None:
        self._inner = gzip.open(path, "rb")  # noqa: SIM115 - closed by close()
        self._name = name
        compressed = path.stat().st_size
        self._limit = max(GZIP_FLOOR_BYTES, _max_ratio() * compressed)
        self._compressed = compressed
        self._count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        got = self._inner.readinto(buffer)
        self._count += got
        self._check()
        return got

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:  # everything, but never more than the limit allows
            size = self._limit - self._count + 1
        data = self._inner.read(size)
        self._count += len(data)
        self._check()
        return data

    def _check(self) -> None:
        if self._count > self._limit:
            ratio = _max_ratio()
            raise ParseError(
                f"{self._name}: decompresses to more than {self._limit / 1e6:,.0f} MB from "
                f"{self._compressed / 1e6:,.1f} MB (over {ratio}x), far beyond what Datafiniti "
                "files do: it may be damaged or hostile, and was not read further. If it is "
                f"genuine, allow more with {MAX_GZIP_RATIO_ENV}=<ratio>.",
                file=self._name,
            )

    def close(self) -> None:
        self._inner.close()
        super().close()


def _max_ratio() -> int:
    value = os.environ.get(MAX_GZIP_RATIO_ENV, "")
    return int(value) if value.isdigit() and int(value) > 0 else DEFAULT_MAX_GZIP_RATIO


#: The most columns a result file may have (Datafiniti's have tens to hundreds;
#: every column costs type checks, so a damaged or hostile header of a million
#: columns would cost minutes and gigabytes before any row is read).
DEFAULT_MAX_COLUMNS = 20_000
MAX_COLUMNS_ENV = "DATAFINITI_MAX_COLUMNS"


def check_width(columns: int, name: str) -> None:
    """Refuse a file with more columns than :data:`DEFAULT_MAX_COLUMNS` (or the env's limit)."""
    value = os.environ.get(MAX_COLUMNS_ENV, "")
    limit = int(value) if value.isdigit() and int(value) > 0 else DEFAULT_MAX_COLUMNS
    if columns > limit:
        raise ParseError(
            f"{name}: has {columns:,} columns, more than the {limit:,} this library reads "
            "(Datafiniti files have tens to hundreds): it may be damaged or not a "
            f"Datafiniti file, and was not read further. If it is genuine, allow more with "
            f"{MAX_COLUMNS_ENV}=<columns>.",
            file=name,
        )


def detect_format(path: Path, declared: str) -> str:
    """``"csv"`` or ``"json"``: the name's word, unless the content plainly says otherwise."""
    with open_bytes(path) as stream:
        head = stream.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    if head[:1] in (b"{", b"["):
        return "json"
    if head and declared == "json":
        return "csv"
    return declared


@dataclass
class FileBatches:
    """A file's record batches, and whether their cells are untyped text (CSV)."""

    batches: Iterator[pa.RecordBatch]
    text: bool


def read_file(
    path: Path, name: str, declared_format: str, *, text_columns: frozenset[str] = frozenset()
) -> FileBatches:
    """Stream ``path`` as record batches; ``name`` is used in error messages.

    ``text_columns``: JSON fields to read as their JSON text in every record,
    the whole file having values of several types there (see
    :mod:`~datafiniti_loader.read.jsonlines`).
    """
    fmt = detect_format(path, declared_format)
    if fmt == "csv":
        return FileBatches(iter_csv_batches(path, name), text=True)
    return FileBatches(
        _checked_width(json_batches(path, name, text_columns=text_columns), name), text=False
    )


def _checked_width(batches: Generator[pa.RecordBatch], name: str) -> Iterator[pa.RecordBatch]:
    with contextlib.closing(batches):  # closed with this one: the reads stop at once
        for batch in batches:
            check_width(batch.num_columns, name)
            yield batch
