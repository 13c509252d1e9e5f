"""A pipeline stage on a thread of its own: items made a few ahead of the consumer.

The second pass of ``to_parquet`` (and of ``to_delta``) reads parsed copies
and conforms their batches, Arrow work that releases the GIL, while the
writer encodes Parquet. One after the other, each left a core idle; side by
side the pass is shorter (measured in BENCHMARKS.md). The one-pass
conversion (:mod:`.onepass`) reads, checks and types each file on such a
stage while the writer encodes, in the same way.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterator
from typing import TypeVar, cast

__all__ = ["prefetched"]

T = TypeVar("T")

_END = object()  # the producer is done (or failed: see ``failed``)
_POLL = 0.1  # seconds a blocked producer waits before looking whether the consumer left


def prefetched(items: Iterator[T], ahead: int = 2) -> Generator[T, None, None]:
    """Yield ``items``, produced on a thread of their own up to ``ahead`` in advance.

    An exception in the producer is raised here, in the consumer, after the
    items made before it. Closing this generator early (an error downstream,
    Ctrl-C) stops the producer after the item it is making, closes ``items``
    on its thread and waits for that, so nothing of the stage outlives it.
    """
    handoff: queue.Queue[object] = queue.Queue(ahead)
    stop = threading.Event()
    failed: list[BaseException] = []

    def offer(item: object) -> bool:
        """Hand ``item`` over unless the consumer has gone; False once it has."""
        while not stop.is_set():
            try:
                handoff.put(item, timeout=_POLL)
                return True
            except queue.Full:
                pass
        return False

    def produce() -> None:
        try:
            for item in items:
                if not offer(item):
                    break
        except BaseException as exc:  # raised again in the consumer
            failed.append(exc)
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()  # an abandoned generator's cleanup runs here, before the join ends
            offer(_END)

    thread = threading.Thread(target=produce, name="dfl-prefetch", daemon=True)
    thread.start()
    try:
        while (item := handoff.get()) is not _END:
            yield cast(T, item)
        if failed:
            raise failed[0]
    finally:
        stop.set()
        thread.join()
