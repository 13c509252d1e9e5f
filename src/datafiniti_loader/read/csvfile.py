r"""CSV result files to text record batches: pyarrow's streaming reader, made lossless.

Datafiniti CSVs end lines with CRLF, hold CRLF inside quoted cells, may start
with a BOM and may lack a final newline. Every cell arrives as text (types
are decided later, across files) and an empty cell as null.

pyarrow's streaming CSV reader finds record boundaries and parses in C++, in
less than half the CPU time of cutting records here first (measured in
BENCHMARKS.md), but it has two limits, both handled here:

- apache/arrow#51368: when one read of the input ends with the ``\r`` of a
  CRLF inside a quoted cell, pyarrow drops the ``\n`` that starts the next
  read. The body reaches pyarrow through :class:`_NoFinalCR`, whose reads
  never end with ``\r`` (a trailing ``\r`` waits for the next read).
- It stops at a record too long for its blocks (one that spans three), at a
  malformed record and at bytes that are not UTF-8. The file is then read
  again by the careful reader (:mod:`.csvrecords`), which joins records of
  any length and says at which line a file is malformed; the rows already
  handed on are skipped, so each row arrives once and in order.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.csv as pcsv

from .csvrecords import (
    BOM,
    DEFAULT_CHUNK_BYTES,
    empty_batch,
    header_end,
    keep_bom,
    parse_header,
    record_batches,
    text_options,
)

logger = logging.getLogger("datafiniti_loader")

__all__ = ["BATCH_BYTES", "BLOCK_BYTES", "iter_csv_batches"]

#: pyarrow's read size. It reads up to 32 blocks ahead of its parser, so this
#: bounds that to 16 MB a file (1 MiB gave the same speed and 32 MB more peak
#: memory in a conversion reading two files at once, measured). A record too
#: long for its blocks is read by the careful reader (none in the nine real
#: CSV files is).
BLOCK_BYTES = 512 << 10
#: Blocks' batches are handed on gathered to about this size: every batch costs
#: something downstream (type checks, parsed copy, conversion), and 1 MiB batches
#: made a load of the real files about 50 % slower (measured).
BATCH_BYTES = 4 << 20


class _Unstreamable(Exception):
    """Something in the file that the streaming reader would get wrong."""


def iter_csv_batches(
    path: Path,
    name: str,
    *,
    block_bytes: int = BLOCK_BYTES,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> Iterator[pa.RecordBatch]:
    """Record batches of ``path`` with every column as nullable text (empty cell = null).

    ``block_bytes`` is the streaming reader's read size, ``chunk_bytes`` the
    careful reader's (see the module's description).
    """
    delivered = 0
    try:
        for batch in _streamed(path, name, block_bytes):
            delivered += batch.num_rows
            yield batch
        return
    except (_Unstreamable, pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        # pyarrow's message may quote the record: only its kind goes to the log
        reason = str(exc) if isinstance(exc, _Unstreamable) else type(exc).__name__
    logger.debug("%s: read again record by record after %s rows (%s)", name, delivered, reason)
    for batch in record_batches(path, name, chunk_bytes=chunk_bytes):
        if delivered >= batch.num_rows:
            delivered -= batch.num_rows
            continue
        yield batch.slice(delivered)
        delivered = 0


def _streamed(path: Path, name: str, block_bytes: int) -> Iterator[pa.RecordBatch]:
    from .files import open_bytes

    with open_bytes(path, name, arrow=True) as stream:
        head = stream.read(block_bytes)
        start = len(BOM) if head.startswith(BOM) else 0
        body_start = header_end(head, start, len(head))
        if body_start == len(head) == block_bytes:
            raise _Unstreamable("a header as long as a block")
        names = parse_header(head[start:body_start], name)
        if not names:
            return
        if body_start == len(head) < block_bytes:  # a header alone (pyarrow calls it empty)
            yield empty_batch(names)
            return
        reader = pcsv.open_csv(
            _NoFinalCR(keep_bom(head[body_start:]), stream),
            read_options=pcsv.ReadOptions(column_names=names, block_size=block_bytes),
            parse_options=pcsv.ParseOptions(newlines_in_values=True),
            convert_options=text_options(names),
        )
        try:
            yield from _gathered(reader, names)
        finally:
            reader.close()


def _gathered(reader: pa.RecordBatchReader, names: list[str]) -> Iterator[pa.RecordBatch]:
    """The reader's batches joined to about :data:`BATCH_BYTES` each (one copy)."""
    pending: list[pa.RecordBatch] = []
    size = 0
    handed = False
    for batch in reader:
        pending.append(batch)
        size += batch.nbytes
        if size >= BATCH_BYTES:
            yield _joined(pending)
            handed = True
            pending, size = [], 0
    if pending:
        yield _joined(pending)
    elif not handed:
        yield empty_batch(names)


def _joined(batches: list[pa.RecordBatch]) -> pa.RecordBatch:
    return batches[0] if len(batches) == 1 else pa.concat_batches(batches)


class _NoFinalCR(io.RawIOBase):
    r"""``first``, then the rest of ``rest``, in reads that never end with ``\r``.

    A read that would end with ``\r`` stops before it; the ``\r`` begins the
    next read. So pyarrow never sees a CRLF split between two reads, which is
    where it loses the ``\n`` (apache/arrow#51368). Only a run of ``\r`` as
    long as a whole read cannot be served this way (no CSV holds one).
    """

    def __init__(self, first: bytes, rest: IO[bytes]) -> None:
        self._held = first
        self._rest = rest
        # An Arrow file's reads land in Arrow's pool (see ``open_bytes``); pyarrow
        # takes a buffer as readily as bytes.
        self._read: Callable[[int], Any] = getattr(rest, "read_buffer", rest.read)

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> Any:
        if size is None or size < 0:
            return self.readall()  # reads of the guarded kind, joined
        if self._held:  # never more than ``size``, however much is held
            data, self._held = self._held[:size], self._held[size:]
            if len(data) < size:
                data += self._rest.read(size - len(data))
        else:
            data = self._read(size)
        view = memoryview(data)
        kept = len(view)
        while kept and view[kept - 1] == _CR:
            kept -= 1
        if kept == len(view):
            return data
        if kept:
            self._held = bytes(view[kept:]) + self._held
            return view[:kept]
        if self._held or self._rest.read(1):
            raise _Unstreamable("a run of carriage returns as long as a block")
        return data  # the end of the file: no read follows to lose a byte


_CR = ord("\r")
