"""SQLite's group commit: one writer connection, many operations per transaction."""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from tether.worlds.batches import Outcome, answer, batches, call_committed, resolve
from tether.worlds.operations import Tx

T = TypeVar("T")

Op = Callable[[Tx], Any]


class Writer:
    """Commits queued operations, many per transaction, on one connection.

    Operations come from other threads through a queue served by the writer
    thread, or from an asyncio loop (a worker's) that commits them itself at
    the end of the loop iteration, with no thread hop. A lock keeps one
    transaction at a time on the shared connection. Each operation is handed
    the transaction as ``make_tx`` wraps the connection.
    """

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        make_tx: Callable[[sqlite3.Connection], Tx],
        on_commit: Callable[[asyncio.AbstractEventLoop | None], None],
    ) -> None:
        self._conn = connect()
        self._tx = make_tx(self._conn)
        self._lock = threading.Lock()
        self._on_commit = on_commit
        self._queue: queue.SimpleQueue[_QueuedOp | None] = queue.SimpleQueue()
        self._loop_batches: dict[asyncio.AbstractEventLoop, list[_LoopOp]] = {}
        self._thread = threading.Thread(target=self._run, name="tether-sqlite-writer", daemon=True)
        self._thread.start()

    def submit(self, op: Callable[[Tx], T]) -> Future[T]:
        """Queue ``op`` for the writer thread; the future resolves once it is committed.

        The future cannot be cancelled: the writer thread must be able to resolve it.
        """
        future: Future[T] = Future()
        future.set_running_or_notify_cancel()
        self._queue.put((op, future))
        return future

    async def run_on_loop(
        self, op: Callable[[Tx], T], on_committed: Callable[[T], None] | None = None
    ) -> T:
        """Commit ``op`` on the calling loop, with everything else queued this iteration.

        ``on_committed`` is called with its result once committed, even if the
        caller stopped waiting meanwhile.
        """
        loop = asyncio.get_running_loop()
        batch = self._loop_batches.get(loop)
        if batch is None:
            batch = self._loop_batches[loop] = []
            loop.call_soon(self._flush_loop, loop)
        future: asyncio.Future[T] = loop.create_future()
        batch.append((op, future, on_committed))
        return await future

    def stop(self) -> None:
        """Finish the queued batches and stop the writer thread."""
        self._queue.put(None)
        self._thread.join(timeout=5)
        with self._lock:
            self._conn.close()

    def data_version(self) -> int:
        """The writer connection's ``PRAGMA data_version``: it moves when others commit."""
        with self._lock:
            return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    def _run(self) -> None:
        for batch in batches(self._queue):
            outcomes = self._execute([op for op, _ in batch], None)
            for (_, future), outcome in zip(batch, outcomes, strict=True):
                resolve(future, outcome)

    def _flush_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        batch = self._loop_batches.pop(loop, [])
        outcomes = self._execute([op for op, _, _ in batch], loop)
        for (_, future, on_committed), outcome in zip(batch, outcomes, strict=True):
            call_committed(on_committed, outcome)
            answer(future, outcome)

    def _execute(self, ops: list[Op], origin: asyncio.AbstractEventLoop | None) -> list[Outcome]:
        """Commit ``ops`` in one transaction; if any fails, commit each alone.

        Operations rarely fail, so the common case pays for no savepoints.
        """
        outcomes: list[Outcome] = []
        with self._lock:
            try:
                outcomes = [(result, None) for result in self._transaction(ops)]
            except Exception as exc:
                if len(ops) == 1:
                    outcomes = [(None, exc)]
                else:
                    for op in ops:
                        try:
                            (result,) = self._transaction([op])
                        except Exception as alone:
                            outcomes.append((None, alone))
                        else:
                            outcomes.append((result, None))
        self._on_commit(origin)
        return outcomes

    def _transaction(self, ops: list[Op]) -> list[Any]:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            results = [op(self._tx) for op in ops]
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return results


_QueuedOp = tuple[Op, Future[Any]]
_LoopOp = tuple[Op, "asyncio.Future[Any]", Callable[[Any], None] | None]
