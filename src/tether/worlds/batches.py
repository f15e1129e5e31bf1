"""What the two group-commit writers share: taking batches off a queue, answering callers."""

from __future__ import annotations

import asyncio
import logging
import queue
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")

log = logging.getLogger("tether.worlds")

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


def answer(waiter: asyncio.Future[Any], outcome: Outcome) -> None:
    """On the waiter's loop: hand a coroutine what its operation came to.

    A waiter its caller cancelled is left alone: the operation was committed
    all the same.
    """
    if waiter.cancelled():
        return
    result, error = outcome
    if error is None:
        waiter.set_result(result)
    else:
        waiter.set_exception(error)


def call_committed(on_committed: Callable[[Any], None] | None, outcome: Outcome) -> None:
    """Call an operation's ``on_committed`` with its result, if it committed."""
    result, error = outcome
    if on_committed is None or error is not None:
        return
    try:
        on_committed(result)
    except Exception:
        log.exception("a commit's callback failed")
