"""The high-water mark: the newest ``dateUpdated`` merged, and the query for what came after.

Datafiniti's queries are Lucene-like. A later sync asks for
``(<query>) AND dateUpdated:{<mark> TO *]``: the curly brace excludes the
mark itself. An inclusive ``[<mark> TO *]`` would buy the newest record again
at every sync; ``[<mark> + 1 second TO *]`` would assume a resolution the
API does not document (dates are seen to the second, but nothing promises
it). The exclusive bound is exact whatever the resolution. The mark is
written as the record's own date, to the microsecond where it has one.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc

from ..loader import LoadSource
from ..read.dedupe import NO_DATE

__all__ = ["mark_after", "newest_date", "since_query"]


def since_query(query: str, mark: str | None) -> str:
    """``query`` narrowed to records updated after ``mark`` (``query`` itself without one)."""
    if mark is None:
        return query
    return f"({query}) AND dateUpdated:{{{mark} TO *]"


def newest_date(source: LoadSource, mark: str | None) -> str | None:
    """The newest ``dateUpdated`` of ``source``'s records (read with ``dedupe``), or ``mark``."""
    assert source.newest is not None, "a sync reads its downloads with dedupe"
    when = source.newest.winners["when"]
    dated = pc.filter(when, pc.greater(when, pa.scalar(NO_DATE, when.type)))  # no date: no move
    newest = pc.max(dated).as_py() if len(dated) else None
    if newest is None or (mark is not None and _parsed(mark) >= newest):
        return mark
    return _text(newest)


def mark_after(source: LoadSource, previous: str | None, complete: bool) -> str | None:
    """The mark once ``source`` is merged: its newest date, or ``previous`` if it is short.

    A download that could not hold every match leaves records out, and
    Datafiniti does not say which: the mark stays, so the next sync asks again.
    """
    return newest_date(source, previous) if complete else previous


def _text(when: datetime) -> str:
    when = when.astimezone(UTC)
    if when.microsecond:
        return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _parsed(mark: str) -> datetime:
    when = datetime.fromisoformat(mark)
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when
