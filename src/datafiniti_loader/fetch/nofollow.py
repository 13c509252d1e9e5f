"""Files the library writes in a shared directory, opened without following links.

A cache directory may be shared (a team's disk, ``/tmp``). Someone who can
write there could plant a symbolic link at a name the library is about to
write (``.<entry>.partial``, ``.<entry>.lock``) and have the download
overwrite, append to or create a file anywhere the user may write. Every
such file is opened with ``O_NOFOLLOW``: a link is refused, loudly, and the
file it points at is never touched.
"""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path
from typing import BinaryIO

from ..errors import StorageError

__all__ = ["open_lock_file", "open_new", "open_to_write"]

logger = logging.getLogger(__name__)

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def open_to_write(path: Path, *, append: bool) -> BinaryIO:
    """``path`` opened to append to (or emptied first), never through a symbolic link."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
    return os.fdopen(_open(path, flags), "ab" if append else "wb")


def open_new(path: Path) -> BinaryIO:
    """A file that must not exist yet (``O_EXCL``): nothing planted at ``path`` is written."""
    return os.fdopen(_open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL), "wb")


def open_lock_file(path: Path) -> BinaryIO:
    """The lock file at ``path``, made if missing, never through a symbolic link."""
    return os.fdopen(_open(path, os.O_RDWR | os.O_CREAT), "r+b")


def _open(path: Path, flags: int) -> int:
    try:
        return os.open(path, flags | _NOFOLLOW | _CLOEXEC, 0o644)
    except OSError as exc:
        if exc.errno != errno.ELOOP or not path.is_symlink():
            raise
    logger.warning("refused to write through a symbolic link planted at %s", path)
    raise StorageError(
        f"{path} is a symbolic link where this library keeps its own file; it never writes "
        "through one (someone with access to the cache directory may have planted it). "
        "Remove the link, or point DATAFINITI_CACHE_DIR (cache=, --cache-dir) at a "
        "directory only you can write."
    )
