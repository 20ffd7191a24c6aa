"""``prefetched``: a background thread makes the next batches while the model computes.

Both trainers use it (the head trainer on cached features, ``extract.training`` on cached
clips): the producer runs the source iterator in one thread, at most ``depth`` batches
ahead, so the training loop waits only for what the step did not hide::

    for batch in prefetched(source, depth=2):   # source runs in the "prefetch" thread
        step(batch)                              # torch releases the GIL while it computes

The order of the batches is the source's; an exception in the producer is raised in the
consumer; leaving the loop early (``break``, an exception, ``close()``) stops the producer
and closes the source.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import TypeVar

T = TypeVar("T")


def prefetched(batches: Iterator[T], depth: int = 2) -> Iterator[T]:
    """Yield ``batches`` while a background thread produces the next ``depth`` of them.

    Args:
        batches: the source; it runs in the producer thread only (it needs no locks as long as
            nothing else touches it meanwhile).
        depth: batches made ahead (>= 1; the producer holds one more while it waits to hand it over).
    """
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: tuple[str, object]) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for batch in batches:
                if not put(("batch", batch)):
                    return
            put(("end", None))
        except Exception as exc:  # noqa: BLE001 -- handed to the consumer, which raises it
            put(("error", exc))
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()

    worker = threading.Thread(target=produce, name="prefetch", daemon=True)
    worker.start()
    try:
        while True:
            kind, item = q.get()
            if kind == "end":
                return
            if kind == "error":
                raise item  # type: ignore[misc]
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        worker.join()
