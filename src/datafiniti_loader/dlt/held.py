"""What the destination already holds, read back through the pipeline's SQL client.

dlt's ``dedup_sort`` orders rows inside one load only: left to dlt, a
download holding an older copy of a record would replace the newer copy an
earlier run loaded. So before anything is handed to dlt, the source asks the
destination, for the records in the download, their ``dateUpdated`` and
``_request_id``, and the library's merge rule decides (newest date wins, ties
to the higher request id; see :mod:`~datafiniti_loader.sinks.deltaplan`).
Only the ids of the download are asked for, a thousand at a time, so the
answer stays small whatever the table's size.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from ..errors import ConfigurationError
from ..read.dedupe import ID_COLUMN, UPDATED_COLUMN
from ..read.tidy import RECORDS
from ..sinks.deltaplan import held_keys
from .hints import is_child_table

__all__ = ["Destination"]

logger = logging.getLogger(__name__)

_IDS_PER_QUERY = 1000
_KEY_COLUMNS = (ID_COLUMN, UPDATED_COLUMN, "_request_id")


class Destination:
    """The running pipeline's destination, as the source's tables know it.

    Parameters
    ----------
    pipeline : dlt.Pipeline
        The pipeline extracting the source (``dlt.current.pipeline()``).
    schema : dlt.Schema
        The source's schema: its tables' names, as dlt normalised them.
    """

    def __init__(self, pipeline: Any, schema: Any) -> None:
        self._pipeline = pipeline
        self._schema = schema

    def table_name(self, name: str) -> str:
        """``name`` as dlt names it in the destination (``priceHistory`` -> ``price_history``)."""
        return str(self._schema.naming.normalize_identifier(name))

    def columns(self, names: list[str]) -> dict[str, dict[str, Any]]:
        """The columns of tables ``names`` as the destination has them, by lower-cased name.

        Asked of the destination itself (its information schema, through dlt's
        job client), not of this pipeline's schema, which knows nothing of what
        another pipeline put in the same dataset; dlt's schema is the answer only
        where the destination cannot say (a destination without SQL tables).
        """
        if getattr(self._pipeline, "destination", None) is None:
            raise self._no_destination("the pipeline has none")
        wanted = {self.table_name(n): n for n in names}
        if not wanted:
            return {}
        try:
            with self._pipeline.destination_client() as client:
                found = dict(client.get_storage_tables(list(wanted)))
        except (AttributeError, NotImplementedError):
            found = {name: self._schema.tables.get(name, {}).get("columns", {}) for name in wanted}
        return {
            wanted[name]: {str(c).lower(): hints for c, hints in (columns or {}).items()}
            for name, columns in found.items()
            if name in wanted
        }

    def child_tables(self) -> list[str]:
        """The child tables (``reviews``...) earlier runs of this pipeline's source made.

        From dlt's schema: tables another pipeline added to the dataset are not known here.
        """
        return sorted(
            name
            for name, table in self._schema.tables.items()
            if name != self.table_name(RECORDS) and is_child_table(table.get("columns", {}))
        )

    def keys(self, ids: pa.Array, columns: dict[str, Any]) -> pa.Table | None:
        """For the records of ``ids`` the destination holds: newest date and request.

        ``columns``: the destination's ``records`` columns (:meth:`columns`).
        ``None`` when it has no ``records`` table yet (as the destination says:
        another pipeline may have filled the dataset).
        """
        names = {c: self.table_name(c) for c in _KEY_COLUMNS if self.table_name(c) in columns}
        if ID_COLUMN not in names or UPDATED_COLUMN not in names:
            return None  # nothing loaded yet (or not by this source: nothing to compare)
        return held_keys(self._batches(ids, names), "the destination's records table")

    def _batches(self, ids: pa.Array, names: dict[str, str]) -> Iterator[pa.RecordBatch]:
        from dlt.destinations.exceptions import DatabaseUndefinedRelation

        with self._client() as client:
            table = client.make_qualified_table_name(self.table_name(RECORDS))
            selected = ", ".join(client.escape_column_name(n) for n in names.values())
            key = client.escape_column_name(names[ID_COLUMN])
            literal = client.capabilities.escape_literal
            values = ids.cast(pa.string()).to_pylist()
            for start in range(0, len(values), _IDS_PER_QUERY):
                chunk = ", ".join(literal(v) for v in values[start : start + _IDS_PER_QUERY])
                sql = f"SELECT {selected} FROM {table} WHERE {key} IN ({chunk})"
                try:
                    found = client.execute_sql(sql) or []
                except DatabaseUndefinedRelation:
                    return  # known to the schema, never loaded (an extract without a load)
                # Plain rows, not the driver's Arrow: any DB-API driver gives these.
                columns: list[Any] = [[row[n] for row in found] for n in range(len(names))]
                yield pa.RecordBatch.from_arrays(
                    [_column(c, values) for c, values in zip(names, columns, strict=True)],
                    names=list(names),  # by position: some warehouses fold the names' case
                )

    def _client(self) -> Any:
        try:
            return self._pipeline.sql_client()
        except Exception as exc:  # dlt raises several kinds: no destination, no SQL client
            raise self._no_destination(
                f"dlt said: {type(exc).__name__}: {str(exc)[:200]}"
            ) from None

    @staticmethod
    def _no_destination(why: str) -> ConfigurationError:
        return ConfigurationError(
            "The Datafiniti dlt source compares each record with the copy the destination "
            "holds (an older download must not replace a newer record), so it needs a "
            "destination it can query with SQL: give the pipeline one (duckdb, postgres, "
            f"snowflake...); {why}."
        )


def _column(name: str, values: list[Any]) -> pa.Array:
    """One column of the destination's answer: ids as text, request ids as ints, dates as given."""
    if name == ID_COLUMN:
        return pa.array([None if v is None else str(v) for v in values], pa.string())
    if name == "_request_id":
        return pa.array([None if v is None else int(v) for v in values], pa.int64())
    return pa.array(values) if values else pa.array([], pa.string())
