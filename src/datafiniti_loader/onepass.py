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

from .errors import ColumnNotFound
from .loader import (
    FileRead,
    LoadSource,
    Scan,
    StreamedMemory,
    close_batches,
    data_schema,
    typed_batches,
)
from .models import ResultFile
from .prefetch import prefetched
from .schema import SchemaBuilder

__all__ = ["OnePass"]

logger = logging.getLogger(__name__)


class OnePass:
    """Typed batches of every file in one pass, while the types the first batch decided hold.

    After :meth:`batches` is exhausted, :attr:`changed` says whether a batch
    changed the types (the batches handed out are then not the whole
    download); either way :attr:`found` holds the verdicts of every batch of
    every file and each file's row count, as a first pass
    (:meth:`LoadSource.scan`) would have found them.
    """

    def __init__(self, source: LoadSource, columns: Sequence[str] | None, provenance: bool):
        self._source = source
        self._columns = columns
        self._provenance = provenance
        self.found = Scan(SchemaBuilder())
        self.changed = False
        self._data: pa.Schema | None = None  # the data columns batches are converted to

    def batches(self) -> Generator[pa.RecordBatch, None, None]:
        """Every file's batches, typed and with provenance, until the types change."""
        # Files are waited for here, on the caller's thread (Ctrl-C stops the wait at
        # once); each is read and typed on a thread of its own while the caller writes.
        for file, path in self._source.download.local_files():
            self.found.rows[file.key] = 0
            with contextlib.closing(prefetched(self._typed(file, path))) as typed:
                yield from typed

    def _typed(self, file: ResultFile, path: Path) -> Iterator[pa.RecordBatch]:
        read = self._source.batches_of(file, path)
        try:
            checked = self._checked(file, read)
            first = next(checked, None)
            if first is None:
                return
            assert self._data is not None  # set by the first batch checked
            batches = itertools.chain([first], checked)
            yield from typed_batches(file, batches, self._data, self._provenance)
        finally:
            close_batches(read.batches)

    def _checked(self, file: ResultFile, read: FileRead) -> Iterator[pa.RecordBatch]:
        """The file's batches that the types so far hold for; all of them are seen."""
        streamed = StreamedMemory()  # batches only seen are dropped here, not by the writer
        for batch in read.batches:
            self.found.builder.observe(batch, text=read.text)
            self.found.rows[file.key] += batch.num_rows
            if self.changed:
                streamed.passed(batch)
                continue
            decided = self._decided()
            if self._data is None:
                self._data = decided
            if decided is not None and decided.equals(self._data):
                yield batch
                continue
            logger.debug("%s changed the column types: converting in two passes", file.name)
            self.changed = True

    def _decided(self) -> pa.Schema | None:
        """The data schema so far; ``None`` while a column asked for has not been seen."""
        try:
            return data_schema(
                self.found.builder, self._columns, self._provenance, self._source.dtypes
            )
        except ColumnNotFound:
            return None
