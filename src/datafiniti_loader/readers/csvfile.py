"""CSV result files to text record batches, record-aligned and lossless.

Datafiniti CSVs end lines with CRLF, hold CRLF inside quoted cells, may start
with a BOM and may lack a final newline. pyarrow's CSV reader can lose a byte
when a quoted CRLF falls on one of its block boundaries (apache/arrow#51368),
so this module cuts the file itself, only between records (a newline outside
quotes), and hands pyarrow each piece as a single block. Pieces are parsed in
a small thread pool (pyarrow releases the GIL), in order, a few at a time, so
memory stays bounded by the chunk size, not the file size.
"""

from __future__ import annotations

import csv
import io
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pyarrow as pa
import pyarrow.csv as pcsv

from ..errors import ParseError

__all__ = ["DEFAULT_CHUNK_BYTES", "Chunk", "iter_csv_batches", "record_chunks"]

DEFAULT_CHUNK_BYTES = 4 * 1024 * 1024  # measured: 8 MiB costs ~60 MB more peak, no speed
_BOM = b"\xef\xbb\xbf"
_PARSE_THREADS = 2


@dataclass(frozen=True)
class Chunk:
    """Whole records: ``data[start:end]``, kept unsliced so that nothing is copied."""

    data: bytes
    start: int
    end: int

    def arrow_buffer(self) -> pa.Buffer:
        """The records as an Arrow buffer, without copying."""
        return pa.py_buffer(self.data).slice(self.start, self.end - self.start)

    def count_lines(self) -> int:
        """Line ends in the records."""
        return self.data.count(b"\n", self.start, self.end)

    def __len__(self) -> int:
        return self.end - self.start

    def __bytes__(self) -> bytes:
        return self.data[self.start : self.end]


def record_chunks(stream: IO[bytes], chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Iterator[Chunk]:
    """Yield pieces of ``stream`` that each end at a record boundary.

    A boundary is a ``\\n`` with an even number of ``"`` before it (escaped
    quotes come in pairs, so parity is exact for well-formed CSV). The last
    piece is whatever remains, with or without a final newline.
    """
    carry = b""
    while True:
        block = stream.read(chunk_bytes)
        if not block:
            if carry:
                yield Chunk(carry, 0, len(carry))
            return
        buffer = carry + block if carry else block
        cut = _last_record_end(buffer)
        if cut == 0:
            carry = buffer  # one record longer than a chunk: read on
            continue
        yield Chunk(buffer, 0, cut)
        carry = buffer[cut:]


def _last_record_end(buffer: bytes) -> int:
    """Index just past the last newline outside quotes, or 0 when there is none."""
    pos = buffer.rfind(b"\n")
    if pos < 0:
        return 0
    quotes = buffer.count(b'"', 0, pos)
    while quotes % 2:
        previous = buffer.rfind(b"\n", 0, pos)
        if previous < 0:
            return 0
        quotes -= buffer.count(b'"', previous, pos)
        pos = previous
    return pos + 1


def iter_csv_batches(
    path: Path, name: str, *, chunk_bytes: int = DEFAULT_CHUNK_BYTES
) -> Iterator[pa.RecordBatch]:
    """Record batches of ``path`` with every column as nullable text (empty cell = null)."""
    from . import open_bytes

    with open_bytes(path) as stream:
        chunks = record_chunks(stream, chunk_bytes)
        first = next(chunks, Chunk(b"", 0, 0))
        start = len(_BOM) if first.data.startswith(_BOM) else 0
        header_end = _first_record_end(first.data, start, first.end)
        names = _parse_header(first.data[start:header_end], name)
        if not names:
            return
        body = Chunk(first.data, header_end, first.end)
        seen_rows = False
        for batch in _parse_in_order(_with_first(body, chunks), names, name):
            seen_rows = True
            yield batch
        if not seen_rows:  # a header alone still names the columns
            yield pa.RecordBatch.from_pydict(
                {column: pa.array([], pa.string()) for column in names}
            )


def _first_record_end(data: bytes, start: int, end: int) -> int:
    quotes = 0
    while True:
        pos = data.find(b"\n", start, end)
        if pos < 0:
            return end
        quotes += data.count(b'"', start, pos)
        if quotes % 2 == 0:
            return pos + 1
        start = pos + 1


def _parse_header(raw: bytes, name: str) -> list[str]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ParseError(
            f"{name}: the header (line 1) is not UTF-8 text at byte {exc.start}. "
            "Is this a Datafiniti CSV file?",
            file=name,
            line=1,
        ) from None
    rows = list(csv.reader(io.StringIO(text, newline="")))
    return rows[0] if rows else []


def _with_first(first: Chunk, rest: Iterator[Chunk]) -> Iterator[Chunk]:
    if len(first):
        yield first
    yield from rest


def _parse_in_order(
    chunks: Iterator[Chunk], names: list[str], name: str
) -> Iterator[pa.RecordBatch]:
    """Parse chunks concurrently, yield their batches in file order."""
    parse_options = pcsv.ParseOptions(newlines_in_values=True)
    convert_options = pcsv.ConvertOptions(
        column_types={column: pa.string() for column in names},
        null_values=[""],
        strings_can_be_null=True,
        quoted_strings_can_be_null=True,
    )

    def parse(chunk: Chunk) -> pa.Table:
        # One block per chunk: pyarrow never sees a block boundary inside a record.
        read_options = pcsv.ReadOptions(
            column_names=names, use_threads=False, block_size=len(chunk) + 1
        )
        return pcsv.read_csv(
            pa.BufferReader(chunk.arrow_buffer()),
            read_options=read_options,
            parse_options=parse_options,
            convert_options=convert_options,
        )

    line = 2  # the header is line 1
    pending: deque[tuple[Future[pa.Table], Chunk, int]] = deque()
    with ThreadPoolExecutor(_PARSE_THREADS, thread_name_prefix="dfl-csv") as pool:
        for chunk in chunks:
            pending.append((pool.submit(parse, chunk), chunk, line))
            line += chunk.count_lines()
            if len(pending) >= _PARSE_THREADS:
                yield from _finish(pending.popleft(), names, name)
        while pending:
            yield from _finish(pending.popleft(), names, name)


def _finish(
    job: tuple[Future[pa.Table], Chunk, int], names: list[str], name: str
) -> Iterator[pa.RecordBatch]:
    future, chunk, first_line = job
    try:
        table = future.result()
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise _explain(bytes(chunk), first_line, len(names), name, exc) from None
    yield from table.to_batches()


def _explain(chunk: bytes, first_line: int, width: int, name: str, exc: Exception) -> ParseError:
    """Turn pyarrow's complaint into a message with the file's line number."""
    try:
        text = chunk.decode("utf-8")
    except UnicodeDecodeError as bad:
        line = first_line + chunk.count(b"\n", 0, bad.start)
        return ParseError(
            f"{name}: line {line} is not valid UTF-8 (byte {bad.start} of its block). "
            "The file may be damaged: delete it from the cache and load again.",
            file=name,
            line=line,
        )
    reader = csv.reader(io.StringIO(text, newline=""))
    start = 1
    for row in reader:
        if len(row) != width:
            line = first_line + start - 1
            return ParseError(
                f"{name}: the record at line {line} has {len(row)} fields, expected "
                f"{width} (from the header). The file may be truncated or damaged: "
                "delete it from the cache and load again.",
                file=name,
                line=line,
            )
        start = reader.line_num + 1
    return ParseError(f"{name}: could not be read as CSV ({exc}).", file=name)
