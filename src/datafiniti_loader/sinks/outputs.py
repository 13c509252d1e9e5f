"""Sinks for in-memory results: an Arrow table to pandas or polars."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import pyarrow as pa

from ..read.schema import PROVENANCE_SCHEMA

__all__ = [
    "ORIGIN",
    "OUTPUTS",
    "labelled",
    "to_pandas",
    "to_polars",
    "with_origin",
]

OUTPUTS = ("pandas", "arrow", "polars", "dask")


def to_pandas(table: pa.Table) -> pd.DataFrame:
    """A DataFrame whose cells equal the table's values.

    Integer data columns become pandas' nullable ``Int64`` whether or not
    this load has gaps (numpy's int64 would turn a gap into floats, ``2134``
    into ``2134.0``, and dtypes would change with the data); booleans become
    pandas' nullable ``boolean`` for the same reason;
    nested values (structs, lists) arrive as plain dicts and lists, exactly as
    in the file; the repeated ``_source_file`` arrives as a categorical.
    """
    special: dict[str, Any] = {}
    for field in table.schema:
        column = table.column(field.name)
        if pa.types.is_nested(field.type):
            # pandas would turn nested ints with gaps into floats and lists into arrays
            special[field.name] = pd.array(column.to_pylist(), dtype=object)
        elif pa.types.is_integer(field.type) and field.name not in PROVENANCE_SCHEMA.names:
            special[field.name] = column.to_pandas(types_mapper={field.type: pd.Int64Dtype()}.get)
        elif pa.types.is_boolean(field.type):  # numpy's bool has no gaps: object otherwise
            special[field.name] = column.to_pandas(types_mapper={field.type: pd.BooleanDtype()}.get)
    order = table.column_names
    rest = table.select([i for i, name in enumerate(order) if name not in special])
    del table  # let self_destruct free each Arrow column as pandas takes it over
    frame: pd.DataFrame = rest.to_pandas(split_blocks=True, self_destruct=True)
    if not special:
        return frame
    # One concat, not one insertion per column (quadratic over thousands of columns).
    arrays = {name: v.array if isinstance(v, pd.Series) else v for name, v in special.items()}
    added = pd.DataFrame(arrays, index=frame.index)
    whole: pd.DataFrame = pd.concat([frame, added], axis=1)[order]
    return whole


def to_polars(table: pa.Table) -> Any:
    """A polars DataFrame (needs the ``polars`` extra)."""
    try:
        import polars as pl
    except ImportError:
        raise ImportError(
            "output='polars' needs polars: pip install 'datafiniti-loader[polars]'"
        ) from None
    return pl.from_arrow(table)


#: Where frames keep what they came from: ``df.attrs[ORIGIN]``, Arrow schema metadata.
ORIGIN = "datafiniti"


def labelled(table: pa.Table, origin: dict[str, Any]) -> pa.Table:
    """``table`` with ``origin`` in its schema metadata (no data copied)."""
    metadata = dict(table.schema.metadata or {})
    metadata[ORIGIN.encode()] = json.dumps(origin).encode()
    return table.replace_schema_metadata(metadata)


def with_origin(frame: Any, origin: dict[str, Any]) -> Any:
    """A pandas frame with ``origin`` in ``attrs`` (other frames as they are)."""
    attrs = getattr(frame, "attrs", None)
    if isinstance(attrs, dict):
        attrs[ORIGIN] = origin
    return frame
