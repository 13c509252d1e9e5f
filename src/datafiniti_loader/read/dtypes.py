"""Types on request: ``dtype={"prices.amountMax": "float64", ...}`` as in ``pandas.read_csv``.

Lossless text stays the default: a column becomes a number, a boolean or a
date only where every value reads back as written. ``dtype=`` lets the user
decide instead, for the columns they name, in every output (pandas, Arrow,
polars, dask, Parquet, Delta). A value that cannot be read as asked is an
error naming the column, the file, the row and the value: never a silent null.
"""

from __future__ import annotations

from collections.abc import Mapping

import pyarrow as pa

from ..errors import ConfigurationError, ParseError
from ..remote.models import ResultFile
from .schema import cast_column

__all__ = ["DTYPES", "arrow_types", "explain_failure"]

#: The pandas dtype names understood, and the Arrow type each column is read as.
DTYPES: dict[str, pa.DataType] = {
    "float64": pa.float64(),
    "float": pa.float64(),
    "Float64": pa.float64(),
    "float32": pa.float32(),
    "Int64": pa.int64(),
    "int64": pa.int64(),
    "int": pa.int64(),
    "Int32": pa.int32(),
    "int32": pa.int32(),
    "boolean": pa.bool_(),
    "bool": pa.bool_(),
    "string": pa.string(),
    "str": pa.string(),
    "object": pa.string(),
    "category": pa.dictionary(pa.int32(), pa.string()),
    "datetime64[ns, UTC]": pa.timestamp("ns", "UTC"),
    "datetime64[us, UTC]": pa.timestamp("us", "UTC"),
    "datetime64[ms, UTC]": pa.timestamp("ms", "UTC"),
    "datetime64[s, UTC]": pa.timestamp("s", "UTC"),
}


#: The pandas name to show for each Arrow type (the first name above for it).
_SHOWN: dict[str, str] = {}
for _name, _type in DTYPES.items():
    _SHOWN.setdefault(str(_type), _name)


def arrow_types(dtype: Mapping[str, str] | None) -> dict[str, pa.DataType]:
    """The Arrow type of each column named in ``dtype``; a name not understood is refused."""
    if not dtype:
        return {}
    if not isinstance(dtype, Mapping):
        raise ConfigurationError(
            "dtype must be a mapping of column name to type, e.g. {'prices.amountMax': 'float64'}."
        )
    types = {}
    for column, name in dtype.items():
        wanted = DTYPES.get(str(name))
        if wanted is None:
            raise ConfigurationError(
                f"dtype for {column!r} is {name!r}, which is not one of "
                f"{', '.join(sorted(DTYPES))}."
            )
        types[column] = wanted
    return types


def explain_failure(batch: pa.RecordBatch, schema: pa.Schema, file: ResultFile, row: int) -> None:
    """Raise a :class:`ParseError` naming the first value of ``batch`` not readable as asked.

    Called only after a conversion failed, so it may take its time: it finds
    the column, then the value. ``row`` is the file row the batch starts at.
    """
    for target in schema:
        index = batch.schema.get_field_index(target.name)
        if index < 0:
            continue
        values = batch.column(index)
        try:
            cast_column(values, target.type)
            continue
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            pass
        for n in range(len(values)):
            one = values.slice(n, 1)
            try:
                cast_column(one, target.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
                shown = one.to_pylist()[0]
                raise ParseError(
                    f"Column {target.name!r} of {file.name} (request {file.request_id}), "
                    f"row {row + n}: {str(shown)[:80]!r} cannot be read as "
                    f"{_SHOWN.get(str(target.type), str(target.type))} "
                    "(asked by dtype=). Drop that column from dtype= to keep it as text, "
                    "or clean the value after loading.",
                    file=file.name,
                ) from None
    raise ParseError(
        f"{file.name}: a value could not be converted as dtype= asked.", file=file.name
    )
