"""A download's result files as local files (the pooch and kagglehub way), unparsed.

The files come verified (sizes, ``Content-Range`` and ``ETag`` checked as
for any load) into the cache, or are copied into a folder of the user's:
each written aside and renamed into place, so a file at its final name is
always whole. A file already there with other bytes is never replaced
unless asked: this library does not overwrite what it did not write.
"""

from __future__ import annotations

import filecmp
import os
import shutil
import uuid
from pathlib import Path

from ..errors import StorageError, TargetExists
from ..remote.models import ResultFile

__all__ = ["kept_copy"]


def kept_copy(file: ResultFile, source: Path, dest: Path, *, overwrite: bool) -> Path:
    """``source`` (``file``'s verified download) as ``dest/<file name>``; its path."""
    target = dest / file.name
    if target.exists() and not overwrite:
        if target.is_file() and filecmp.cmp(source, target, shallow=False):
            return target  # already there, byte for byte
        raise TargetExists(
            f"{target} already exists and holds other bytes than result {file.name}; it was "
            "left as it is. Pass overwrite=True (--overwrite) to replace it, or another dest."
        )
    aside = dest / f".{file.name}.{uuid.uuid4().hex[:12]}.part"
    try:
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, aside)
        os.replace(aside, target)
    except OSError as exc:
        aside.unlink(missing_ok=True)
        raise StorageError(
            f"Could not write {target}: {exc.strerror or exc}. Check the folder, its "
            "permissions and free space."
        ) from None
    return target
