"""How results look to people: a text table for terminals, an HTML table for notebooks.

The renderers take any object with the fields they show (:class:`ShownFile`,
:class:`ShownRequest`), so that this module needs none of the library's own:
the models (:mod:`~datafiniti_loader.remote.models`) and the sinks' summaries
use it, and it uses nothing of theirs.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol


class ShownFile(Protocol):
    """What a files table shows of a result file."""

    @property
    def id(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def format(self) -> str: ...
    @property
    def date_created(self) -> datetime | None: ...
    @property
    def expires_at(self) -> datetime | None: ...


class ShownRequest(Protocol):
    """What a request's table shows of a download request."""

    @property
    def id(self) -> int: ...
    @property
    def status(self) -> str: ...
    @property
    def error(self) -> str: ...
    @property
    def progress(self) -> float | None: ...
    @property
    def num_downloaded(self) -> int: ...
    @property
    def num_requested(self) -> int: ...
    @property
    def data_type(self) -> str: ...
    @property
    def data_format(self) -> str: ...
    @property
    def query(self) -> str: ...
    @property
    def date_started(self) -> datetime | None: ...


__all__ = [
    "DownloadList",
    "ShownFile",
    "ShownRequest",
    "expires_in",
    "files_html",
    "files_table",
    "html_table",
    "request_html",
    "summary_html",
    "text_table",
]

_HEADER = ("ID", "NAME", "FORMAT", "CREATED (UTC)", "EXPIRES IN")


def expires_in(file: ShownFile, now: datetime | None = None) -> str:
    """``6d 23h``, ``3h 5m``, ``45m`` or ``expired``."""
    if file.expires_at is None:
        return "?"
    left = (file.expires_at - (now or datetime.now(UTC))).total_seconds()
    if left <= 0:
        return "expired"
    days, rest = divmod(int(left), 86400)
    hours, rest = divmod(rest, 3600)
    if days:
        return f"{days}d {hours}h"
    return f"{hours}h {rest // 60}m" if hours else f"{rest // 60}m"


def _rows(files: Iterable[ShownFile], now: datetime | None) -> list[tuple[str, ...]]:
    return [
        (
            str(f.id),
            f.name,
            f.format,
            f"{f.date_created:%Y-%m-%d %H:%M}" if f.date_created else "?",
            expires_in(f, now),
        )
        for f in files
    ]


def files_table(files: Iterable[ShownFile], now: datetime | None = None) -> str:
    """A plain-text table: id, name, format, created, expires in."""
    return text_table(_HEADER, _rows(files, now))


def text_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Rows of text as aligned columns, for a terminal."""
    lines = [tuple(header), *(tuple(r) for r in rows)]
    widths = [max(len(r[i]) for r in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in lines
    )


def html_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Rows of text as an HTML table (every cell escaped)."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def files_html(files: Iterable[ShownFile], now: datetime | None = None) -> str:
    """The same table as HTML, for Jupyter."""
    return html_table(_HEADER, _rows(files, now))


def request_html(request: ShownRequest) -> str:
    """A download request's status as a small HTML table."""
    progress = request.progress
    rows = [
        ("id", str(request.id)),
        ("status", request.status + (f" ({request.error})" if request.error else "")),
        ("progress", "?" if progress is None else f"{progress:.0%}"),
        ("records", f"{request.num_downloaded:,} of {request.num_requested:,}"),
        ("type", f"{request.data_type} {request.data_format}".strip()),
    ]
    return html_table(("", "download request"), rows)


def summary_html(rows: Sequence[tuple[str, str]]) -> str:
    """A result's facts (what was written, where) as a small HTML table."""
    return html_table(("", "written"), rows)


_DOWNLOADS_HEADER = ("ID", "STARTED (UTC)", "STATUS", "RECORDS", "TYPE", "QUERY")


class DownloadList(list[Any]):
    """Download requests, newest first: a list, shown as a table (HTML in notebooks)."""

    def rows(self) -> list[tuple[str, ...]]:
        """One row of text per request."""
        return [
            (
                str(r.id),
                f"{r.date_started:%Y-%m-%d %H:%M}" if r.date_started else "-",
                r.status + (f" ({r.error})" if r.error else ""),
                f"{r.num_downloaded:,} of {r.num_requested:,}",
                f"{r.data_type} {r.data_format}".strip() or "-",
                (r.query[:80] + ("..." if len(r.query) > 80 else "")) or "-",
            )
            for r in self
        ]

    def table(self) -> str:
        """The requests as aligned text (what ``datafiniti-loader requests`` prints)."""
        return text_table(_DOWNLOADS_HEADER, self.rows())

    def _repr_html_(self) -> str:
        return html_table(_DOWNLOADS_HEADER, self.rows())
