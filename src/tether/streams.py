"""Streams: ordered chunks a run's steps write and anyone reads, live, from any process.

``get_writable(namespace=None)`` in a workflow returns a ``StreamHandle``.
Steps write to it (``write``, ``writer()``, ``close()``); the handle is
serializable, so a continuation run that receives it writes to the same
stream. Readers iterate ``run.readable`` or ``get_readable(run_id, ...)``,
sync or async; they wait for new chunks and stop when the stream is closed
(or when its run and every run started from it have ended unclosed).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

from tether import serde
from tether.runtime.context import current_instance
from tether.worlds.base import World
from tether.worlds.records import TERMINAL_STATUSES, RunFilter

DEFAULT_NAMESPACE = "default"
_PAGE = 256


class StreamHandle:
    """A run's stream: steps write chunks to it; it can be passed to other runs."""

    def __init__(self, run_id: str, namespace: str = DEFAULT_NAMESPACE) -> None:
        self.run_id = run_id
        self.namespace = namespace
        self.stream_id = f"{run_id}/{namespace}"

    def __repr__(self) -> str:
        return f"<StreamHandle {self.stream_id}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StreamHandle) and other.stream_id == self.stream_id

    def __hash__(self) -> int:
        return hash(self.stream_id)

    def write(self, chunk: Any) -> None:
        """Append one chunk, durably, visible to readers at once. Call it from a step.

        Steps run at least once: a retried step writes its chunks again.
        """
        self._append([chunk], close=False)

    def close(self) -> None:
        """Close the stream: readers stop after the last chunk; later writes fail."""
        self._append([], close=True)

    @contextlib.contextmanager
    def writer(self) -> Iterator[StreamWriter]:
        """``with stream.writer() as w: w.write(...)``: a writer for the block."""
        yield StreamWriter(self)

    def _append(self, chunks: list[Any], *, close: bool) -> None:
        if current_instance.get() is not None:
            raise RuntimeError(
                f"write to stream {self.stream_id} from a @step: workflow code is replayed, "
                "so its writes would repeat"
            )
        from tether.config import resolve_world

        where = f"chunk of stream {self.stream_id}"
        texts = [serde.dumps(chunk, where=where) for chunk in chunks]
        resolve_world().append_chunks(self.stream_id, self.run_id, self.namespace, texts, close)


class StreamWriter:
    """Writes chunks to one stream (each write is durable at once)."""

    def __init__(self, stream: StreamHandle) -> None:
        self.stream = stream

    def write(self, chunk: Any) -> None:
        """Append one chunk."""
        self.stream.write(chunk)


def get_writable(namespace: str | None = None) -> StreamHandle:
    """The run's stream named ``namespace`` (default ``"default"``). Call it in a workflow."""
    instance = current_instance.get()
    if instance is None:
        raise RuntimeError("get_writable() is called inside a @workflow; pass the handle to steps")
    return StreamHandle(instance.run_id, namespace or DEFAULT_NAMESPACE)


def get_readable(
    run_id: str,
    namespace: str | None = None,
    start_index: int = 0,
    *,
    world: World | str | None = None,
) -> Readable:
    """Read the stream ``namespace`` of ``run_id`` from ``start_index`` (negative: from the end)."""
    from tether.config import resolve_world

    return Readable(resolve_world(world), run_id, namespace or DEFAULT_NAMESPACE, start_index)


class Readable:
    """The chunks of one stream, live: iterate with ``for`` or ``async for``."""

    def __init__(self, world: World, run_id: str, namespace: str, start_index: int = 0) -> None:
        self._world = world
        self.run_id = run_id
        self.namespace = namespace
        self.stream_id = f"{run_id}/{namespace}"
        self.start_index = start_index

    def __iter__(self) -> Iterator[Any]:
        with self._world.watch() as changed:
            position = self.start_index
            while True:
                chunks, ended = self._page(position)
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
        if len(chunks) == _PAGE:
            return chunks, False
        if stream is not None and stream.closed:
            return chunks, True
        return chunks, not chunks and not self._writers_active()

    def _writers_active(self) -> bool:
        """Whether the stream's run, or any run started from it, can still write."""
        root = self._world.get_run(self.run_id)
        if root is not None and root.status not in TERMINAL_STATUSES:
            return True
        frontier = [self.run_id]  # parent links form a tree: each run is visited once
        while frontier:
            filters = RunFilter(parent_run_id=frontier.pop(), limit=1000)
            for child in self._world.list_runs(filters):
                if child.status not in TERMINAL_STATUSES:
                    return True
                frontier.append(child.run_id)
        return False


serde.register_type(
    StreamHandle,
    "stream",
    encode=lambda handle: [handle.run_id, handle.namespace],
    decode=lambda value: StreamHandle(value[0], value[1]),
)
