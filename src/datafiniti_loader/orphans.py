"""Directories left by a process that was killed before it could clean up.

Scratch directories (``cache=False``) and Parquet staging directories name
the process that made them (``<prefix><pid>-<random>``). A process killed
outright (SIGKILL, a power cut) cannot remove its own; the next run removes
those whose process no longer exists, so nothing outlives its run for long.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

__all__ = ["process_alive", "remove_orphans"]


def remove_orphans(parent: Path, prefix: str) -> None:
    """Remove ``parent/<prefix><pid>-*`` directories whose process has exited."""
    try:
        candidates = [p for p in parent.iterdir() if p.name.startswith(prefix) and p.is_dir()]
    except OSError:
        return
    for path in candidates:
        pid = path.name[len(prefix) :].split("-", 1)[0]
        if pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def process_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, but not ours to signal
        return True
    return True
