"""Sinks for in-memory results: an Arrow table to pandas or polars."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pyarrow as pa

from .schema import PROVENANCE_SCHEMA

__all__ = ["OUTPUTS", "to_pandas", "to_polars"]

OUTPUTS = ("pandas", "arrow", "polars", "dask")


def to_pandas(table: pa.Table) -> pd.DataFrame:
    """A DataFrame whose cells equal the table's values.

    Integer data columns become pandas' nullable ``Int64`` whether or not
    this load has gaps (numpy's int64 would turn a gap into floats, ``2134``
    into ``2134.0``, and dtypes would change with the data);
    nested values (structs, lists) arrive as plain dicts and lists, exactly as
    in the file; the repeated ``_source_file`` arrives as a categorical.
    """
    frame: pd.DataFrame = table.to_pandas(split_blocks=True)
    for field in table.schema:
        if pa.types.is_nested(field.type):
            # pandas would turn nested ints with gaps into floats and lists into arrays
            frame[field.name] = pd.Series(
                table.column(field.name).to_pylist(), index=frame.index, dtype=object
            )
        elif pa.types.is_integer(field.type) and field.name not in PROVENANCE_SCHEMA.names:
            frame[field.name] = table.column(field.name).to_pandas(
                types_mapper={field.type: pd.Int64Dtype()}.get
            )
    return frame


def to_polars(table: pa.Table) -> Any:
    """A polars DataFrame (needs the ``polars`` extra)."""
    try:
        import polars as pl
    except ImportError:
        raise ImportError(
            "output='polars' needs polars: pip install 'datafiniti-loader[polars]'"
        ) from None
    return pl.from_arrow(table)
