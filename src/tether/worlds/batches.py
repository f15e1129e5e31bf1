"""How a writer thread takes its next batch off its queue: what group commit shares."""

from __future__ import annotations

import queue
from typing import TypeVar

T = TypeVar("T")

#: The most operations one transaction commits.
BATCH_LIMIT = 512


def next_batch(source: queue.SimpleQueue[T | None]) -> tuple[list[T], bool]:
    """Wait for an item, then take whatever else is queued, up to ``BATCH_LIMIT``.

    Returns the batch and whether ``None`` (stop) was met; the batch is
    empty when ``None`` came first.
    """
    item = source.get()
    if item is None:
        return [], True
    batch = [item]
    while len(batch) < BATCH_LIMIT:
        try:
            more = source.get_nowait()
        except queue.Empty:
            break
        if more is None:
            return batch, True
        batch.append(more)
    return batch, False
