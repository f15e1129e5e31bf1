"""Live pages: one World listener per server process, fanned out to every open page.

The World says when it may have changed (PostgreSQL's NOTIFY, SQLite's
change detection); ``Changes`` turns that into a version number that each
open page's server-sent-event stream waits on. An idle World costs the
server nothing per page: no page polls the database.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from tether.worlds.base import World

#: Pushes to the pages come at most this often, however fast the World commits: each
#: makes every open page render again.
MIN_GAP_SECONDS = 1.0
#: A comment line this often keeps proxies from closing a quiet stream.
KEEPALIVE_SECONDS = 15.0


class Changes:
    """The World's change notifications, for any number of page streams."""

    def __init__(self, world: World) -> None:
        self._world = world
        self._loop: asyncio.AbstractEventLoop | None = None
        self._remove: Callable[[], None] | None = None
        self._pages: set[asyncio.Event] = set()
        self._scheduled = False
        self._ending = False
        #: Goes up by one for each push.
        self.version = 0

    def _start(self) -> None:
        """Listen, once, on the loop of the first page that subscribes."""
        if self._remove is None:
            self._loop = asyncio.get_running_loop()
            self._remove = self._world.add_listener(self._heard)

    def close(self) -> None:
        """Stop listening."""
        if self._remove is not None:
            self._remove()
            self._remove = None
        self._loop, self._scheduled = None, False

    def end(self) -> None:
        """End every page's stream (the server is stopping); call it from any thread."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._end)

    def _end(self) -> None:
        self._ending = True
        for page in self._pages:
            page.set()

    @property
    def pages(self) -> int:
        """How many page streams are open."""
        return len(self._pages)

    def _heard(self) -> None:
        # From any thread, on every commit: schedule one push, at most one pending.
        loop = self._loop
        if loop is None or self._scheduled:
            return
        if loop.is_closed():  # the server stopped: a later page listens anew
            self.close()
            return
        self._scheduled = True
        loop.call_soon_threadsafe(loop.call_later, MIN_GAP_SECONDS, self._push)

    def _push(self) -> None:
        self._scheduled = False
        self.version += 1
        for page in self._pages:
            page.set()

    async def stream(self, disconnected: Callable[[], Awaitable[bool]]) -> AsyncIterator[str]:
        """Server-sent events: one ``data:`` line per push until the page goes away."""
        self._start()
        changed = asyncio.Event()
        self._pages.add(changed)
        try:
            yield f"retry: 2000\ndata: {self.version}\n\n"
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), KEEPALIVE_SECONDS)
                if self._ending or await disconnected():
                    return
                if changed.is_set():
                    changed.clear()
                    yield f"data: {self.version}\n\n"
                else:
                    yield ": keepalive\n\n"
        finally:
            self._pages.discard(changed)
