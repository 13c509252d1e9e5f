"""The dlt source: downloads given, or a query kept current, as tidy tables dlt merges.

Two modes, one way to the destination:

- ``request_ids``: the downloads named, read with the newest-copy rule
  (``dedupe``) among themselves;
- ``query``: what :func:`~datafiniti_loader.sync` buys, with the same credit
  rules (a count before anything is spent, a ``max_records`` ceiling,
  ``confirm``, a journal so that a download is never bought twice) and the
  high-water mark kept in dlt's resource state, which dlt commits with the
  load. Only records updated after the mark are downloaded.

Either way, each record is then compared with the copy the destination holds
(:mod:`.held`): only newer copies reach dlt, as ``records`` rows plus their
child rows, with tombstones that take the replaced copies' old child rows
away (:mod:`.hints`). The rows go through the tidy-table spill of
``to_parquet(tables=True)``, so memory stays bounded; dlt receives Arrow
batches.

dlt resources are declared before any data is seen, and which lists a
download holds (``reviews``, ``prices``...) is known only once it is read.
So the source has one resource, ``records``, which fills every table: each
child table gets its own hints as a dlt *table variant* (``dlt.mark.with_hints``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import dlt
import pyarrow as pa
from dlt.common.configuration.specs import known_sections
from dlt.common.typing import TSecretStrValue

from ..config import CacheSetting, positive_count
from ..errors import ConfigurationError, SyncMismatch
from ..loader import LoadOptions, LoadSource, Sources, data_schema, open_load, request_ids
from ..read.tidy import RECORDS
from ..remote.client import Client
from ..remote.versions import Query
from ..retry import RetryPolicy
from ..sinks.deltaplan import Plan, plan_against, winning_rows
from ..sinks.tablesparquet import conformed, tidy_parts, unified_schema
from ..syncing.marks import mark_after
from ..syncing.purchase import awaited, merging, purchase
from ..syncing.state import Journal, SyncIdentity
from .fit import check_fits
from .held import Destination
from .hints import child_hints, keyed, records_hints, tombstones

__all__ = ["datafiniti_source"]

logger = logging.getLogger("datafiniti_loader")

#: The key of this source's entry in dlt's resource state (query mode).
STATE_KEY = "sync"
_MERGED_KEPT = 20  # downloads remembered as merged: enough to recognise the journal's
#: Arrow bytes per item handed to dlt (see :func:`_gathered`).
ITEM_BYTES = 32 * 1024 * 1024


@dlt.source(name="datafiniti", section=known_sections.SOURCES, max_table_nesting=0)
def datafiniti_source(
    request_ids: Sources | None = None,
    query: str | None = None,
    data_type: str = "products",
    format: str = "json",
    view: str | None = None,
    max_records: int | None = None,
    confirm: Callable[[int], bool] | None = None,
    token: TSecretStrValue | None = None,
    api_url: str | None = None,
    cache: CacheSetting = None,
    wait: bool | float = True,
    progress: bool | None = None,
    retry: RetryPolicy | None = None,
    dtype: Mapping[str, str] | None = None,
    request_id: int | str | None = None,
    forget_pending: bool = False,
) -> Any:
    """Datafiniti records as dlt tables: ``records`` and one per nested list.

    The tables are :func:`~datafiniti_loader.load_tables`' (``records``, one
    per list of objects such as ``reviews``, and ``conflicts``), merged into
    the destination record by record: a record's copy replaces the
    destination's only when its ``dateUpdated`` is newer (ties: the higher
    request id), across runs, and then replaces all of its child rows too.

    Parameters
    ----------
    request_ids : int, str, DownloadRequest or a list of them
        Downloads to load (newest copy of each record among them). Give this
        or ``query``.
    query : str
        Keep the destination current from this query: the first run
        downloads every match, later runs only records updated after the
        newest ``dateUpdated`` loaded (kept in dlt's state, which dlt commits
        with the load). Needs ``max_records``.
    data_type, format, view
        Of the downloads ``query`` creates, as for
        :func:`~datafiniti_loader.create_download`.
    max_records : int
        With ``query``: the most records a run may buy. A run that would buy
        more raises :class:`~datafiniti_loader.TooManyRecords` and spends nothing.
    confirm : callable, optional
        With ``query``: ``confirm(records) -> bool``, asked before credits are spent.
    token, api_url, cache, progress, retry, dtype
        As for :func:`~datafiniti_loader.load_results`. The token may also
        come from dlt's secrets (``sources.datafiniti.token``).
    wait : bool or float
        Wait for unfinished downloads (default), or at most this many seconds.
    request_id, forget_pending
        With ``query``: go on with a download an earlier run asked for
        without hearing back, or forget it, as for :func:`~datafiniti_loader.sync`.

    Returns
    -------
    dlt.sources.DltSource
        One resource, ``records``, that fills every table. Keys: ``id`` for
        ``records``; ``_record_id`` and ``_index`` for child tables, whose
        rows are replaced by ``_record_id`` (dlt's merge key; see
        :mod:`datafiniti_loader.dlt.hints` for the tombstones that remove the
        old rows of a record whose newer copy has none).

    Notes
    -----
    The comparison with the destination needs a pipeline with a SQL
    destination (tested: DuckDB). Names follow dlt's naming convention
    (``dateUpdated`` becomes ``date_updated``).
    """
    if (request_ids is None) == (query is None):
        raise ConfigurationError(
            "datafiniti_source takes request_ids (downloads to load) or query (a query to "
            "keep current), one of the two."
        )
    options = LoadOptions(
        token=token, api_url=api_url, wait=wait, cache=cache, progress=progress, retry=retry,
        dedupe=True, dtype=dtype, merging="the dlt source",
    )  # fmt: skip
    if query is not None:
        wanted = Query.checked(query, data_type, 1, format, view)
        identity = SyncIdentity(wanted.text, wanted.data_type, wanted.format, wanted.view, True)
        limit = positive_count("max_records", max_records)
        if limit is None:
            raise ConfigurationError(
                "A query run of the dlt source needs max_records: the most records one run "
                "may buy (each record costs credits, and a pipeline runs unattended)."
            )

        def kept_current() -> Iterator[Any]:
            yield from _changed_rows(
                identity, options, limit=limit, confirm=confirm, request_id=request_id,
                forget_pending=forget_pending,
            )  # fmt: skip

        return dlt.resource(kept_current, **records_hints())
    assert request_ids is not None
    rids = _request_ids_of(request_ids)

    def downloads() -> Iterator[Any]:
        with open_load(rids, options) as source:
            yield from _rows(source, _destination())

    return dlt.resource(downloads, **records_hints())


def _request_ids_of(sources: Sources) -> list[int]:
    try:
        return request_ids(sources)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"request_ids: {exc}") from None


def _destination() -> Destination:
    return Destination(dlt.current.pipeline(), dlt.current.source_schema())


def _changed_rows(
    identity: SyncIdentity,
    options: LoadOptions,
    *,
    limit: int,
    confirm: Callable[[int], bool] | None,
    request_id: int | str | None,
    forget_pending: bool,
) -> Iterator[Any]:
    """Query mode: buy what changed since the mark, hand its rows on, move the mark in dlt state."""
    state = dlt.current.resource_state()
    synced: dict[str, Any] = state.get(STATE_KEY) or {}
    theirs = SyncIdentity.from_json(synced["identity"]) if synced else identity
    if theirs != identity:
        raise SyncMismatch(
            "This pipeline's Datafiniti source is kept current from another query: "
            f"{'; '.join(identity.differences(theirs))}. Its mark means nothing "
            "for this one: give this query a pipeline of its own (another pipeline_name)."
        )
    mark: str | None = synced.get("mark")
    merged: list[int] = list(synced.get("merged", []))
    pipeline = dlt.current.pipeline()
    schema = dlt.current.source_schema()
    journal = Journal.in_directory(Path(pipeline.working_dir) / "datafiniti" / schema.name)
    left = journal.read()
    if left is not None and left.request_id in merged:
        journal.remove()  # merged by a run whose state dlt committed
    with Client(options.token, options.api_url, retry=options.retry) as client:
        bought = purchase(
            client, journal, identity, mark, limit=limit, confirm=confirm,
            request_id=request_id, forget_pending=forget_pending,
        )  # fmt: skip
        pending = bought.pending
        if pending is None or pending.request_id is None:
            logger.info(
                "dlt: %s: nothing downloaded (%s%s)", identity.query[:120],
                bought.status, f" since {mark}" if mark else "",
            )  # fmt: skip
            return
        rid = pending.request_id
        _, complete = awaited(client, pending, options.wait, options.progress)
        with open_load([rid], options, client=client) as source, merging(rid):
            yield from _rows(source, Destination(pipeline, schema))
            moved = mark_after(source, pending.previous_mark, complete)
    # dlt commits this with the rows; the journal goes at the next run, once it is.
    state[STATE_KEY] = {
        "identity": asdict(identity),
        "mark": moved,
        "merged": [*merged, rid][-_MERGED_KEPT:],
    }


def _rows(source: LoadSource, destination: Destination) -> Iterator[Any]:
    """The tidy rows of the records whose copy is newer than the destination's, and tombstones."""
    scan = source.scan(keep=False)
    flat = data_schema(scan.builder, None, True, source.dtypes)
    newest = source.newest
    assert newest is not None, "the source reads with dedupe"
    records = destination.columns([RECORDS])  # the destination's: its keys and types
    theirs = destination.keys(newest.winners["id"], records.get(RECORDS, {}))
    plan = plan_against(newest, source.request_ids, theirs)
    _log_plan(source, plan)
    if plan.added + plan.replaced == 0:
        return
    # Rows without an id cannot be merged: passing every request as merged keeps none.
    keep = winning_rows(plan.replace_ids, set(source.request_ids))
    with tidy_parts(source, flat, keep) as parts:
        schemas = {name: unified_schema(files) for name, files in parts.items()}
        held = {**records, **destination.columns([n for n in parts if n != RECORDS])}
        for name, files in parts.items():  # every table checked before any row goes to dlt
            check_fits(
                destination.table_name(name), schemas[name], held.get(name, {}),
                lambda column: destination.table_name(column).lower(),
                _values_of(files, schemas[name]),
            )  # fmt: skip
        for name, files in parts.items():
            for table in _gathered(conformed(files, schemas[name]), schemas[name]):
                yield _item(table, name)
    if len(plan.existing_ids):  # replaced records: their old child rows go, in every table
        loaded = [destination.table_name(name) for name in parts if name != RECORDS]
        for name in dict.fromkeys([*loaded, *destination.child_tables()]):
            yield _item(tombstones(name, plan.existing_ids), name)


def _values_of(files: list[Path], schema: pa.Schema) -> Callable[[str], Iterator[pa.Array]]:
    """A column's values in a table's spilled parts, batch by batch."""

    def values(column: str) -> Iterator[pa.Array]:
        for batch in conformed(files, schema):
            yield batch.column(column)

    return values


def _gathered(batches: Iterator[pa.RecordBatch], schema: pa.Schema) -> Iterator[pa.Table]:
    """The batches as tables of about :data:`ITEM_BYTES` each.

    dlt works out and checks a table's schema for every item it is given
    (measured: about 5 ms each, 6 of the 9 s of a 0.27 GB extract when each
    spilled batch was an item); a few large items cost it little, and memory
    holds one of them at a time.
    """
    held: list[pa.RecordBatch] = []
    size = 0
    for batch in batches:
        if batch.num_rows:
            held.append(batch)
            size += batch.nbytes
        if size >= ITEM_BYTES:
            yield pa.Table.from_batches(held, schema)
            held, size = [], 0
    if held:
        yield pa.Table.from_batches(held, schema)


def _item(table: pa.Table, name: str) -> Any:
    """``table``'s rows for dlt, with their table's hints (a variant for child tables)."""
    table = keyed(table, name)
    if name == RECORDS:
        return table
    return dlt.mark.with_hints(table, child_hints(name), create_table_variant=True)


def _log_plan(source: LoadSource, plan: Plan) -> None:
    newest = source.newest
    assert newest is not None
    logger.info(
        "dlt: %s: %d record(s) new to the destination, %d newer than its copy, %d not newer "
        "(left as they are)",
        source.label, plan.added, plan.replaced, plan.unchanged,
    )  # fmt: skip
    idless = sum(newest.idless_rows.values())
    if idless:
        logger.warning(
            "dlt: %s: %d row(s) without an 'id' are not loaded: records are merged by id",
            source.label, idless,
        )  # fmt: skip
