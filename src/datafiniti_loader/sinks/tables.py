"""Sink: tidy tables (records, one table per nested list, conflicts) as frames in memory."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pyarrow as pa

from ..display import html_table
from ..read.tidy import TIDY_PROVENANCE
from .outputs import to_pandas, to_polars

__all__ = ["TABLE_OUTPUTS", "Tables", "tables_from"]

TABLE_OUTPUTS = ("pandas", "arrow", "polars")


class Tables(Mapping[str, Any]):
    """A read-only mapping of table name to frame: records, one per nested list, conflicts.

    ``tables["records"]`` has one row per record; ``tables["reviews"]`` (and
    every other list of objects) one row per element, keyed by ``_record_id``
    and ``_index``; ``tables["conflicts"]`` the values of record fields that
    differ between a record's rows. Shown as a table of names, rows and
    columns (HTML in notebooks).
    """

    def __init__(self, frames: dict[str, Any], shapes: dict[str, tuple[int, int]]) -> None:
        self._frames = dict(frames)
        self._shapes = dict(shapes)

    def __getitem__(self, name: str) -> Any:
        try:
            return self._frames[name]
        except KeyError:
            raise KeyError(f"no table {name!r}; the tables are {', '.join(self._frames)}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._frames)

    def __len__(self) -> int:
        return len(self._frames)

    def describe(self) -> str:
        """One line per table: name, rows, columns."""
        return "\n".join(
            f"{name}: {rows:,} rows x {columns} columns"
            for name, (rows, columns) in self._shapes.items()
        )

    def __repr__(self) -> str:
        return f"Tables(\n  {self.describe().replace(chr(10), chr(10) + '  ')}\n)"

    def _repr_html_(self) -> str:
        return html_table(
            ("table", "rows", "columns"),
            [(name, f"{rows:,}", str(columns)) for name, (rows, columns) in self._shapes.items()],
        )


def tables_from(tables: dict[str, pa.Table], output: str, provenance: bool) -> Tables:
    """Frames of ``output`` kind from tidy Arrow tables (without provenance if not asked for)."""
    convert: Callable[[pa.Table], Any] = {
        "arrow": lambda table: table, "pandas": to_pandas, "polars": to_polars
    }[output]  # fmt: skip
    frames, shapes = {}, {}
    for name in list(tables):
        table = tables.pop(name)  # each Arrow table freed as its frame is made
        if not provenance:
            table = table.drop_columns([c for c in TIDY_PROVENANCE if c in table.column_names])
        shapes[name] = (table.num_rows, table.num_columns)
        frames[name] = convert(table)
    return Tables(frames, shapes)
