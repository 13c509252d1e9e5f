"""The careful CSV reader: the file cut into whole records here, each piece one pyarrow block.

:mod:`.csvfile` reads most files with pyarrow's streaming reader, and turns
to this one for what that reader cannot do: a record too long for its blocks
(this one joins a record of any length, with one copy), and a malformed
record or bytes that are not UTF-8 (this one says at which line). It cuts
only between records (a newline outside quotes), so pyarrow never sees a
block boundary inside a record (apache/arrow#51368 cannot arise), and parses
the pieces in a small thread pool (pyarrow releases the GIL), in order, a
few at a time, so memory stays bounded by the chunk size, not the file size.

The cutting runs on the calling thread while pieces parse, so it is kept to
one read into a fresh buffer and one vectorised quote count per piece; line
numbers, needed only to explain an error, are computed only then.
"""

from __future__ import annotations

import csv
import io
import logging
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv

from ..errors import ParseError

logger = logging.getLogger("datafiniti_loader")

__all__ = [
    "BOM",
    "DEFAULT_CHUNK_BYTES",
    "Chunk",
    "empty_batch",
    "header_end",
    "keep_bom",
    "parse_header",
    "record_batches",
    "record_chunks",
    "text_options",
]

DEFAULT_CHUNK_BYTES = 4 * 1024 * 1024  # measured: 8 MiB costs ~60 MB more peak, no speed
BOM = b"\xef\xbb\xbf"
_QUOTE = ord('"')
_LF, _CR = ord("\n"), ord("\r")
_PARSE_THREADS = 2
_IN_FLIGHT = 4  # chunks parsed ahead of the consumer


@dataclass(frozen=True)
class Chunk:
    """Whole records: ``data[start:end]``, kept unsliced so that nothing is copied.

    ``offset`` is where ``data`` begins in the (decompressed) file.
    """

    data: bytes | bytearray
    start: int
    end: int
    offset: int = 0

    def arrow_buffer(self) -> pa.Buffer:
        """The records as an Arrow buffer, without copying."""
        return pa.py_buffer(self.data).slice(self.start, self.end - self.start)

    def __len__(self) -> int:
        return self.end - self.start

    def __bytes__(self) -> bytes:
        return bytes(self.data[self.start : self.end])


def record_chunks(stream: IO[bytes], chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Iterator[Chunk]:
    r"""Yield pieces of ``stream`` that each end at a record boundary.

    A boundary is a ``\n`` (or a lone ``\r``) with an even number of ``"`` before it (escaped
    quotes come in pairs, so parity is exact for well-formed CSV). The last
    piece is whatever remains, with or without a final newline.

    Every byte is scanned once. The unfinished record at the end of a read
    is carried to the front of the next read (a short copy); one longer than
    a read is kept as pieces with its quote count and joined once its end
    arrives, so a record of hundreds of megabytes costs one copy, not one per read.
    """
    carry = b""  # an unfinished record shorter than a read
    pieces: list[bytes] = []  # an unfinished record longer than a read
    carried_quotes = 0  # quotes in carry or pieces: the parity the next read starts with
    offset = 0  # where the unfinished record starts in the file
    first = True  # the first read, where a BOM may stand
    while True:
        head = len(carry)
        buffer = bytearray(head + chunk_bytes)
        buffer[:head] = carry
        end = head + _read_into(stream, memoryview(buffer)[head:])
        if end == head:
            rest = b"".join([*pieces, carry])
            if rest:
                yield Chunk(rest, 0, len(rest), offset)
            return
        fresh = np.frombuffer(buffer, dtype=np.uint8, count=end)[head:]
        quotes = np.flatnonzero(fresh == _QUOTE)  # one scan serves both checks below
        if _has_stray_quote(fresh, quotes, first=first):
            # Quote parity no longer tells where records end: let pyarrow, which
            # reads such quotes literally (as pandas does), take the rest at once.
            rest = b"".join([*pieces, bytes(buffer[:end]), stream.read()])
            logger.debug("a quote inside an unquoted cell: reading the rest as one block")
            yield Chunk(rest, 0, len(rest), offset)
            return
        first = False
        cut = _last_record_end(buffer, head, fresh, quotes, odd=carried_quotes % 2 == 1)
        if cut == 0:  # no record ends in this read
            carried_quotes += len(quotes)
            if pieces or end > chunk_bytes:  # longer than a read: collect, copy once at the end
                pieces.append(bytes(buffer[:end]))
                carry = b""
            else:
                carry = bytes(buffer[:end])
            continue
        if pieces:
            whole = b"".join([*pieces, memoryview(buffer)[:cut]])
            pieces = []  # the pieces go before the record is parsed: one copy in memory
            chunk = Chunk(whole, 0, len(whole), offset)
        else:
            chunk = Chunk(buffer, 0, cut, offset)
        yield chunk
        offset += len(chunk)
        carry = bytes(buffer[cut:end])
        carried_quotes = len(quotes) - int(np.searchsorted(quotes, cut - head))


def _read_into(stream: IO[bytes], view: memoryview) -> int:
    """Fill ``view`` from ``stream`` (a gzip stream may return less per call)."""
    filled = 0
    while filled < len(view):
        got = stream.readinto(view[filled:])  # type: ignore[attr-defined]
        if not got:
            break
        filled += got
    return filled


# Bytes a quote may stand beside in well-formed CSV: a field edge, or another quote.
_MAY_NEIGHBOUR_QUOTE = np.zeros(256, dtype=bool)
_MAY_NEIGHBOUR_QUOTE[[ord(","), ord("\n"), ord("\r"), _QUOTE]] = True


def _has_stray_quote(octets: np.ndarray, quotes: np.ndarray, *, first: bool) -> bool:
    """Whether a ``"`` stands inside an unquoted cell (``5" screen``), where parity fails.

    In well-formed CSV every quote opens a cell (after a comma or a line end),
    closes one (before a comma or a line end), or is half of an escaped ``""``:
    so a quote with neither neighbour an edge or a quote is stray. ``quotes``
    are the positions of ``"`` in ``octets``; ``first`` marks the start of
    the file, where a BOM may stand. Quotes at the very ends of ``octets``,
    whose outer neighbour is in another read or a BOM, count as fine.
    """
    if quotes.size == 0:
        return False
    end = len(octets)
    before = octets[np.maximum(quotes - 1, 0)]
    after = octets[np.minimum(quotes + 1, end - 1)]
    fine = _MAY_NEIGHBOUR_QUOTE[before] | _MAY_NEIGHBOUR_QUOTE[after]
    fine |= quotes == end - 1  # (a quote at 0 is its own `before`: fine already)
    if first and octets[: len(BOM)].tobytes() == BOM:
        fine |= quotes == len(BOM)
    return not bool(fine.all())


_BACKWARD_TRIES = 32  # newlines tried one by one before scanning the whole read at once


def _last_record_end(
    buffer: bytearray, head: int, fresh: np.ndarray, quotes: np.ndarray, odd: bool
) -> int:
    """Index just past the last newline outside quotes among the new bytes, or 0.

    The new bytes are ``fresh``, from ``head`` in ``buffer`` on (before them,
    an unfinished record: no record ends there); ``quotes`` are positions of
    ``"`` in ``fresh`` and ``odd`` says ``fresh`` began inside a quoted cell.
    Usually the last newline or one shortly before it ends a record; a read
    inside a long quoted cell full of newlines is settled with one vectorised
    pass instead.
    """
    end = head + len(fresh)
    pos = _previous_line_end(buffer, head, end)
    for _ in range(_BACKWARD_TRIES):
        if pos < 0:
            return 0
        if (int(np.searchsorted(quotes, pos - head)) + odd) % 2 == 0:
            return pos + 1
        pos = _previous_line_end(buffer, head, pos)
    newlines = np.flatnonzero((fresh == _LF) | (fresh == _CR))
    outside = newlines[(np.searchsorted(quotes, newlines) + odd) % 2 == 0]
    return head + int(outside[-1]) + 1 if outside.size else 0


def _previous_line_end(buffer: bytearray, head: int, end: int) -> int:
    r"""The last ``\n``, or lone ``\r``, in ``buffer[head:end]``; -1 if none.

    A ``\r`` is looked for only after the last ``\n``, so a CRLF file costs
    no second scan; cutting after a ``\r`` whose ``\n`` is in the next read
    leaves that piece an empty first line, which pyarrow skips.
    """
    lf = buffer.rfind(b"\n", head, end)
    return max(lf, buffer.rfind(b"\r", max(lf, head), end))


def line_ends(data: bytes | bytearray, start: int = 0, end: int | None = None) -> int:
    r"""How many lines end in ``data[start:end]``: ``\n``, ``\r`` and ``\r\n`` each count once."""
    stop = len(data) if end is None else end
    crlf = data.count(b"\r\n", start, stop)
    return data.count(b"\n", start, stop) + data.count(b"\r", start, stop) - crlf


def record_batches(
    path: Path, name: str, *, chunk_bytes: int = DEFAULT_CHUNK_BYTES
) -> Iterator[pa.RecordBatch]:
    """Record batches of ``path`` with every column as nullable text (empty cell = null)."""
    from .files import open_bytes

    with open_bytes(path, name) as stream:
        chunks = record_chunks(stream, chunk_bytes)
        first = next(chunks, Chunk(b"", 0, 0))
        start = len(BOM) if first.data.startswith(BOM) else 0
        body_start = header_end(first.data, start, first.end)
        names = parse_header(bytes(first.data[start:body_start]), name)
        if not names:
            return
        body = Chunk(first.data, body_start, first.end, first.offset)
        seen_rows = False
        for batch in _parse_in_order(_with_first(body, chunks), names, name, path):
            seen_rows = True
            yield batch
        if not seen_rows:
            yield empty_batch(names)


def empty_batch(names: list[str]) -> pa.RecordBatch:
    """No rows, but the columns: a header alone still names them."""
    return pa.RecordBatch.from_pydict({column: pa.array([], pa.string()) for column in names})


def header_end(data: bytes | bytearray, start: int, end: int) -> int:
    r"""Where the first record after ``start`` ends (just past its line end), or ``end``.

    A line ends with ``\n``, ``\r\n`` or a lone ``\r`` (as pyarrow and pandas read them).
    """
    quotes = 0
    while True:
        lf = data.find(b"\n", start, end)
        cr = data.find(b"\r", start, end if lf < 0 else lf)
        pos = lf if cr < 0 else cr
        if pos < 0:
            return end
        quotes += data.count(b'"', start, pos)
        if quotes % 2 == 0:
            return pos + (2 if data[pos : pos + 2] == b"\r\n" else 1)
        start = pos + 1


def parse_header(raw: bytes, name: str) -> list[str]:
    """Column names from the header record, made unique as pandas makes them."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ParseError(
            f"{name}: the header (line 1) is not UTF-8 text at byte {exc.start}. "
            "Is this a Datafiniti CSV file?",
            file=name,
            line=1,
        ) from None
    from .files import check_width

    first = next(csv.reader(io.StringIO(text, newline="")), [])
    check_width(len(first), name)
    return _unique(first)


def _unique(names: list[str]) -> list[str]:
    """Header names made unique as pandas does (``a``, ``a.1``), so no column hides another."""
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        candidate = name
        while candidate in seen:
            seen[name] += 1
            candidate = f"{name}.{seen[name]}"
        seen.setdefault(candidate, 0)
        unique.append(candidate)
    return unique


def _with_first(first: Chunk, rest: Iterator[Chunk]) -> Iterator[Chunk]:
    if len(first):
        yield first
    yield from rest


def _parse_in_order(
    chunks: Iterator[Chunk], names: list[str], name: str, path: Path
) -> Iterator[pa.RecordBatch]:
    """Parse chunks concurrently, yield their batches in file order."""
    parse_options = pcsv.ParseOptions(newlines_in_values=True)
    convert_options = text_options(names)

    def parse(chunk: Chunk) -> pa.Table:
        # One block per chunk: pyarrow never sees a block boundary inside a record.
        read_options = pcsv.ReadOptions(
            column_names=names, use_threads=False, block_size=len(chunk) + 1
        )
        return pcsv.read_csv(
            pa.BufferReader(keep_bom(chunk.arrow_buffer())),
            read_options=read_options,
            parse_options=parse_options,
            convert_options=convert_options,
        )

    pending: deque[tuple[Future[pa.Table], Chunk]] = deque()
    with ThreadPoolExecutor(_PARSE_THREADS, thread_name_prefix="dfl-csv") as pool:
        for chunk in chunks:
            pending.append((pool.submit(parse, chunk), chunk))
            if len(pending) >= _IN_FLIGHT:
                yield from _finish(*pending.popleft(), names, name, path)
        while pending:
            yield from _finish(*pending.popleft(), names, name, path)


_Bytes = TypeVar("_Bytes", bytes, pa.Buffer)


def keep_bom(body: _Bytes) -> _Bytes:
    """``body`` as pyarrow must see it for a first cell that starts with U+FEFF to keep it.

    pyarrow drops a byte order mark at the start of its input, even when it is
    the start of a cell and not the file's; an empty line, which it skips, goes
    first then (a copy, only in that case).
    """
    if memoryview(body)[: len(BOM)] != BOM:
        return body
    return pa.py_buffer(b"\n" + bytes(body)) if isinstance(body, pa.Buffer) else b"\n" + body


def text_options(names: list[str]) -> pcsv.ConvertOptions:
    """Every column as text; only an empty cell (quoted or not) is null."""
    return pcsv.ConvertOptions(
        column_types={column: pa.string() for column in names},
        null_values=[""],
        strings_can_be_null=True,
        quoted_strings_can_be_null=True,
    )


def _finish(
    future: Future[pa.Table], chunk: Chunk, names: list[str], name: str, path: Path
) -> Iterator[pa.RecordBatch]:
    try:
        table = future.result()
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        first_line = _line_at(path, chunk.offset + chunk.start)
        raise _explain(bytes(chunk), first_line, len(names), name, exc) from None
    yield from table.to_batches()


def _line_at(path: Path, position: int) -> int:
    """The 1-based line number of byte ``position`` (an error path: the file is read again)."""
    from .files import open_bytes

    lines = 1
    with open_bytes(path) as stream:
        while position > 0:
            block = stream.read(min(position, 1 << 20))
            if not block:
                break
            lines += line_ends(block)
            position -= len(block)
    return lines


def _explain(chunk: bytes, first_line: int, width: int, name: str, exc: Exception) -> ParseError:
    """Turn pyarrow's complaint into a message with the file's line number."""
    try:
        text = chunk.decode("utf-8")
    except UnicodeDecodeError as bad:
        line = first_line + line_ends(chunk, 0, bad.start)
        return ParseError(
            f"{name}: line {line} is not valid UTF-8 (byte {bad.start} of its block). "
            "The file is malformed as served: request the download again, and tell "
            "Datafiniti if it recurs.",
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
                f"{width} (from the header). The file is malformed as served: request the "
                "download again, and tell Datafiniti if it recurs.",
                file=name,
                line=line,
            )
        start = reader.line_num + 1
    return ParseError(f"{name}: could not be read as CSV ({exc}).", file=name)
