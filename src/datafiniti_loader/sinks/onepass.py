"""A conversion that reads each file once, for as long as the column types hold.

Column types are decided from all the data, which in general takes two
passes: one to decide, one to convert. But where the first batch settles
every type, a second pass only repeats what the first saw. So
:class:`OnePass` types each batch as it is read, with the schema the batches
so far decide, and checks after every batch that this schema still holds.
The moment a batch changes it (a column of numbers meets ``33040-4535``, a
new column appears), it stops converting and only reads on, deciding every
type as a first pass would; the caller then writes again in a second pass.
What was converted is then wasted, never wrong, and no file is downloaded or
read for its types twice.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import Generator, Iterator, Sequence
from pathlib import Path

import pyarrow as pa

from ..errors import ColumnNotFound
from ..loader import (
    FileRead,
    LoadSource,
    Scan,
    close_batches,
    data_schema,
    typed_batches,
)
from ..read.schema import SchemaBuilder, release_arrow_memory
from ..remote.models import ResultFile
from .prefetch import prefetched

__all__ = ["OnePass"]

logger = logging.getLogger(__name__)


class OnePass:
    """Typed batches of every file in one pass, while the types the first batch decided hold.

    :meth:`batches` ends early when a batch changes the types (:attr:`changed`);
    :meth:`read_on` then reads the rest as a first pass would. Either way
    :attr:`found` ends up with the verdicts of every batch of every file and
    each file's row count, as :meth:`LoadSource.scan` would have found them.
    """

    def __init__(self, source: LoadSource, columns: Sequence[str] | None, provenance: bool):
        self._source = source
        self._columns = columns
        self._provenance = provenance
        self._files = source.download.local_files()
        self._unfinished: tuple[ResultFile, FileRead, SchemaBuilder] | None = None
        self._data: pa.Schema | None = None  # the data columns batches are converted to
        self.found = Scan(SchemaBuilder())
        self.changed = False

    def batches(self) -> Generator[pa.RecordBatch, None, None]:
        """Every file's batches, typed and with provenance, until the types change."""
        # Files are waited for here, on the caller's thread (Ctrl-C stops the wait at
        # once); each is read and typed on a thread of its own while the caller writes.
        for file, path in self._files:
            with contextlib.closing(prefetched(self._typed(file, path))) as typed:
                yield from typed
            if self.changed:
                return  # the caller stops writing; read_on() goes on from here

    def read_on(self) -> None:
        """After a change: the rest of the file it happened in, then every later file."""
        release_arrow_memory()  # what the abandoned conversion held goes back first
        if self._unfinished is not None:
            file, read, verdicts = self._unfinished
            self._unfinished = None
            rest = self._source.scan_read(file, read, verdicts, keep=False)
            self.found.builder.merge(rest.verdicts)
            self.found.rows[file.key] += rest.rows
        for file, path in self._files:
            scanned = self._source.scan_file(file, path, keep=False)
            self.found.builder.merge(scanned.verdicts)
            self.found.rows[file.key] = scanned.rows

    def close(self) -> None:
        """Stop the downloads and the read of a file left unfinished (after a failure)."""
        if self._unfinished is not None:
            close_batches(self._unfinished[1].batches)
        close_batches(self._files)

    def _typed(self, file: ResultFile, path: Path) -> Iterator[pa.RecordBatch]:
        seen = SchemaBuilder()  # this file's verdicts, kept with a new parsed copy
        read = self._source.batches_of(file, path, observer=seen)
        verdicts = read.verdicts or seen  # a parsed copy's kept ones hold the whole file
        self.found.rows[file.key] = 0
        try:
            checked = self._checked(file, read, verdicts)
            first = next(checked, None)
            if first is not None:
                assert self._data is not None  # set by the first batch checked
                batches = itertools.chain([first], checked)
                yield from typed_batches(file, batches, self._data, self._provenance)
        finally:
            if self.changed:  # read_on() sees the rest of this file
                self._unfinished = (file, read, verdicts)
            else:
                close_batches(read.batches)
                self.found.builder.merge(verdicts)

    def _checked(
        self, file: ResultFile, read: FileRead, verdicts: SchemaBuilder
    ) -> Iterator[pa.RecordBatch]:
        """The file's batches while the types hold; the batch that changes them ends it."""
        for batch in read.batches:
            if read.verdicts is None:  # a parsed copy's kept verdicts hold the whole file
                verdicts.observe(batch, text=read.text)
            self.found.rows[file.key] += batch.num_rows
            decided = self._decided(verdicts)
            if self._data is None:
                self._data = decided
            # A JSON field typed in several ways in this file is its JSON text as written,
            # which only a second reading of the file gives.
            mixed = not read.text and bool(verdicts.text_conflicts())
            if decided is None or not decided.equals(self._data) or mixed:
                logger.debug("%s changed the column types: converting in two passes", file.name)
                self.changed = True
                return
            yield batch

    def _decided(self, file_so_far: SchemaBuilder) -> pa.Schema | None:
        """The data schema of the files before and this one so far.

        ``None`` while a column asked for has not been seen.
        """
        seen = SchemaBuilder()
        seen.merge(self.found.builder)
        seen.merge(file_so_far)
        try:
            return data_schema(seen, self._columns, self._provenance, self._source.dtypes)
        except ColumnNotFound:
            return None
