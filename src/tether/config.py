"""Process configuration: which World this process uses, and which workers run in it.

``configure`` chooses the World by URL; ``resolve_world`` opens it (once per
URL, shared by the whole process); ``close`` closes what was opened. A
worker running in this process announces itself here, so that ``start()``
can hand it new runs without this module knowing what a worker is.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from contextvars import ContextVar
from typing import Protocol

from tether.worlds import DEFAULT_WORLD_URL, open_world
from tether.worlds.base import World
from tether.worlds.records import NewRun, RunRecord

_configured_url: str | None = None
_worlds: dict[str, World] = {}
_worlds_lock = threading.Lock()
#: The World of the step running in this context: its child runs and stream chunks go there.
_step_world: ContextVar[str | None] = ContextVar("tether_step_world", default=None)


def configure(world: str | None = None) -> None:
    """Choose the World this process uses: a URL such as ``sqlite:///.tether/tether.db``.

    Without a call (or with ``None``), ``$TETHER_WORLD`` is used, else that
    embedded default.
    """
    global _configured_url
    _configured_url = world


def configured_url() -> str | None:
    """What ``configure`` was last given (``None``: not called, or called with ``None``)."""
    return _configured_url


def world_url() -> str:
    """The URL of the configured World (``configure``, ``$TETHER_WORLD``, or the default)."""
    return _configured_url or os.environ.get("TETHER_WORLD") or DEFAULT_WORLD_URL


def resolve_world(world: World | str | None = None) -> World:
    """The World to use: the one given, one opened from a URL, or the configured one.

    Inside a step the default is the World of the step's worker. Worlds
    opened from a URL are shared by the whole process until ``close``.
    """
    if isinstance(world, World):
        return world
    url = world or _step_world.get() or world_url()
    with _worlds_lock:
        found = _worlds.get(url)
        if found is None:
            found = _worlds[url] = open_world(url)
        return found


def adopt(world: World) -> None:
    """Serve ``world`` for its URL in this process (``tether.testing``'s World, whose clock
    is virtual): ``resolve_world`` then answers it instead of opening another."""
    with _worlds_lock:
        _worlds[world.url] = world


def is_open(url: str) -> bool:
    """Whether this process holds an open World for ``url`` (``resolve_world`` opened it)."""
    with _worlds_lock:
        return url in _worlds


def close(world: str | None = None) -> None:
    """Close the Worlds this process opened by URL (or only the one at ``world``).

    Their connections and threads are released; a later ``resolve_world``
    opens a fresh one.
    """
    with _worlds_lock:
        urls = list(_worlds) if world is None else [world]
        closing = [_worlds.pop(url) for url in urls if url in _worlds]
    for opened in closing:
        opened.close()


@contextlib.contextmanager
def step_world(url: str) -> Iterator[None]:
    """Within the block, ``resolve_world()`` answers the World at ``url`` (a step's worker's)."""
    token = _step_world.set(url)
    try:
        yield
    finally:
        _step_world.reset(token)


class LocalWorker(Protocol):
    """What ``start()`` needs of a worker running in this process."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop the worker runs on, while it runs."""
        ...

    def start_local(self, run: NewRun) -> Future[RunRecord] | None:
        """Create the run and its first activation on the worker, or ``None`` if it cannot."""
        ...


_local_workers: dict[tuple[str, str], LocalWorker] = {}
_local_lock = threading.Lock()


def announce_worker(world_url: str, deployment_id: str, worker: LocalWorker) -> None:
    """Record that ``worker`` serves ``deployment_id`` on ``world_url`` in this process."""
    with _local_lock:
        _local_workers.setdefault((world_url, deployment_id), worker)


def withdraw_worker(world_url: str, deployment_id: str, worker: LocalWorker) -> None:
    """Undo ``announce_worker`` (the worker is stopping)."""
    with _local_lock:
        if _local_workers.get((world_url, deployment_id)) is worker:
            del _local_workers[(world_url, deployment_id)]


def local_worker(world_url: str, deployment_id: str) -> LocalWorker | None:
    """The in-process worker serving ``deployment_id`` on ``world_url``, if one runs."""
    with _local_lock:
        return _local_workers.get((world_url, deployment_id))


def on_worker_loop() -> bool:
    """Whether the calling code runs on a worker's event loop (blocking it would stall it)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return False
    with _local_lock:
        return any(worker.loop is loop for worker in _local_workers.values())
