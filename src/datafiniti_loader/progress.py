"""Progress bars (tqdm) for waiting and downloading, shown only where someone watches.

Bytes are counted in decimal megabytes, as the load's summary line counts
them. The bytes bar counts bytes and their rate with no percentage while
files arrive: sizes are only known as each download starts, and a total
that grew would make the percentage fall; with the last file its total is
set (100%). The files bar carries the percentage, and once every file is in
says the load is still converting, until the bars close. The
bars are closed before a load's summary line is logged, so that line is
never written into a live bar.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .remote.models import DownloadRequest

__all__ = ["Progress", "WaitProgress", "want_progress"]


def want_progress(progress: bool | None) -> bool:
    """``None`` means: when stderr is a terminal, or inside a Jupyter kernel."""
    if progress is not None:
        return progress
    if "ipykernel" in sys.modules:
        return True
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def _tqdm() -> Any:
    """Notebook widgets where ipywidgets is installed; plain text bars otherwise (no warning)."""
    if "ipykernel" in sys.modules and importlib.util.find_spec("ipywidgets") is not None:
        from tqdm.notebook import tqdm
    else:
        from tqdm.std import tqdm
    return tqdm


class Progress:
    """A files bar and a bytes bar; every method is a no-op when disabled."""

    def __init__(self, enabled: bool, files: int, description: str) -> None:
        self._lock = threading.Lock()
        self._bytes: Any = None
        self._files: Any = None
        if not enabled:
            return
        tqdm = _tqdm()
        self._files = tqdm(total=files, desc=f"{description} files", unit="file", position=0)
        self._bytes = tqdm(
            total=None,  # a counter and a rate: no percentage that could fall
            desc=f"{description} bytes",
            unit="B",
            unit_scale=True,
            unit_divisor=1000,
            position=1,
        )

    def add_bytes(self, count: int) -> None:
        """Bytes arrived over the network."""
        if self._bytes is not None:
            with self._lock:
                self._bytes.update(count)

    def file_done(self) -> None:
        """One more file is ready; with the last, the bar says the load goes on converting."""
        if self._files is not None:
            with self._lock:
                self._files.update(1)
                if self._files.total and self._files.n >= self._files.total:
                    self._files.set_postfix_str("converting")
                    if self._bytes is not None:  # every byte is in: now the total is known
                        self._bytes.total = self._bytes.n
                        self._bytes.refresh()

    def close(self) -> None:
        """Finish the bars (idempotent)."""
        with self._lock:
            for bar in (self._bytes, self._files):
                if bar is not None:
                    bar.close()
            self._bytes = self._files = None


class WaitProgress:
    """One status bar while a request is prepared: records so far of those requested."""

    def __init__(self, enabled: bool, request_id: int) -> None:
        self._bar: Any = None
        if enabled:
            # No rate: records appear in Datafiniti's steps, not at a speed worth showing.
            self._bar = _tqdm()(
                desc=f"request {request_id} preparing",
                unit=" records",
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt}{postfix}",
            )

    def poll(self, current: DownloadRequest) -> None:
        """Show what the latest poll said."""
        if self._bar is None:
            return
        if current.num_requested and self._bar.total != current.num_requested:
            self._bar.total = current.num_requested
        self._bar.n = current.num_downloaded
        self._bar.set_postfix_str(current.status)  # refreshes

    def close(self) -> None:
        """Finish the bar."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
