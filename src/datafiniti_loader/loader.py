"""A load from request id to Arrow: resolve files, fetch them, read, type across files.

The stages run one way: :class:`~datafiniti_loader.remote.client.Client` (request id
to result files), :class:`~datafiniti_loader.fetch.download.Download` (files to
local copies), :mod:`~datafiniti_loader.read.files` (local copies to batches),
:mod:`~datafiniti_loader.read.schema` (one schema for all, plus provenance). The
sinks (:mod:`~datafiniti_loader.sinks.outputs`, :mod:`~datafiniti_loader.sinks.parquet`)
take it from there.
"""

from __future__ import annotations

import difflib
import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from .config import CacheSetting, resolve_cache_dir
from .errors import ColumnConflict, ColumnNotFound, ConfigurationError, ParseError
from .fetch.cache import FileCache, FileStore, ScratchStore
from .fetch.download import DEFAULT_MAX_WORKERS, Download
from .fetch.transport import Transport
from .progress import Progress, WaitProgress, want_progress
from .read.dedupe import NewestCopies
from .read.dtypes import arrow_types, explain_failure
from .read.files import FileBatches, read_file
from .read.parsed import open_parsed, tee_parsed
from .read.schema import (
    PROVENANCE_SCHEMA,
    Provenance,
    SchemaBuilder,
    add_provenance,
    conform,
    release_arrow_memory,
)
from .remote.client import Client, normalize_request_id
from .remote.models import DownloadRequest, FileKey, ResultFile
from .retry import RetryPolicy

__all__ = [
    "LOAD_SUMMARY",
    "FileRead",
    "FileScan",
    "LoadOptions",
    "LoadSource",
    "RowCounter",
    "Scan",
    "Sources",
    "close_batches",
    "open_load",
    "read_head",
    "read_table",
    "request_files",
    "request_ids",
    "require_columns",
    "wait_for",
]

logger = logging.getLogger(__name__)


#: What the entry points load: a request id, a :class:`DownloadRequest`, or a list of them.
Sources = int | str | DownloadRequest | Sequence[int | str | DownloadRequest]


def request_ids(sources: Sources) -> list[int]:
    """The request ids to load, in the order given; a repeat or an empty list is refused."""
    listed = [sources] if isinstance(sources, int | str | DownloadRequest) else list(sources)
    if not listed:
        raise ConfigurationError("No request id given: pass an id, or a list of ids.")
    ids = [normalize_request_id(s) for s in listed]
    repeated = sorted({rid for rid in ids if ids.count(rid) > 1})
    if repeated:
        raise ConfigurationError(
            f"Request {repeated[0]} is listed more than once; list each download once."
        )
    return ids


@dataclass
class LoadSource:
    """Everything one load needs, opened by :func:`open_load`."""

    request_ids: list[int]
    client: Client
    download: Download
    started: float
    #: Keep parsed copies of files for a later read (always when caching).
    keep_parsed: bool = False
    #: Set for ``dedupe=True``: which download's copy of each record stays.
    newest: NewestCopies | None = None
    #: The column types asked for with ``dtype=``.
    dtypes: dict[str, pa.DataType] = field(default_factory=dict)
    #: Per JSON file whose chunks typed a field in several ways: the fields to read
    #: as their JSON text, as the whole-file reader gives them (found by the scan).
    json_text: dict[FileKey, frozenset[str]] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """``request 6073``, or ``requests 6073, 6074`` for a merge."""
        if len(self.request_ids) == 1:
            return f"request {self.request_ids[0]}"
        return f"requests {', '.join(map(str, self.request_ids))}"

    @property
    def files(self) -> list[ResultFile]:
        """The request's result files, in load order."""
        return self.download.files

    def batches_of(
        self,
        file: ResultFile,
        path: Path,
        *,
        mapped: bool = False,
        observer: SchemaBuilder | None = None,
    ) -> FileRead:
        """A local file's batches, whether they are untyped text, and any verdicts kept.

        A parsed copy is used when there is one (memory-mapped if ``mapped``),
        and made when ``keep_parsed``. A new copy keeps the column-type verdicts
        of ``observer``, which the caller must show every batch of the file.
        """
        store = self.download.store
        copy = store.parsed_copy(file)
        read = None if copy is None else open_parsed(copy.path, mapped=mapped)
        if copy is not None and read is not None:
            logger.debug("%s: read from its parsed copy", file.name)
            kept = copy.verdicts if read.text else None
            verdicts = None if kept is None else SchemaBuilder.from_text_verdicts(kept)
            return FileRead(read.batches, read.text, verdicts)
        try:
            fresh = read_file(
                path, file.name, file.format, text_columns=self.json_text.get(file.key, frozenset())
            )
        except ParseError as exc:
            raise _unreadable(store, file, exc) from None
        fresh = FileBatches(_forgotten_if_unreadable(fresh.batches, store, file), fresh.text)
        if self.keep_parsed:
            text = fresh.text

            def commit(part: Path) -> None:
                seen = observer.text_verdicts() if observer is not None and text else None
                store.commit_parsed(file, part, seen)

            fresh = tee_parsed(fresh, store.parsed_part(file), commit)
        return FileRead(fresh.batches, fresh.text, None)

    def scan(self, keep: bool) -> Scan:
        """Read every file once, deciding column types; keep the batches if asked.

        Files are read as they arrive on threads of their own, two at a time
        when every batch is kept (a streaming pass reads one, which bounds its
        memory); what each found is added in file order, so the result is
        that of reading them one after the other. A failure in one stops the
        other after its current batch and is raised here without waiting for
        downloads still under way. A file whose parsed copy kept its verdicts
        is not checked again. With ``dedupe``, every record's winning copy is
        decided here too.
        """
        stop = threading.Event()
        reading: list[tuple[ResultFile, Future[FileScan]]] = []

        def raise_failure() -> None:
            for _, future in reading:
                if future.done() and future.exception() is not None:
                    future.result()

        at_once = _FILES_AT_ONCE if keep else 1
        with ThreadPoolExecutor(at_once, thread_name_prefix="dfl-scan") as pool:
            try:
                for file, path in self.download.local_files(while_waiting=raise_failure):
                    reading.append((file, pool.submit(self.scan_file, file, path, keep, stop)))
                    raise_failure()
                wait([future for _, future in reading], return_when=FIRST_EXCEPTION)
                raise_failure()
            finally:
                stop.set()  # after a failure or Ctrl-C: the other file stops at its next batch
        scan = Scan(SchemaBuilder())
        for file, future in reading:
            found = future.result()
            scan.builder.merge(found.verdicts)
            scan.files.append((file, found.held))
            scan.rows[file.key] = found.rows
        if self.newest is not None:
            self.newest.decide()
        return scan

    def scan_file(
        self, file: ResultFile, path: Path, keep: bool, stop: threading.Event | None = None
    ) -> FileScan:
        """One file's part of :meth:`scan` (on a thread of its own there); ``stop`` ends it."""
        seen = SchemaBuilder()
        read = self.batches_of(file, path, mapped=keep, observer=seen)
        found = self.scan_read(file, read, read.verdicts or seen, keep, stop)
        if keep and file.key in self.json_text:  # the batches kept must be the whole file's
            found.held = list(self.batches_of(file, path).batches)
        return found

    def scan_read(
        self,
        file: ResultFile,
        read: FileRead,
        verdicts: SchemaBuilder,
        keep: bool,
        stop: threading.Event | None = None,
    ) -> FileScan:
        """Read ``read``'s batches to the end, adding to ``verdicts``, then close it.

        ``read`` may be partly read already (:mod:`.onepass` reads on after a
        change of types); the rows counted are those read here.
        """
        found = FileScan(verdicts)
        streamed = StreamedMemory()
        try:
            for batch in read.batches:
                if stop is not None and stop.is_set():
                    raise _Stopped
                if read.verdicts is None:  # a parsed copy's kept verdicts hold the whole file
                    verdicts.observe(batch, text=read.text)
                if self.newest is not None:
                    self.newest.observe(file, batch)
                found.rows += batch.num_rows
                if keep:
                    found.held.append(batch)
                else:  # streaming: hand back what the batches freed (kept ones hold theirs)
                    streamed.passed(batch)
        finally:
            close_batches(read.batches)
        if not read.text:
            self.note_json_text(file, verdicts)
        return found

    def note_json_text(self, file: ResultFile, verdicts: SchemaBuilder) -> None:
        """Remember the JSON fields ``file`` (its ``verdicts``) makes text, if any.

        Its first reading typed them chunk by chunk; every later one reads them
        as their JSON text, as the whole file has them.
        """
        conflicts = verdicts.text_conflicts()
        if conflicts:
            self.json_text[file.key] = conflicts


def _forgotten_if_unreadable(
    batches: Iterator[pa.RecordBatch], store: FileStore, file: ResultFile
) -> Iterator[pa.RecordBatch]:
    """``batches``; a file found malformed on the way is dropped from the store."""
    try:
        yield from batches
    except ParseError as exc:
        raise _unreadable(store, file, exc) from None


def _unreadable(store: FileStore, file: ResultFile, error: ParseError) -> ParseError:
    """``error``, saying so when the file's cached copy was removed."""
    if not store.forget(file):
        return error
    return ParseError(
        f"{error} Its cached copy was removed: the next load downloads it again.",
        file=error.file,
        line=error.line,
    )


def close_batches(batches: Iterator[object]) -> None:
    """Close a generator now, not at collection: an abandoned parsed copy, or downloads, stop."""
    close = getattr(batches, "close", None)
    if close is not None:
        close()


#: Files a scan that keeps its batches reads side by side. pyarrow's streaming
#: reader and the type checks keep about one core busy per file; two files at
#: once use both (measured in BENCHMARKS.md). A streaming pass reads one: two
#: gained it 2-4 % and cost 45-61 MB of peak memory (measured).
_FILES_AT_ONCE = 2


class StreamedMemory:
    """Hands Arrow's free pages back to the OS after every 32 MB of batches streamed through.

    It bounds what the allocator keeps while batches are read and dropped;
    doing it after every batch cost 9 % of a conversion (measured).
    """

    EVERY = 32 << 20

    def __init__(self) -> None:
        self._unreleased = 0  # bytes of batches streamed since the last release

    def passed(self, batch: pa.RecordBatch) -> None:
        """Count a batch that is done with; release when enough has passed."""
        self._unreleased += batch.nbytes
        if self._unreleased >= self.EVERY:
            release_arrow_memory()
            self._unreleased = 0


class _Stopped(Exception):
    """Another file of the scan failed, or the scan was interrupted."""


@dataclass
class FileScan:
    """What reading one file found."""

    verdicts: SchemaBuilder
    held: list[pa.RecordBatch] = field(default_factory=list)
    rows: int = 0


@dataclass
class FileRead:
    """A file's batches as :meth:`LoadSource.batches_of` hands them out."""

    batches: Iterator[pa.RecordBatch]
    text: bool  # untyped CSV cells
    verdicts: SchemaBuilder | None  # its column-type verdicts, kept from an earlier read


@dataclass
class Scan:
    """What one pass over every file found."""

    builder: SchemaBuilder
    files: list[tuple[ResultFile, list[pa.RecordBatch]]] = field(default_factory=list)
    #: Rows per file, keyed by :attr:`ResultFile.key` (names and ids can repeat).
    rows: dict[FileKey, int] = field(default_factory=dict)


def data_schema(
    builder: SchemaBuilder,
    columns: Sequence[str] | None,
    provenance: bool = True,
    dtypes: dict[str, pa.DataType] | None = None,
) -> pa.Schema:
    """The data columns to output: all, or ``columns`` in the order given.

    A name given twice counts once; provenance names are accepted (those
    columns come last anyway) unless ``provenance=False`` leaves them out.
    ``dtypes`` (from ``dtype=``) set the type of the columns they name.
    """
    if dtypes:
        require_columns(list(dtypes), builder.column_names, "dtype= names column(s) no file has:")
    schema = _data_columns(builder, columns, provenance)
    if not dtypes:
        return schema
    return pa.schema([pa.field(f.name, dtypes.get(f.name, f.type)) for f in schema])


def _data_columns(
    builder: SchemaBuilder, columns: Sequence[str] | None, provenance: bool
) -> pa.Schema:
    ours = set(PROVENANCE_SCHEMA.names)
    theirs = [name for name in builder.column_names if name in ours]
    if theirs and provenance:
        raise ColumnConflict(
            f"The result files have column(s) {theirs} named like the provenance columns "
            "this library adds; one would hide the other. Load or convert with "
            "provenance=False (--no-provenance) to keep the files' own columns (to_delta "
            "and merge always add provenance, so they cannot take these files)."
        )
    if columns is None:
        return builder.schema()
    if isinstance(columns, str):
        columns = [columns]
    wanted = list(dict.fromkeys(columns))
    ours -= set(theirs)  # without provenance, the files' own columns of those names are data
    asked_provenance = [c for c in wanted if c in ours]
    if asked_provenance and not provenance:
        raise ColumnNotFound(
            f"{asked_provenance} are provenance columns, which provenance=False leaves out. "
            "Drop provenance=False (--no-provenance) to have them."
        )
    data = [c for c in wanted if c not in ours]
    if not data and not provenance:
        raise ConfigurationError(
            "columns= (--columns) selects no data column and provenance=False "
            "(--no-provenance) leaves out the provenance columns: nothing would be loaded. "
            "Name at least one column."
        )
    require_columns(data, builder.column_names, "No result file has the column(s)")
    return builder.schema(data)


def require_columns(wanted: Sequence[str], known: Sequence[str], problem: str) -> None:
    """Raise :class:`ColumnNotFound` (``problem``, the names, a hint) if any is not known."""
    present = set(known)
    missing = [name for name in wanted if name not in present]
    if missing:
        raise ColumnNotFound(f"{problem} {missing}. {did_you_mean(missing[0], known)}")


def did_you_mean(name: str, choices: Sequence[str]) -> str:
    """A hint for a mistyped column name: the closest names, else a sample of all.

    Names that differ only in case come first (``ID`` for ``id``).
    """
    same = [c for c in choices if c.lower() == name.lower()]
    close = same or difflib.get_close_matches(name, choices, n=3, cutoff=0.6)
    if close:
        return f"Did you mean {' or '.join(map(repr, close))}?"
    sample = ", ".join(choices[:15])
    return f"Columns: {sample}{', ...' if len(choices) > 15 else ''}."


def with_provenance(schema: pa.Schema) -> pa.Schema:
    """``schema`` followed by the provenance columns."""
    return pa.schema(list(schema) + list(PROVENANCE_SCHEMA), metadata=schema.metadata)


def typed_batches(
    file: ResultFile,
    batches: Iterator[pa.RecordBatch] | list[pa.RecordBatch],
    schema: pa.Schema,
    provenance: bool,
    newest: NewestCopies | None = None,
) -> Iterator[pa.RecordBatch]:
    """Conform a file's batches to ``schema``, append provenance, drop superseded copies.

    ``_source_row`` counts every row of the file, so it points at the row in
    the file even where ``dedupe`` drops rows before it.
    """
    origin = Provenance(file.request_id, file.id, file.name, file.date_created)
    row = 0
    for batch in batches:
        try:
            typed = conform(batch, schema)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            explain_failure(batch, schema, file, row)  # a value dtype= cannot read: says which
            raise
        if provenance:
            typed = add_provenance(typed, origin, row, rows=batch.num_rows)
        if newest is not None:
            typed = typed.filter(newest.keep(file, batch))
        row += batch.num_rows
        yield typed


def read_table(source: LoadSource, columns: Sequence[str] | None, provenance: bool) -> pa.Table:
    """The whole download as one Arrow table."""
    scan = source.scan(keep=True)
    schema = data_schema(scan.builder, columns, provenance, source.dtypes)

    def typed(held: tuple[ResultFile, list[pa.RecordBatch]]) -> list[pa.RecordBatch]:
        file, batches = held
        return list(typed_batches(file, _taken(batches), schema, provenance, source.newest))

    # Files are typed side by side: pyarrow's casts release the GIL.
    with ThreadPoolExecutor(_FILES_AT_ONCE, thread_name_prefix="dfl-type") as pool:
        try:
            out = [batch for batches in pool.map(typed, scan.files) for batch in batches]
        except BaseException:  # a failure or Ctrl-C: files not yet begun are not typed
            pool.shutdown(cancel_futures=True)
            raise
    if provenance:
        schema = with_provenance(schema)
    table = pa.Table.from_batches(out, schema=schema)
    log_summary(source, table.num_rows, len(table.column_names))
    return table


def read_head(
    source: LoadSource, columns: Sequence[str] | None, provenance: bool, nrows: int
) -> pa.Table:
    """The first ``nrows`` rows: files are fetched in order, and only as many as they need.

    Each file needed is downloaded whole (where a CSV record ends is only
    known by reading it), then read only up to the rows wanted. Column types
    are decided from the rows read, as for a whole load from all of them.
    """
    source.keep_parsed = False  # a parsed copy of part of a file must never be kept
    builder = SchemaBuilder()
    held: list[tuple[ResultFile, list[pa.RecordBatch]]] = []
    got = 0
    for file in source.files:
        if got >= nrows:
            break
        read = source.batches_of(file, source.download.fetch(file))
        batches: list[pa.RecordBatch] = []
        try:
            for batch in read.batches:
                batch = batch.slice(0, nrows - got)
                builder.observe(batch, text=read.text)
                batches.append(batch)
                got += batch.num_rows
                if got >= nrows:
                    break
        finally:
            close_batches(read.batches)
        held.append((file, batches))
    data = data_schema(builder, columns, provenance, source.dtypes)
    out = [b for file, batches in held for b in typed_batches(file, batches, data, provenance)]
    table = pa.Table.from_batches(out, schema=with_provenance(data) if provenance else data)
    log_summary(source, table.num_rows, len(table.column_names))
    return table


def _taken(batches: list[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Hand out ``batches`` in order, emptying the list as it goes.

    The text a typed column replaces is then freed batch by batch, not once
    the whole file is typed.
    """
    batches.reverse()
    while batches:
        yield batches.pop()


class RowCounter:
    """Batches passed through, counting rows (filters such as ``dedupe`` decide how many)."""

    def __init__(self, batches: Iterator[pa.RecordBatch]) -> None:
        self._batches = batches
        self.rows = 0

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        for batch in self._batches:
            self.rows += batch.num_rows
            yield batch


#: Marks the load's summary log record: the command line prints its own line instead.
LOAD_SUMMARY = "datafiniti_load_summary"


def log_summary(source: LoadSource, rows: int, columns: int, target: str = "") -> None:
    """One INFO line per load, after the progress bars are closed (never inside them)."""
    source.download.progress.close()
    stats = source.download.stats
    dropped = ""
    if source.newest is not None:
        dropped = f", newest copies of {source.newest.repeated_records:,} repeated record(s) kept"
    fetched = f", {stats.bytes_downloaded / 1e6:,.1f} MB" if stats.downloaded_files else ""
    logger.info(
        "%s: %s file(s) (%s downloaded, %s cached%s), %s rows x %s columns%s%s in %.2fs",
        source.label,
        f"{len(source.files):,}",
        f"{stats.downloaded_files:,}",
        f"{stats.cached_files:,}",
        fetched,  # no "0.0 MB" for a load from the cache
        f"{rows:,}",  # as the command line prints numbers: 117,000
        f"{columns:,}",
        dropped,
        f" -> {target}" if target else "",
        time.perf_counter() - source.started,
        extra={LOAD_SUMMARY: True},
    )


@dataclass(frozen=True)
class LoadOptions:
    """How to reach the API and fetch files; shared by every entry point.

    Its ``repr`` leaves the token out: frame locals reach tracebacks and error trackers.
    """

    token: str | None = field(default=None, repr=False)
    api_url: str | None = None
    wait: bool | float = False
    cache: CacheSetting = None
    max_workers: int | None = None
    progress: bool | None = None
    retry: RetryPolicy | None = None
    dedupe: bool = False
    dtype: Mapping[str, str] | None = None
    #: A merge asks for ``dedupe``: its errors then speak of the merge (True: a Delta
    #: merge; a string names another merger, such as "the dlt source").
    merging: bool | str = False


@contextmanager
def open_load(
    sources: Sources, options: LoadOptions, *, client: Client | None = None
) -> Iterator[LoadSource]:
    """Resolve the requests to their files and set up their download; clean up after."""
    started = time.perf_counter()
    rids = request_ids(sources)
    dtypes = arrow_types(options.dtype)  # a type not understood fails before any request
    own_client = client is None
    api = client or Client(token=options.token, api_url=options.api_url, retry=options.retry)
    store: FileStore | None = None
    bars: Progress | None = None
    download: Download | None = None
    try:
        files = [f for rid in rids for f in request_files(api, rid, options)]
        cache_dir = resolve_cache_dir(options.cache, api.api_url)
        store = ScratchStore() if cache_dir is None else FileCache(cache_dir, api.api_url)
        label = f"request {rids[0]}" if len(rids) == 1 else f"{len(rids)} requests"
        bars = Progress(want_progress(options.progress), len(files), label)
        transport = Transport(api.retry, on_bytes=bars.add_bytes)
        download = Download(
            api,
            files,
            store,
            transport,
            max_workers=options.max_workers or DEFAULT_MAX_WORKERS,
            progress=bars,
        )
        yield LoadSource(
            rids,
            api,
            download,
            started,
            keep_parsed=isinstance(store, FileCache),
            newest=NewestCopies(rids, merging=options.merging) if options.dedupe else None,
            dtypes=dtypes,
        )
    finally:
        if download is not None:
            download.close()  # before the store goes: no download may still be writing
        if bars is not None:
            bars.close()
        if store is not None:
            store.close()
        if own_client:
            api.close()


def request_files(api: Client, rid: int, options: LoadOptions) -> list[ResultFile]:
    """A request's files, after waiting for it if ``options.wait`` says so."""
    if options.wait is not False:
        wait_for(api, rid, options.wait, options.progress)
    return api.results(rid)


def wait_for(api: Client, rid: int, wait: bool | float, progress: bool | None) -> DownloadRequest:
    """Poll until request ``rid`` is done (``wait``: ``True``, or at most that many seconds).

    A status bar shows records and status meanwhile, where progress bars are wanted.
    """
    shown = want_progress(progress)
    status = WaitProgress(shown, rid)
    try:  # with a bar, the bar shows each poll; without one, Client.wait logs the changes
        return api.wait(
            rid,
            timeout=None if wait is True else float(wait),
            on_poll=status.poll if shown else None,
        )
    finally:
        status.close()
