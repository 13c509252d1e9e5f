"""The prefetching stage: order, errors, and an early stop that leaves nothing running."""

import threading
import time
from collections.abc import Iterator

import pytest

from datafiniti_loader.sinks.prefetch import prefetched


def test_items_arrive_in_order_made_on_another_thread() -> None:
    makers: set[int] = set()

    def numbers() -> Iterator[int]:
        for n in range(100):
            makers.add(threading.get_ident())
            yield n

    assert list(prefetched(numbers())) == list(range(100))
    assert makers and threading.get_ident() not in makers


def test_a_producer_error_reaches_the_consumer_after_the_items_before_it() -> None:
    def failing() -> Iterator[int]:
        yield 1
        yield 2
        raise ValueError("bad value in row 3")

    got: list[int] = []
    with pytest.raises(ValueError, match="row 3"):
        for item in prefetched(failing()):
            got.append(item)
    assert got == [1, 2]


def test_the_producer_runs_at_most_a_few_items_ahead() -> None:
    made: list[int] = []

    def numbers() -> Iterator[int]:
        for n in range(1000):
            made.append(n)
            yield n

    stream = prefetched(numbers(), ahead=2)
    assert next(stream) == 0
    time.sleep(0.3)  # time enough to run far ahead, were it allowed to
    assert len(made) <= 4  # the one taken, two waiting, one being handed over
    stream.close()


def test_stopping_early_closes_the_source_on_its_thread_and_waits_for_it() -> None:
    cleaned = threading.Event()

    def endless() -> Iterator[int]:
        try:
            n = 0
            while True:
                yield n
                n += 1
        finally:
            cleaned.set()

    stream = prefetched(endless())
    assert next(stream) == 0
    stream.close()  # what an error downstream or Ctrl-C does to the consumer
    assert cleaned.is_set()
    assert not any(t.name == "dfl-prefetch" for t in threading.enumerate())
