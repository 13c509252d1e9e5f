"""The sandbox's reading of ``dateUpdated`` ranges, so that incremental syncs can be tested.

Datafiniti's queries are Lucene-like; a sync narrows its query to records
updated after a mark with ``(<query>) AND dateUpdated:{<mark> TO *]`` (``{``
excludes the mark, ``[`` includes it). The sandbox splits such a clause off,
answers the rest as registered, and keeps only the records whose
``dateUpdated`` is in range: a CSV's rows (each row of a record carries its
date) or a JSON file's lines, written as new files. A download of fewer
records than match is cut the same way, so that it holds what it says.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

__all__ = ["Since", "narrowed", "split_since"]

_CLAUSE = re.compile(r"dateUpdated:([\[{])\s*([^\s\]}]+)\s+TO\s+\*\s*\]")


@dataclass(frozen=True)
class Since:
    """A lower bound on ``dateUpdated``: after ``when``, or from it on when ``inclusive``."""

    when: datetime
    inclusive: bool

    def admits(self, value: object) -> bool:
        """Whether a record's ``dateUpdated`` value is in range (a missing or odd one is not)."""
        when = parse_when(value)
        if when is None:
            return False
        return when >= self.when if self.inclusive else when > self.when


def parse_when(value: object) -> datetime | None:
    """A Datafiniti date (``2026-11-03T10:15:00Z``, ``2026-11-03``) as an aware UTC datetime."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def split_since(query: str) -> tuple[str, Since | None]:
    """The query without its ``dateUpdated:[X TO *]`` clause, and that clause's bound.

    ``(a AND b) AND dateUpdated:{X TO *]`` gives ``a AND b``; a query
    without such a clause (or with a date the sandbox cannot read) comes back
    whole, with no bound.
    """
    found = _CLAUSE.search(query)
    when = parse_when(found.group(2)) if found else None
    if found is None or when is None:
        return query.strip(), None
    rest = (query[: found.start()] + " " + query[found.end() :]).strip()
    rest = re.sub(r"^AND\s+|\s+AND$", "", rest).strip()
    if rest.startswith("(") and rest.endswith(")") and _balanced(rest[1:-1]):
        rest = rest[1:-1].strip()
    return rest, Since(when, inclusive=found.group(1) == "[")


def _balanced(text: str) -> bool:
    depth = 0
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0:
            return False
    return depth == 0


def narrowed(
    files: list[Path], target_dir: Path, *, since: Since | None = None, limit: int | None = None
) -> tuple[list[Path], int]:
    """Copies of ``files`` holding their records in range, at most ``limit`` of them.

    Returns the copies that hold any record, and how many records they hold.
    CSV rows are kept by their own ``dateUpdated`` cell (every row of a
    record carries it) and counted by ``id``; JSON lines by their record's field.
    """
    kept_files, records = [], 0
    for source in files:
        left = None if limit is None else limit - records
        if left is not None and left <= 0:
            break
        kept = _narrowed_file(source, target_dir, since, left)
        if kept is not None:
            kept_files.append(kept[0])
            records += kept[1]
    return kept_files, records


def _narrowed_file(
    source: Path, target_dir: Path, since: Since | None, limit: int | None
) -> tuple[Path, int] | None:
    raw = _bytes_of(source)
    target = target_dir / source.name.removesuffix(".gz")
    if target.name.lower().endswith(".csv"):
        rows, records = _csv_rows(raw.decode("utf-8-sig"), since, limit)
        if not records:
            return None
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerows(rows)
        target.write_text(out.getvalue(), encoding="utf-8")
        return target, records
    lines = [line for line in raw.splitlines() if line.strip() and _line_admitted(line, since)]
    lines = lines[:limit] if limit is not None else lines
    if not lines:
        return None
    target.write_bytes(b"\n".join(lines) + b"\n")
    return target, len(lines)


def _bytes_of(path: Path) -> bytes:
    """A served file's bytes, gunzipped if they are gzip (as the bucket may serve them)."""
    raw = path.read_bytes()
    return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw


def _csv_rows(text: str, since: Since | None, limit: int | None) -> tuple[list[list[str]], int]:
    rows = csv.reader(io.StringIO(text, newline=""))
    header = next(rows, [])
    at = header.index("dateUpdated") if "dateUpdated" in header else -1
    at_id = header.index("id") if "id" in header else -1
    kept: list[list[str]] = [header]
    ids: set[str] = set()
    for number, row in enumerate(rows):
        if since is not None and not (0 <= at < len(row) and since.admits(row[at])):
            continue
        record = row[at_id] if 0 <= at_id < len(row) else f"row {number}"
        if limit is not None and record not in ids and len(ids) >= limit:
            continue
        kept.append(row)
        ids.add(record)
    return kept, len(ids)


def _line_admitted(line: bytes, since: Since | None) -> bool:
    if since is None:
        return True
    try:
        record = json.loads(line)
    except ValueError:
        return False
    return isinstance(record, dict) and since.admits(record.get("dateUpdated"))


def converted(files: list[Path], target_dir: Path, format: str) -> list[Path]:
    """``files`` written in ``format`` (``"csv"`` or ``"json"``), as Datafiniti would give them.

    CSV to JSON Lines: one line per record ``id``, its own fields from its
    first row, and each dotted group (``reviews.rating``, ``reviews.text``)
    as a list of objects, one per row that fills any of it. JSON Lines to
    CSV: one row per record, nested values as their JSON text.
    """
    out = []
    for n, source in enumerate(files, start=1):
        raw = _bytes_of(source)
        stem = source.name.removesuffix(".gz").rsplit(".", 1)[0]
        if format == "json":
            target = target_dir / f"{stem}-{n}.txt"
            records = _records_of_csv(raw.decode("utf-8-sig"))
            target.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
        else:
            target = target_dir / f"{stem}-{n}.csv"
            rows = [json.loads(line) for line in raw.splitlines() if line.strip()]
            header = list(dict.fromkeys(k for row in rows for k in row))
            buffer = io.StringIO()
            writer = csv.writer(buffer, lineterminator="\n")
            writer.writerow(header)
            for row in rows:
                writer.writerow([_cell(row.get(k)) for k in header])
            target.write_text(buffer.getvalue(), encoding="utf-8")
        out.append(target)
    return out


def _cell(value: object) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value)


def _records_of_csv(text: str) -> list[dict[str, object]]:
    rows = csv.DictReader(io.StringIO(text, newline=""))
    records: dict[str, dict[str, object]] = {}
    for number, row in enumerate(rows):
        key = row.get("id") or f"row {number}"
        record = records.get(key)
        if record is None:
            record = {k: v for k, v in row.items() if k and "." not in k and v != ""}
            records[key] = record
        groups: dict[str, dict[str, str]] = {}
        for name, value in row.items():
            prefix, dot, field = (name or "").partition(".")
            if dot and value != "":
                groups.setdefault(prefix, {})[field] = value
        for prefix, element in groups.items():
            listed = record.setdefault(prefix, [])
            assert isinstance(listed, list)
            listed.append(element)
    return list(records.values())
