"""JSON result files to Arrow tables: JSON Lines, a JSON array, or an API envelope.

Datafiniti's JSON downloads are JSON Lines in ``.txt`` files; the same records
also travel as a JSON array or inside the search API's ``{"records": [...]}``.
Nested objects stay structs and lists stay lists. pyarrow's JSON reader is
fast but turns ISO date strings into zone-less timestamps and fails when a
field changes type between records, so its result is re-read with strings
kept as strings, and a file it cannot read exactly goes through the standard
``json`` module instead, where a field of varying type becomes text (its JSON),
and so does an integer field holding a value no int64 or double keeps exactly.
"""

from __future__ import annotations

import io
import json
from collections.abc import Generator
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pjson

from ..errors import ParseError

__all__ = [
    "MAX_DOCUMENT_BYTES",
    "json_batches",
    "json_text",
    "may_hold_rounded_integers",
    "parse_lines",
    "read_json_table",
    "records_to_table",
    "strings_kept",
    "too_deep_for_pyarrow",
]

_BLOCK_BYTES = 32 * 1024 * 1024
_WHITESPACE = b" \t\r\n"
_BOM = b"\xef\xbb\xbf"
#: A JSON document (an array, an API envelope, a pretty-printed record) is
#: parsed whole, so it is read whole: up to this many bytes. Datafiniti's
#: downloads are JSON Lines, which stream in bounded memory whatever their size.
MAX_DOCUMENT_BYTES = 1024 * 1024 * 1024
_HEAD_READ = 1024 * 1024


def json_batches(
    path: Path, name: str, *, text_columns: frozenset[str] = frozenset()
) -> Generator[pa.RecordBatch]:
    """A JSON result file's record batches: JSON Lines streamed, a document read whole.

    ``text_columns``: fields the whole file makes text (see :mod:`.jsonlines`).
    """
    from .files import open_bytes
    from .jsonlines import json_lines_batches

    with open_bytes(path, name) as stream:
        head = _head(stream)
        if _is_document(head, name):
            data = head + stream.read(max(0, MAX_DOCUMENT_BYTES + 1 - len(head)))
            if len(data) > MAX_DOCUMENT_BYTES:
                raise _too_large(name)
            yield from json_table(data, name).to_batches(max_chunksize=65536)
            return
        yield from json_lines_batches(stream, head, name, text_columns=text_columns)


def _head(stream: IO[bytes]) -> bytes:
    """The file's first bytes, without a BOM, up to the end of its first record's line."""
    head = stream.read(_HEAD_READ)
    if head.startswith(_BOM):
        head = head[len(_BOM) :]
    while len(head) <= MAX_DOCUMENT_BYTES:
        start = len(head) - len(head.lstrip(_WHITESPACE))
        if head.find(b"\n", start) >= 0:
            return head
        more = stream.read(_HEAD_READ)
        if not more:
            return head
        head += more
    return head


def _is_document(head: bytes, name: str) -> bool:
    """Whether the file is one JSON document (to read whole) rather than JSON Lines."""
    body = head.lstrip(_WHITESPACE)
    if not body or body[:1] == b"[":
        return bool(body)
    first = _first_line_value(body, name)[1]
    return first is _PRETTY or (isinstance(first, dict) and _is_envelope(first))


#: What :func:`_first_line_value` gives for a first line that is no JSON value on its
#: own: a pretty-printed document, one value over many lines.
_PRETTY = object()


def _first_line_value(body: bytes, name: str) -> tuple[bytes, Any]:
    """``body``'s first line and its JSON value (:data:`_PRETTY` when it is not one alone)."""
    first_line = body.split(b"\n", 1)[0]
    try:
        return first_line, json.loads(first_line)
    except RecursionError:
        raise _too_deep(name, 1) from None
    except ValueError:
        return first_line, _PRETTY


def _too_large(name: str) -> ParseError:
    return ParseError(
        f"{name}: a JSON document (an array or an envelope of records, not JSON Lines) is "
        f"read whole, up to {MAX_DOCUMENT_BYTES / 1e6:,.0f} MB, and this one is larger: it "
        "was not read. Datafiniti's downloads are JSON Lines, which stream whatever their "
        "size: download the data again with format=json, or write one record per line.",
        file=name,
    )


def read_json_table(path: Path, name: str) -> pa.Table:
    """Read a JSON result file as one table, one row per record (the whole file at once)."""
    from .files import open_bytes

    with open_bytes(path, name) as stream:
        return json_table(stream.read(), name)


def json_table(data: bytes, name: str) -> pa.Table:
    """JSON Lines, a JSON array or an API envelope, in memory, as one table."""
    if data.startswith(_BOM):
        data = data[3:]
    body = data.strip(_WHITESPACE)
    if not body:
        return pa.table({})
    if body[:1] == b"[":
        return _document_table(body, name)
    first_line, first = _first_line_value(body, name)
    if first is _PRETTY:
        return _document_table(body, name)
    if len(first_line) == len(body) and isinstance(first, dict) and _is_envelope(first):
        return records_to_table(_records_of(first, name), name)
    return _read_json_lines(body, name)


def _document_table(body: bytes, name: str) -> pa.Table:
    """One JSON document (an array, an envelope, a pretty-printed record) as a table."""
    return records_to_table(_records_of(_load_document(body, name), name), name)


def _is_envelope(document: dict[str, Any]) -> bool:
    return isinstance(document.get("records"), list) and (
        "num_found" in document or "total_cost" in document or len(document) <= 3
    )


def _too_deep(name: str, line: int | None = None) -> ParseError:
    where = f" (line {line})" if line else ""
    return ParseError(
        f"{name}: a JSON value{where} is nested deeper than this reader can follow; "
        "Datafiniti records are a few levels deep, so the file is likely damaged or not a "
        "Datafiniti file. Request the download again.",
        file=name,
        line=line,
    )


def _load_document(body: bytes, name: str) -> Any:
    failure: ParseError
    try:
        return json.loads(body)
    except json.JSONDecodeError as exc:
        failure = ParseError(
            f"{name}: not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}. "
            "The file is malformed as served: request the download again, and tell "
            "Datafiniti if it recurs.",
            file=name,
            line=exc.lineno,
        )
    except RecursionError:
        failure = _too_deep(name)
    raise failure


def _records_of(document: Any, name: str) -> list[dict[str, Any]]:
    if isinstance(document, dict):
        records = document["records"] if _is_envelope(document) else [document]
    elif isinstance(document, list):
        records = document
    else:
        raise ParseError(
            f"{name}: expected JSON records (objects), found {type(document).__name__}.", file=name
        )
    for number, record in enumerate(records, start=1):
        if not isinstance(record, dict):
            raise ParseError(
                f"{name}: record {number} is a JSON {type(record).__name__}, not an object.",
                file=name,
                line=number,
            )
    return records


def _read_json_lines(body: bytes, name: str) -> pa.Table:
    if too_deep_for_pyarrow(body):
        return records_to_table(parse_lines(body, name), name)
    try:
        table = _pyarrow_json(body)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return records_to_table(parse_lines(body, name), name)
    if may_hold_rounded_integers(table):
        return records_to_table(parse_lines(body, name), name)
    return table


#: Doubles hold every integer up to 2**53 exactly; past it, an integer read as a
#: double may have lost digits.
_EXACT_DOUBLE = 2**53


#: Nesting pyarrow's JSON parser is given at most: it crashes the process
#: (a stack overflow) somewhere between 5,000 and 20,000 levels (measured with
#: pyarrow 26). Deeper text goes to the ``json`` module, which refuses it
#: cleanly (a ParseError); Datafiniti's records are a few levels deep.
_PYARROW_DEPTH = 1000
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_DEPTH_STEP = np.zeros(256, np.int8)
_DEPTH_STEP[[ord("["), ord("{")]] = 1
_DEPTH_STEP[[ord("]"), ord("}")]] = -1


def too_deep_for_pyarrow(data: bytes) -> bool:
    """Whether ``data`` may nest deeper than pyarrow's parser survives.

    Brackets inside strings count too, so this can only overstate the depth
    (sending the text to the slower ``json`` module), never understate it.
    Keeping only the brackets first makes it cheap: 5 ms for 8 MB of records.
    """
    brackets = data.translate(None, _NOT_BRACKETS)
    if len(brackets) <= _PYARROW_DEPTH:
        return False
    depth = np.cumsum(_DEPTH_STEP[np.frombuffer(brackets, np.uint8)], dtype=np.int32)
    return bool(depth.max() > _PYARROW_DEPTH)


def may_hold_rounded_integers(table: pa.Table) -> bool:
    """Whether pyarrow may have read an integer as a double that rounds it.

    pyarrow reads a field of integers as doubles when one of them does not fit
    in int64 (``12345678901234567890``), or when some values are fractions;
    either way an integer past 2**53 loses digits. A double that large, read
    anywhere in the table (nested fields too), sends the file to the exact reader.
    """
    return any(_large_double(column.type, chunk) for column in table.columns
               for chunk in column.chunks)  # fmt: skip


def _large_double(type_: pa.DataType, values: pa.Array) -> bool:
    if pa.types.is_floating(type_):
        largest = pc.max(pc.abs(values)).as_py()
        return largest is not None and largest >= _EXACT_DOUBLE
    if pa.types.is_struct(type_):
        return any(_large_double(f.type, values.field(i)) for i, f in enumerate(type_))
    if pa.types.is_list(type_) or pa.types.is_large_list(type_):
        return _large_double(type_.value_type, values.flatten())
    return False


def _pyarrow_json(body: bytes) -> pa.Table:
    options = pjson.ReadOptions(block_size=max(_BLOCK_BYTES, len(body) + 1), use_threads=True)
    table = pjson.read_json(io.BytesIO(body), read_options=options)
    kept = strings_kept(table.schema)
    if kept.equals(table.schema):
        return table
    parse = pjson.ParseOptions(explicit_schema=kept)
    return pjson.read_json(io.BytesIO(body), read_options=options, parse_options=parse)


def strings_kept(schema: pa.Schema) -> pa.Schema:
    """``schema`` with every timestamp pyarrow inferred (from ISO text) as string again."""
    return pa.schema([(f.name, _timestamps_as_strings(f.type)) for f in schema])


def _timestamps_as_strings(type_: pa.DataType) -> pa.DataType:
    """The same type with every (inferred) timestamp replaced by string."""
    if pa.types.is_timestamp(type_):
        return pa.string()
    if pa.types.is_struct(type_):
        return pa.struct([(f.name, _timestamps_as_strings(f.type)) for f in type_])
    if pa.types.is_list(type_) or pa.types.is_large_list(type_):
        return pa.list_(_timestamps_as_strings(type_.value_type))
    return type_


def parse_lines(body: bytes, name: str, *, first_line: int = 1) -> list[dict[str, Any]]:
    """JSON Lines through the ``json`` module; ``first_line``: the line ``body`` starts at."""
    records: list[dict[str, Any]] = []
    for number, line in enumerate(body.split(b"\n"), start=first_line):
        if not line.strip(_WHITESPACE):
            continue
        try:
            record = json.loads(line)
        except RecursionError:
            raise _too_deep(name, number) from None
        except ValueError as exc:
            raise ParseError(
                f"{name}: record {number} (line {number}) is not valid JSON: {exc}. "
                "The file is malformed as served: request the download again, and tell "
                "Datafiniti if it recurs.",
                file=name,
                line=number,
            ) from None
        if not isinstance(record, dict):
            raise ParseError(
                f"{name}: record {number} is not a JSON object.", file=name, line=number
            )
        records.append(record)
    return records


def records_to_table(
    records: list[dict[str, Any]], name: str, *, text_columns: frozenset[str] = frozenset()
) -> pa.Table:
    """Build a table from records; a column whose values disagree in type becomes JSON text.

    So does every column in ``text_columns`` (text in the file as a whole).
    """
    columns: dict[str, None] = {}
    for record in records:
        for key in record:
            columns.setdefault(key, None)
    arrays = {
        key: _column([record.get(key) for record in records], as_text=key in text_columns)
        for key in columns
    }
    if arrays:
        return pa.table(arrays)
    # Records that are all {}: no columns, but every row still counts.
    return pa.table({"_": pa.nulls(len(records))}).drop_columns(["_"])


def _column(values: list[Any], *, as_text: bool = False) -> pa.Array:
    try:
        if as_text:
            raise pa.ArrowTypeError("text in the file as a whole")
        column = pa.array(values)
        if not _large_double(column.type, column) or not _has_large_int(values):
            return column
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError):
        pass
    # Types disagree, or an integer would be rounded as a double: keep each value's text.
    return pa.array([None if v is None else json_text(v) for v in values], type=pa.string())


def _has_large_int(value: Any) -> bool:
    """Whether ``value`` holds, at any depth, an integer a double cannot hold exactly."""
    if isinstance(value, int) and not isinstance(value, bool):
        return abs(value) >= _EXACT_DOUBLE
    if isinstance(value, dict):
        value = value.values()
    elif not isinstance(value, list):
        return False
    return any(_has_large_int(v) for v in value)


def json_text(value: Any) -> str:
    """A value as text when its field has no single type: strings as they are, the rest as JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str, separators=(",", ":"))
