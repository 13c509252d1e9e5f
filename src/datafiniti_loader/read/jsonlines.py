r"""JSON Lines result files streamed in chunks of whole lines, in bounded memory.

Datafiniti's JSON downloads are JSON Lines: one nested record per line, up to
hundreds of kilobytes each. A whole file read at once costs several times its
size in memory; this reader cuts the decompressed stream into chunks of whole
lines (a JSON string cannot hold a raw newline, so every ``\n`` ends a record)
and parses each with pyarrow's JSON reader, two chunks at a time on threads
of their own (pyarrow releases the GIL), handing them on in file order.

Each chunk is typed on its own, exactly as :func:`.jsonfile.read_json_table`
types a whole file: ISO dates stay strings (a chunk read with inferred
timestamps is read again with them as strings; the next chunk starts from the
fields learnt, so that is rare), and a chunk pyarrow cannot read exactly (a
field changing type inside it, an integer no double holds) goes through the
``json`` module instead, where such a field becomes its JSON text. The
schema across chunks is decided by the caller (:class:`~.schema.SchemaBuilder`),
as across files.

One thing only the whole file can tell: a field that is a number in one
chunk and text in another is text in the whole-file reading, each value as
written. Its first reading hands on the chunk's own types; the caller, having
seen every chunk, reads the file again naming such fields (``text_columns``),
and the chunks that typed them otherwise are then read through the ``json``
module with those fields as their JSON text: the result is the whole-file
reader's, cell for cell.
"""

from __future__ import annotations

import io
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import IO

import pyarrow as pa
import pyarrow.json as pjson

from .jsonfile import (
    may_hold_rounded_integers,
    parse_lines,
    records_to_table,
    strings_kept,
    too_deep_for_pyarrow,
)

__all__ = ["CHUNK_BYTES", "json_lines_batches"]

#: Bytes of whole lines parsed at once. Measured converting 400 MB of
#: generated records to Parquet (two runs each): 2 MiB peaked at 273-274 MB,
#: 4 MiB at 304-311, 8 MiB at 387-397, 16 MiB at 521-530, in the same time
#: (1.8-2.1 s). A longer line is a chunk of its own.
CHUNK_BYTES = 2 * 1024 * 1024
_PARSE_THREADS = 2
_IN_FLIGHT = 3  # chunks parsed ahead of the consumer
_BATCH_ROWS = 65536
_FAILED = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError)


@dataclass(frozen=True)
class _Chunk:
    data: bytes
    first_line: int  # 1-based line number of its first line in the file


@dataclass
class _Learnt:
    """Types learnt from earlier chunks: fields read as strings where pyarrow saw dates.

    Handing them to the next chunk's reading (the rest inferred) spares it the
    second reading a chunk with inferred timestamps needs. Shared by the parse
    threads; a stale value only costs that second reading.
    """

    pinned: pa.Schema | None = None
    text_columns: frozenset[str] = field(default_factory=frozenset)


def json_lines_batches(
    stream: IO[bytes],
    first: bytes,
    name: str,
    *,
    text_columns: frozenset[str] = frozenset(),
    chunk_bytes: int | None = None,
) -> Iterator[pa.RecordBatch]:
    """Record batches of a JSON Lines ``stream`` whose first bytes (already read) are ``first``.

    ``text_columns``: fields to give as JSON text in every chunk (see the
    module's description). ``chunk_bytes``: :data:`CHUNK_BYTES` unless given.
    """
    chunk_bytes = chunk_bytes or CHUNK_BYTES
    learnt = _Learnt(text_columns=text_columns)
    pending: deque[Future[pa.Table]] = deque()
    with ThreadPoolExecutor(_PARSE_THREADS, thread_name_prefix="dfl-json") as pool:
        try:
            for chunk in _chunks(stream, first, chunk_bytes):
                pending.append(pool.submit(_chunk_table, chunk, name, learnt))
                if len(pending) >= _IN_FLIGHT:
                    yield from pending.popleft().result().to_batches(_BATCH_ROWS)
            while pending:
                yield from pending.popleft().result().to_batches(_BATCH_ROWS)
        finally:
            for future in pending:  # abandoned (an error, Ctrl-C): parse nothing more
                future.cancel()


def _chunks(stream: IO[bytes], first: bytes, chunk_bytes: int) -> Iterator[_Chunk]:
    """Whole lines, about ``chunk_bytes`` at a time; a longer line is one chunk of its own."""
    carry = first
    line = 1
    while True:
        data = stream.read(chunk_bytes)
        if not data:
            if carry.strip():
                yield _Chunk(carry, line)
            return
        carry += data
        cut = carry.rfind(b"\n") + 1
        if cut == 0 or (len(carry) < chunk_bytes and cut < len(carry)):
            continue  # no whole line yet, or room for more before parsing
        chunk, carry = carry[:cut], carry[cut:]
        yield _Chunk(chunk, line)
        line += chunk.count(b"\n")


def _chunk_table(chunk: _Chunk, name: str, learnt: _Learnt) -> pa.Table:
    """One chunk as a table, typed as the whole-file reader types a file."""
    table = _by_pyarrow(chunk.data, learnt)
    if table is not None and not _needs_text(table, learnt.text_columns):
        return table
    records = parse_lines(chunk.data, name, first_line=chunk.first_line)
    return records_to_table(records, name, text_columns=learnt.text_columns)


def _by_pyarrow(data: bytes, learnt: _Learnt) -> pa.Table | None:
    """The chunk through pyarrow with dates kept as strings, or ``None`` if it is not exact."""
    if too_deep_for_pyarrow(data):
        return None
    options = pjson.ReadOptions(block_size=len(data) + 1, use_threads=False)
    pinned = learnt.pinned
    table = None
    if pinned is not None:
        parse = pjson.ParseOptions(explicit_schema=pinned, unexpected_field_behavior="infer")
        table = _read(data, options, parse)
    if table is None:
        table = _read(data, options, None)
    if table is None:
        return None
    kept = strings_kept(table.schema)
    if not kept.equals(table.schema):  # inferred dates: read again with them as strings
        learnt.pinned = _pinned(learnt.pinned, table.schema)
        table = _read(data, options, pjson.ParseOptions(explicit_schema=kept))
        if table is None:
            return None
    if may_hold_rounded_integers(table):
        return None
    return table


def _read(
    data: bytes, options: pjson.ReadOptions, parse: pjson.ParseOptions | None
) -> pa.Table | None:
    try:
        return pjson.read_json(io.BytesIO(data), read_options=options, parse_options=parse)
    except _FAILED:
        return None


def _pinned(before: pa.Schema | None, inferred: pa.Schema) -> pa.Schema:
    """``before`` and the fields of ``inferred`` that held dates, with the dates as strings.

    Other fields are left to inference, so that a field null in one chunk and
    typed in the next does not fail the pinned reading (a field with a null
    type inside is left out for the same reason).
    """
    fields = {f.name: f for f in before or ()}
    for f in strings_kept(pa.schema([f for f in inferred if _has(f.type, pa.types.is_timestamp)])):
        if not _has(f.type, pa.types.is_null):
            fields[f.name] = f
    return pa.schema(list(fields.values()))


def _has(type_: pa.DataType, test: Callable[[pa.DataType], bool]) -> bool:
    """Whether ``type_`` or a type nested in it passes ``test``."""
    if test(type_):
        return True
    if pa.types.is_struct(type_):
        return any(_has(f.type, test) for f in type_)
    if pa.types.is_list(type_) or pa.types.is_large_list(type_):
        return _has(type_.value_type, test)
    return False


def _needs_text(table: pa.Table, text_columns: frozenset[str]) -> bool:
    """Whether a field the whole file makes text is typed otherwise in this chunk."""
    for name in text_columns & set(table.column_names):
        type_ = table.schema.field(name).type
        if not (pa.types.is_string(type_) or pa.types.is_null(type_)):
            return True
    return False
