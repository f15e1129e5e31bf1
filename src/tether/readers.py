"""Stream readers: the chunks of a run's stream, live, from any process.

Readers iterate ``run.readable`` or ``get_readable(run_id, ...)``, sync or
async; they wait for new chunks and stop when the stream is closed (or when
its run and every run started from it have ended unclosed). A reader of a
run that ``tether deployments upgrade`` moved follows it to its replacement.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

from tether import serde
from tether.config import resolve_world
from tether.streams import DEFAULT_NAMESPACE
from tether.worlds.base import World
from tether.worlds.records import TERMINAL_STATUSES, RunFilter, RunRecord

_PAGE = 256


def get_readable(
    run_id: str,
    namespace: str | None = None,
    start_index: int = 0,
    *,
    world: World | str | None = None,
) -> Readable:
    """Read the stream ``namespace`` of ``run_id`` from ``start_index`` (negative: from the end)."""
    return Readable(resolve_world(world), run_id, namespace or DEFAULT_NAMESPACE, start_index)


def upgraded_to(world: World, record: RunRecord) -> str | None:
    """The run that replaced ``record`` when an upgrade moved it, else ``None``."""
    if record.status != "cancelled":
        return None
    last = world.list_events(record.run_id, after_seq=record.last_seq - 1)
    moved = (last[-1].attrs or {}).get("upgraded_to") if last else None
    return moved if isinstance(moved, str) else None


class Readable:
    """The chunks of one stream, live: iterate with ``for`` or ``async for``."""

    def __init__(self, world: World, run_id: str, namespace: str, start_index: int = 0) -> None:
        self._world = world
        self.run_id = run_id
        self.namespace = namespace
        self.stream_id = f"{run_id}/{namespace}"
        self.start_index = start_index
        #: Where to go on after following a moved run (``_writers_active``).
        self._restart: int | None = None

    def __iter__(self) -> Iterator[Any]:
        with self._world.watch() as changed:
            position = self.start_index
            while True:
                chunks, ended = self._page(position)
                if self._restart is not None:  # it followed a moved run
                    position, self._restart = self._restart, None
                for chunk in chunks:
                    yield serde.loads(chunk.data)
                    position = chunk.index + 1
                if ended:
                    return
                if not chunks:
                    changed(1.0)

    async def __aiter__(self) -> AsyncIterator[Any]:
        async with self._world.changes() as changed:
            position = self.start_index
            while True:
                chunks, ended = await asyncio.to_thread(self._page, position)
                if self._restart is not None:  # it followed a moved run
                    position, self._restart = self._restart, None
                for chunk in chunks:
                    yield serde.loads(chunk.data)
                    position = chunk.index + 1
                if ended:
                    return
                if not chunks:
                    await changed(1.0)

    def _page(self, position: int) -> tuple[list[Any], bool]:
        """The next chunks, and whether the stream has ended after them."""
        chunks, stream = self._world.read_chunks(self.stream_id, position, _PAGE)
        closed = stream is not None and stream.closed
        if chunks or closed:
            return chunks, closed and len(chunks) < _PAGE
        followed = self.stream_id
        if self._writers_active():
            if self.stream_id != followed:  # the run moved: read on in its replacement
                self._restart = self._kept(position)
                return self._page(self._restart)
            return chunks, False
        # The writers have ended, perhaps after the read above: what they wrote before
        # ending is there now, so one more read decides.
        chunks, _ = self._world.read_chunks(self.stream_id, position, _PAGE)
        return chunks, not chunks

    def _kept(self, position: int) -> int:
        """Where to read on in the stream of the run that replaced the one read so far.

        Its stream starts with the chunks the kept steps wrote (copies, older
        than the replacement); a reader that had read past them read chunks of
        steps the replacement runs again, and reads those steps' chunks again,
        as after a retry, rather than miss them.
        """
        fork = self._world.get_run(self.run_id)
        if fork is None or position <= 0:
            return max(position, 0)
        chunks, _ = self._world.read_chunks(self.stream_id, 0, position)
        kept = 0
        for chunk in chunks:
            if chunk.created_at >= fork.created_at:
                break
            kept += 1
        return min(position, kept)

    def _writers_active(self) -> bool:
        """Whether the stream's run, or any run started from it, can still write.

        A run an upgrade moved is followed: the reader goes on, at the same
        index, in the stream of the run that replaced it, which starts with
        the chunks the moved run's kept steps wrote.
        """
        root = self._world.get_run(self.run_id)
        if root is not None and root.status not in TERMINAL_STATUSES:
            return True
        moved = upgraded_to(self._world, root) if root is not None else None
        if moved is not None:
            self.run_id, self.stream_id = moved, f"{moved}/{self.namespace}"
            return True
        frontier = [self.run_id]  # parent links form a tree: each run is visited once
        while frontier:
            filters = RunFilter(parent_run_id=frontier.pop(), limit=1000)
            for child in self._world.list_runs(filters):
                if child.status not in TERMINAL_STATUSES:
                    return True
                frontier.append(child.run_id)
        return False
