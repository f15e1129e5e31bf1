"""What the two group-commit writers share: taking batches off a queue, answering callers."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")

#: The most operations one transaction commits.
BATCH_LIMIT = 512

#: What an operation came to: its result, or the error it raised.
Outcome = tuple[Any, BaseException | None]


def batches(source: queue.SimpleQueue[T | None]) -> Iterator[list[T]]:
    """Each batch: an item waited for, then whatever else is queued, up to ``BATCH_LIMIT``.

    Ends at ``None`` (stop), after a last batch of what was queued before it.
    """
    while True:
        item = source.get()
        if item is None:
            return
        batch = [item]
        while len(batch) < BATCH_LIMIT:
            try:
                more = source.get_nowait()
            except queue.Empty:
                break
            if more is None:
                yield batch
                return
            batch.append(more)
        yield batch


def resolve(future: Future[Any], outcome: Outcome) -> None:
    """Hand a caller waiting on ``future`` what its operation came to."""
    result, error = outcome
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)
