"""Parsed copies of result files, so that reading a file twice costs one parse.

Parsing is the most expensive step of a load. The first read of a file tees
its batches, exactly as the reader produced them, into an Arrow IPC file
beside the local copy; later reads (the second pass of ``to_parquet``, a warm
reload from the cache, a dask partition) memory-map that file instead. The
IPC file records the format version and whether its cells are untyped text,
and is written aside and handed to the store only when complete (the store
records its checksum, and verifies it before any later read).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc

from .readers import FileBatches

__all__ = ["PARSED_FORMAT", "open_parsed", "tee_parsed"]

logger = logging.getLogger(__name__)

#: Bump whenever the readers' output changes: older parsed copies are then ignored.
PARSED_FORMAT = "1"
_FORMAT_KEY = b"datafiniti_loader.parsed_format"
_TEXT_KEY = b"datafiniti_loader.text"
# Flattened Datafiniti rows repeat their record's fields: LZ4 shrinks the real
# files 7-30x, and writing less beats writing fast (measured: 100 MB of text
# written in 0.035 s instead of 0.139 s, read back in 0.024 s).
_WRITE_OPTIONS = ipc.IpcWriteOptions(compression="lz4")


def open_parsed(path: Path, *, mapped: bool = False) -> FileBatches | None:
    """The batches of a parsed copy, or ``None`` when there is no usable one.

    ``mapped=True`` memory-maps and reads the whole file at once, for batches
    that are all kept in memory anyway. Streaming readers leave it off and
    read one batch at a time.
    """
    try:
        source = pa.memory_map(str(path)) if mapped else pa.OSFile(str(path))
        reader = ipc.open_file(source)
    except (FileNotFoundError, pa.ArrowInvalid, OSError):
        return None
    metadata = reader.schema.metadata or {}
    if metadata.get(_FORMAT_KEY) != PARSED_FORMAT.encode():
        return None
    text = metadata.get(_TEXT_KEY) == b"1"
    if mapped:  # all at once: buffers are decompressed in parallel
        whole = reader.read_all().replace_schema_metadata(None)
        return FileBatches(iter(whole.to_batches()), text)
    batches = (
        reader.get_batch(i).replace_schema_metadata(None) for i in range(reader.num_record_batches)
    )
    return FileBatches(batches, text)


def tee_parsed(read: FileBatches, part: Path, commit: Callable[[Path], None]) -> FileBatches:
    """Pass ``read``'s batches through, writing them to ``part``; ``commit(part)`` when whole."""
    return FileBatches(_tee(read, part, commit), read.text)


def _tee(read: FileBatches, part: Path, commit: Callable[[Path], None]) -> Iterator[pa.RecordBatch]:
    """Yield every batch; keep the copy only if all of it could be written.

    The copy is an optimisation: when the disk refuses it (full, read-only),
    the batches still flow and the next read parses the file again.
    """
    writer: ipc.RecordBatchFileWriter | None = None
    failed = False
    try:
        for batch in read.batches:
            if not failed:
                try:
                    if writer is None:
                        writer = ipc.new_file(
                            str(part), batch.schema.with_metadata(_metadata(read.text)),
                            options=_WRITE_OPTIONS,
                        )  # fmt: skip
                    writer.write_batch(batch)
                except OSError as exc:
                    logger.debug("no parsed copy %s: %s", part.name, exc)
                    failed = True
            yield batch
        if writer is not None and not failed:
            writer.close()
            commit(part)
    except OSError as exc:
        logger.debug("no parsed copy %s: %s", part.name, exc)
    finally:
        if writer is not None and part.exists():
            with contextlib.suppress(OSError):
                writer.close()
            part.unlink(missing_ok=True)


def _metadata(text: bool) -> dict[bytes, bytes]:
    return {_FORMAT_KEY: PARSED_FORMAT.encode(), _TEXT_KEY: b"1" if text else b"0"}
