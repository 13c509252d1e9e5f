"""Directories left by a process that was killed before it could clean up.

Scratch directories (``cache=False``) and Parquet staging directories are
this library's own: each is marked, as the first thing written in it, with
the process and the machine that made it (:func:`mark_owned`). A process
killed outright (SIGKILL, a power cut) cannot remove its own; the next run
removes those whose marker names a process of this machine that no longer
exists. A directory without the marker is never touched, whatever its name
(``exports.tmp-2024-q3-backup`` is a user's), nor is one another machine made
(its process cannot be checked from here: a shared disk).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any

__all__ = [
    "OWNER_MARKER",
    "mark_owned",
    "owned_tempdir",
    "owner_record",
    "process_alive",
    "remove_orphans",
]

logger = logging.getLogger(__name__)

#: The file that marks a directory as this library's, with the pid and host that made it.
OWNER_MARKER = ".datafiniti-loader-owner"
_LIBRARY = "datafiniti-loader"


def owner_record() -> dict[str, Any]:
    """What the marker says: this library, this process, this machine."""
    return {"library": _LIBRARY, "pid": os.getpid(), "host": socket.gethostname()}


def mark_owned(directory: Path) -> None:
    """Write the marker into a directory this process just made (before anything else)."""
    (directory / OWNER_MARKER).write_text(json.dumps(owner_record()), encoding="utf-8")


def owned_tempdir(prefix: str) -> tempfile.TemporaryDirectory[str]:
    """A temporary directory marked as this process's; those of killed processes go first.

    ``TemporaryDirectory`` removes its directory when closed or collected,
    but not when the process is killed: the marker lets the next one remove it.
    """
    remove_orphans(Path(tempfile.gettempdir()), prefix)
    made = tempfile.TemporaryDirectory(prefix=prefix)
    mark_owned(Path(made.name))
    return made


def remove_orphans(parent: Path, prefix: str) -> None:
    """Remove ``parent/<prefix>*`` directories whose marker names a process that has exited."""
    try:
        candidates = [p for p in parent.iterdir() if p.name.startswith(prefix)]
    except OSError:
        return
    for path in candidates:
        if _orphaned(path):
            logger.debug("removing %s, left by a process that no longer runs", path)
            shutil.rmtree(path, ignore_errors=True)


def _orphaned(path: Path) -> bool:
    """Whether ``path`` is a directory this library made, on this machine, for a dead process."""
    if path.is_symlink() or not path.is_dir():
        return False
    try:
        owner = json.loads((path / OWNER_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False  # not ours, or not marked: never ours to delete
    if not isinstance(owner, dict) or owner.get("library") != _LIBRARY:
        return False
    pid = owner.get("pid")
    if owner.get("host") != socket.gethostname() or not isinstance(pid, int):
        return False
    return not process_alive(pid)


def process_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, but not ours to signal
        return True
    return True
