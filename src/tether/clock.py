"""The clock the engine and the Worlds read: real time by default, stepped by tests.

Everything that stamps an event, sets a deadline or decides that a lease has
expired asks a ``Clock`` instead of calling ``time.time()``, so that a test
can move time forward instead of waiting for it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Protocol

from tether.errors import InvalidValueError


class Clock(Protocol):
    """Wall-clock time in epoch seconds, and a way to wait for it to pass."""

    def time(self) -> float:
        """The current time, in seconds since the epoch."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Return once ``seconds`` have passed on this clock."""
        ...

    async def sleep_until(self, deadline: float) -> None:
        """Return once this clock reads ``deadline`` or later (at once if it does already).

        Waiting for a time, not a duration, leaves no gap between reading the
        clock and starting to wait in which a stepped clock could move unseen.
        """
        ...


class SystemClock:
    """The real clock: ``time.time()`` and ``asyncio.sleep``."""

    def time(self) -> float:
        """The current time, in seconds since the epoch."""
        return time.time()

    async def sleep(self, seconds: float) -> None:
        """Sleep for real."""
        await asyncio.sleep(seconds)

    async def sleep_until(self, deadline: float) -> None:
        """Sleep for real until ``deadline``."""
        await asyncio.sleep(max(deadline - time.time(), 0.0))


SYSTEM_CLOCK: Clock = SystemClock()


class ManualClock:
    """A clock that moves only when told to (``advance``): tests step time instead of waiting.

    Thread-safe: ``advance`` may be called from any thread, and wakes every
    ``sleep`` whose time has come, on whatever event loop it waits.
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._lock = threading.Lock()
        self._sleepers: list[tuple[float, asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def time(self) -> float:
        """The clock's current time."""
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds`` (>= 0) and wake the sleeps now over."""
        if seconds < 0:
            raise InvalidValueError(f"a clock cannot go back: advance({seconds!r})")
        with self._lock:
            self._now += seconds
            due = [s for s in self._sleepers if s[0] <= self._now]
            self._sleepers = [s for s in self._sleepers if s[0] > self._now]
        for _, loop, future in due:
            if not loop.is_closed():
                loop.call_soon_threadsafe(_resolve, future)

    async def sleep(self, seconds: float) -> None:
        """Return once the clock has been advanced by ``seconds`` from now."""
        await self.sleep_until(self.time() + max(seconds, 0.0))

    async def sleep_until(self, deadline: float) -> None:
        """Return once the clock has been advanced to ``deadline`` (at once if it is there)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if deadline <= self._now:
                return
            self._sleepers.append((deadline, loop, future))
        try:
            await future
        finally:
            with self._lock:
                self._sleepers = [s for s in self._sleepers if s[2] is not future]


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
