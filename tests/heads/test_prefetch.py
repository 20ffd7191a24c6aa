"""``heads.prefetch.prefetched``: the same items in the same order, made in one background thread; errors
reach the consumer; leaving early stops the thread and closes the source."""

import threading

import pytest

from heads.prefetch import prefetched


def _alive() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "prefetch"]


def test_same_items_in_order_made_in_the_background_thread():
    threads = []

    def source():
        for i in range(50):
            threads.append(threading.current_thread().name)
            yield [i, i * i]

    assert list(prefetched(source(), depth=3)) == [[i, i * i] for i in range(50)]
    assert set(threads) == {"prefetch"}
    assert not _alive()


def test_an_error_in_the_source_is_raised_in_the_consumer():
    def source():
        yield 1
        yield 2
        raise KeyError("bad row 3")

    got = []
    with pytest.raises(KeyError, match="bad row 3"):
        for item in prefetched(source()):
            got.append(item)
    assert got == [1, 2] and not _alive()


def test_leaving_early_stops_the_thread_and_closes_the_source():
    closed = threading.Event()

    def source():
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.set()

    batches = prefetched(source(), depth=2)
    assert [next(batches) for _ in range(5)] == [0, 1, 2, 3, 4]
    batches.close()  # what a loop that breaks or raises does
    assert closed.is_set() and not _alive()


def test_depth_must_be_positive():
    with pytest.raises(ValueError, match="depth must be >= 1"):
        next(prefetched(iter([1]), depth=0))
