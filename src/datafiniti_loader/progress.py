"""Progress bars (tqdm) for downloads: bytes and files, shown only where someone watches."""

from __future__ import annotations

import sys
import threading
from typing import Any

__all__ = ["Progress", "want_progress"]


def want_progress(progress: bool | None) -> bool:
    """``None`` means: when stderr is a terminal, or inside a Jupyter kernel."""
    if progress is not None:
        return progress
    if "ipykernel" in sys.modules:
        return True
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


class Progress:
    """A bytes bar and a files bar; every method is a no-op when disabled."""

    def __init__(self, enabled: bool, files: int, description: str) -> None:
        self._lock = threading.Lock()
        self._bytes: Any = None
        self._files: Any = None
        if not enabled:
            return
        from tqdm.auto import tqdm

        self._files = tqdm(total=files, desc=f"{description} files", unit="file", position=0)
        self._bytes = tqdm(
            desc=f"{description} bytes", unit="B", unit_scale=True, unit_divisor=1024, position=1
        )

    def add_bytes(self, count: int) -> None:
        """Bytes arrived over the network."""
        if self._bytes is not None:
            with self._lock:
                self._bytes.update(count)

    def file_done(self) -> None:
        """One more file is ready."""
        if self._files is not None:
            with self._lock:
                self._files.update(1)

    def close(self) -> None:
        """Finish the bars."""
        for bar in (self._bytes, self._files):
            if bar is not None:
                bar.close()
