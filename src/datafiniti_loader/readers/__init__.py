"""Readers: a downloaded result file to Arrow record batches.

CSV batches hold every cell as text (types are decided later, across files,
by :mod:`datafiniti_loader.schema`); JSON batches arrive typed. Each reader
raises :class:`~datafiniti_loader.errors.ParseError` naming the file and the
line or record when a file cannot be read.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

import pyarrow as pa

from .csvfile import DEFAULT_CHUNK_BYTES, iter_csv_batches
from .jsonfile import read_json_table

__all__ = ["FileBatches", "detect_format", "open_bytes", "read_file"]

_GZIP_MAGIC = b"\x1f\x8b"


def open_bytes(path: Path) -> IO[bytes]:
    """Open a local file for reading, decompressing it when it is gzip (by magic bytes)."""
    raw = open(path, "rb")  # noqa: SIM115 - returned to the caller
    if raw.read(2) == _GZIP_MAGIC:
        raw.close()
        return cast(IO[bytes], gzip.open(path, "rb"))
    raw.seek(0)
    return raw


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
    path: Path,
    name: str,
    declared_format: str,
    *,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> FileBatches:
    """Stream ``path`` as record batches; ``name`` is used in error messages."""
    fmt = detect_format(path, declared_format)
    if fmt == "csv":
        return FileBatches(iter_csv_batches(path, name, chunk_bytes=chunk_bytes), text=True)
    table = read_json_table(path, name)
    return FileBatches(iter(table.to_batches(max_chunksize=65536)), text=False)
