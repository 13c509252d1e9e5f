"""Whether a download's columns fit the types the destination already holds.

A CSV column is typed from the values of the download that first brings it:
postal codes that all look like numbers (``10001``, ``94105``) make a
``bigint`` column in the warehouse. A later download with ``02134`` there
reads it as text (the library never turns ``02134`` into ``2134``), and the
warehouse would cast it on insert: DuckDB, measured, stores ``2134``, and
refuses ``N/A`` only in the load step, after dlt has queued the package. So
before any row is handed to dlt, each column whose type differs from the one
the destination holds (its information schema, as dlt reads it) is checked
value by value: every value must become the
destination's type unchanged (text that reads back as written, a date as
the same instant, no fraction cut off). One that cannot stops the run,
naming the column, both types and the value, and nothing is loaded.

Text and JSON columns take anything; a column the download leaves empty
(all null) fits any type.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ..errors import ColumnConflict
from ..read.schema import timestamp_from_text

__all__ = ["check_fits", "kind_of"]

#: The Arrow type a value must become to go into a destination column of each kind.
_TARGETS = {
    "bigint": pa.int64(),
    "double": pa.float64(),
    "decimal": pa.float64(),
    "bool": pa.bool_(),
    "timestamp": pa.timestamp("us", "UTC"),
    "date": pa.date32(),
}
_SHOWN = 20_000  # values tried one by one to find the one to show


def kind_of(type_: pa.DataType) -> str | None:
    """The dlt data type an Arrow type loads as (``None``: all null, fits anything)."""
    if pa.types.is_dictionary(type_):
        return kind_of(type_.value_type)
    checks: list[tuple[Callable[[pa.DataType], bool], str]] = [
        (lambda t: pa.types.is_string(t) or pa.types.is_large_string(t), "text"),
        (pa.types.is_boolean, "bool"),
        (pa.types.is_integer, "bigint"),
        (pa.types.is_floating, "double"),
        (pa.types.is_decimal, "decimal"),
        (pa.types.is_timestamp, "timestamp"),
        (pa.types.is_date, "date"),
        (lambda t: pa.types.is_binary(t) or pa.types.is_large_binary(t), "binary"),
    ]
    if pa.types.is_null(type_):
        return None
    return next((kind for check, kind in checks if check(type_)), "json")  # lists, structs


def check_fits(
    table: str,
    schema: pa.Schema,
    held: Mapping[str, Mapping[str, Any]],
    normalized: Callable[[str], str],
    values: Callable[[str], Iterable[pa.Array]],
) -> None:
    """Raise :class:`ColumnConflict` if a value of ``schema``'s columns cannot go into ``held``.

    ``held``: the destination table's columns (by dlt's names, lower-cased, with
    dlt's ``data_type``); ``normalized`` gives that name of a column; ``values(name)``
    the download's values of a column, array by array.
    """
    for field in schema:
        name = normalized(field.name)
        theirs = held.get(name, {}).get("data_type")
        ours = kind_of(field.type)
        if theirs is None or ours is None or ours == theirs or theirs in ("text", "json"):
            continue
        target = _TARGETS.get(str(theirs))
        for array in values(field.name):
            misfit = _misfit(array, target) if target is not None else _first_value(array)
            if misfit is not None:
                raise ColumnConflict(
                    f"The destination's {table}.{name} is {theirs} (the download that first "
                    f"brought it held only such values), and this download has {misfit[0]!r} "
                    f"there ({ours}), which {theirs} cannot hold as it is: nothing was loaded. "
                    f"Keep such a column as text from its first load (dtype={{{field.name!r}: "
                    "'string'}, in a new dataset), or change the column's type in the "
                    "destination and in the pipeline's schema."
                )


def _misfit(array: pa.Array, target: pa.DataType) -> tuple[Any] | None:
    """The first value of ``array`` that ``target`` cannot hold unchanged, if any."""
    if _fits(array, target):
        return None
    for n in range(min(len(array), _SHOWN)):
        if not _fits(array.slice(n, 1), target):
            return (array[n].as_py(),)
    return (None,)  # the misfit lies further on: the message says only that there is one


def _fits(array: pa.Array, target: pa.DataType) -> bool:
    text = pa.types.is_string(array.type) or pa.types.is_large_string(array.type)
    try:
        if text and pa.types.is_timestamp(target):
            timestamp_from_text(array, target)
            return True
        cast = pc.cast(array, target, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return False
    if text and pa.types.is_integer(target):  # 02134 and +5 read as numbers, not as written
        back = pc.cast(cast, pa.string())
        return bool(pc.all(pc.fill_null(pc.equal(back, array), True)).as_py())
    return True


def _first_value(array: pa.Array) -> tuple[Any] | None:
    """A type the destination has no rule for (binary...): any value is a misfit."""
    valid = array.drop_null()
    return (valid[0].as_py(),) if len(valid) else None
