"""The embedded World: one SQLite file (WAL), shared by the processes of one machine.

Writes go through one writer thread per process that groups whatever is
queued into a single transaction (group commit), so many runs' events cost
one fsync. Reads use a connection per thread. Commits by other processes are
noticed through ``PRAGMA data_version``, which changes when another
connection commits.
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

from tether.errors import HookNotFoundError
from tether.worlds import schema
from tether.worlds.base import World
from tether.worlds.records import (
    TERMINAL_STATUSES,
    Activation,
    CancelResult,
    Chunk,
    DeploymentRecord,
    DeploymentStatus,
    EventRecord,
    HookRecord,
    NewRun,
    RunFilter,
    RunRecord,
    StepOutcome,
    StepRecord,
    StreamRecord,
    Task,
    WaitRecord,
    WorkerInfo,
)

log = logging.getLogger("tether.sqlite")
T = TypeVar("T")

_BATCH_LIMIT = 512
_WATCH_INTERVAL = 0.005
_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")


def path_from_url(url: str) -> tuple[Path, dict[str, str]]:
    """Split ``sqlite:///relative.db`` or ``sqlite:////abs.db?synchronous=NORMAL``."""
    parts = urlsplit(url)
    if parts.scheme != "sqlite" or not parts.path.startswith("/") or parts.path == "/":
        raise ValueError(
            f"invalid SQLite world URL {url!r}: expected sqlite:///relative/path.db "
            "or sqlite:////absolute/path.db"
        )
    options = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    return Path(parts.path[1:]), options


class SqliteWorld(World):
    """A World on one SQLite file; several processes may open the same file."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.path, options = path_from_url(url)
        self._synchronous = options.get("synchronous", "FULL").upper()
        if self._synchronous not in _SYNCHRONOUS:
            raise ValueError(
                f"invalid synchronous={self._synchronous!r} in {url!r}: expected one of "
                + ", ".join(_SYNCHRONOUS)
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._listeners: list[tuple[Callable[[], None], asyncio.AbstractEventLoop | None]] = []
        self._closed = False
        self._migrate()
        self._writer = _Writer(self._connect, self._notify)
        self._watcher: threading.Thread | None = None
        self._watch_lock = threading.Lock()

    # -- runs -------------------------------------------------------------

    def create_run(self, run: NewRun, activation: Activation | None = None) -> RunRecord:
        return self._write(lambda conn: _create_run(conn, run, activation))

    async def create_run_async(
        self,
        run: NewRun,
        activation: Activation | None = None,
        on_created: Callable[[RunRecord], None] | None = None,
    ) -> RunRecord:
        return await self._write_async(lambda conn: _create_run(conn, run, activation), on_created)

    def get_run(self, run_id: str) -> RunRecord | None:
        row = self._read().execute(_RUN_SELECT + " WHERE run_id = ?", (run_id,)).fetchone()
        return RunRecord(*row) if row else None

    def list_runs(self, filters: RunFilter) -> list[RunRecord]:
        sql, params = schema.run_query(_RUN_SELECT, filters, placeholder="?")
        return [RunRecord(*row) for row in self._read().execute(sql, params)]

    def list_events(self, run_id: str, after_seq: int = 0) -> list[EventRecord]:
        rows = self._read().execute(
            "SELECT run_id, seq, type, correlation_id, name, payload, attrs, created_at"
            " FROM events WHERE run_id = ? AND seq > ? ORDER BY seq",
            (run_id, after_seq),
        )
        return [_event_record(row) for row in rows]

    def list_steps(self, run_id: str) -> list[StepRecord]:
        rows = self._read().execute(
            "SELECT run_id, step_id, step_name, status, attempt, input, output, error,"
            " created_at, started_at, completed_at, retry_at FROM steps WHERE run_id = ?"
            " ORDER BY created_at, CAST(step_id AS INTEGER)",
            (run_id,),
        )
        return [StepRecord(*row) for row in rows]

    def list_waits(self, run_id: str) -> list[WaitRecord]:
        rows = self._read().execute(
            "SELECT run_id, wait_id, status, resume_at, created_at, completed_at"
            " FROM waits WHERE run_id = ? ORDER BY created_at, CAST(wait_id AS INTEGER)",
            (run_id,),
        )
        return [WaitRecord(*row) for row in rows]

    def cancel_runs(self, run_ids: Sequence[str]) -> CancelResult:
        return self._write(lambda conn: _cancel_runs(conn, list(run_ids)))

    def wake_sleeps(self, run_id: str) -> int:
        return self._write(lambda conn: _wake_sleeps(conn, run_id))

    # -- hooks and streams ------------------------------------------------

    def resume_hook(self, token: str, payload: str, *, webhook_only: bool = False) -> str:
        run_id = self._write(lambda conn: _resume_hook(conn, token, payload, webhook_only))
        if run_id is None:
            kind = "webhook" if webhook_only else "hook"
            raise HookNotFoundError(
                f"no active {kind} has token {token!r}: it never existed or its run has ended"
            )
        return run_id

    def get_hook(self, token: str) -> HookRecord | None:
        row = (
            self._read()
            .execute(_HOOK_SELECT + " WHERE token = ? ORDER BY created_at DESC LIMIT 1", (token,))
            .fetchone()
        )
        return _hook_record(row) if row else None

    def list_hooks(self, run_id: str | None = None, status: str | None = None) -> list[HookRecord]:
        where, params = _where({"run_id": run_id, "status": status})
        rows = self._read().execute(_HOOK_SELECT + where + " ORDER BY created_at", params)
        return [_hook_record(row) for row in rows]

    def append_chunks(
        self, stream_id: str, run_id: str, namespace: str, chunks: Sequence[str], close: bool
    ) -> int:
        next_index = self._write(
            lambda conn: _append_chunks(conn, stream_id, run_id, namespace, list(chunks), close)
        )
        if next_index is None:
            raise ValueError(f"stream {stream_id!r} is closed: nothing more can be written to it")
        return next_index

    def read_chunks(
        self, stream_id: str, start_index: int, limit: int
    ) -> tuple[list[Chunk], StreamRecord | None]:
        conn = self._read()
        row = conn.execute(_STREAM_SELECT + " WHERE stream_id = ?", (stream_id,)).fetchone()
        stream = _stream_record(row) if row else None
        if stream is None:
            return [], None
        start = max(0, stream.next_index + start_index) if start_index < 0 else start_index
        rows = conn.execute(
            "SELECT idx, data, created_at FROM stream_chunks WHERE stream_id = ? AND idx >= ?"
            " ORDER BY idx LIMIT ?",
            (stream_id, start, limit),
        )
        return [Chunk(*r) for r in rows], stream

    def list_streams(self, run_id: str | None = None) -> list[StreamRecord]:
        where, params = _where({"run_id": run_id})
        rows = self._read().execute(_STREAM_SELECT + where + " ORDER BY created_at", params)
        return [_stream_record(row) for row in rows]

    # -- worker side ------------------------------------------------------

    def claim_tasks(
        self,
        deployment_id: str,
        worker_id: str,
        limit: int,
        lease_seconds: float,
        ahead: float = 0.0,
    ) -> list[Task]:
        return self._write(
            lambda conn: _claim_tasks(conn, deployment_id, worker_id, limit, lease_seconds, ahead)
        )

    def next_due(self, deployment_id: str) -> float | None:
        row = (
            self._read()
            .execute(
                "SELECT MIN(available_at) FROM tasks WHERE deployment_id = ?", (deployment_id,)
            )
            .fetchone()
        )
        return float(row[0]) if row and row[0] is not None else None

    def has_due(self, deployment_id: str, now: float) -> bool:
        row = (
            self._read()
            .execute(
                "SELECT 1 FROM tasks WHERE deployment_id = ? AND available_at <= ? LIMIT 1",
                (deployment_id, now),
            )
            .fetchone()
        )
        return row is not None

    async def claim_tasks_async(
        self,
        deployment_id: str,
        worker_id: str,
        limit: int,
        lease_seconds: float,
        ahead: float = 0.0,
    ) -> list[Task]:
        return await self._write_async(
            lambda conn: _claim_tasks(conn, deployment_id, worker_id, limit, lease_seconds, ahead)
        )

    async def claim_due_async(
        self,
        deployment_id: str,
        worker_id: str,
        limit: int,
        lease_seconds: float,
        ahead: float = 0.0,
    ) -> tuple[list[Task], float | None]:
        # The base round, with the next round's time read as PostgreSQL's is: half a
        # window before a workflow task that may be claimed ahead.
        now = time.time()
        first = self._first_due(deployment_id, ahead)
        tasks: list[Task] = []
        if first is not None and first <= now:
            tasks = await self.claim_tasks_async(
                deployment_id, worker_id, limit, lease_seconds, ahead
            )
            if len(tasks) >= limit:
                return tasks, now
            first = self._first_due(deployment_id, ahead)
        return tasks, first

    def _first_due(self, deployment_id: str, ahead: float) -> float | None:
        """When a claim round with ``ahead`` next finds work (``claim_due_async``)."""
        row = self._read().execute(schema.first_due_query("?"), (deployment_id,)).fetchone()
        return schema.claim_again_at(row, ahead)

    def commit_activation(self, activation: Activation) -> bool:
        return self._write(lambda conn: _commit_activation(conn, activation))

    async def commit_activation_async(self, activation: Activation) -> bool:
        return await self._write_async(lambda conn: _commit_activation(conn, activation))

    def finish_step(self, outcome: StepOutcome, activation: Activation | None = None) -> bool:
        return self._write(lambda conn: _finish_step(conn, outcome, activation))

    async def finish_step_async(
        self, outcome: StepOutcome, activation: Activation | None = None
    ) -> bool:
        return await self._write_async(lambda conn: _finish_step(conn, outcome, activation))

    def heartbeat(self, worker_id: str, lease_seconds: float) -> None:
        def beat(conn: sqlite3.Connection) -> None:
            now = time.time()
            conn.execute(
                "UPDATE workers SET heartbeat_at = ? WHERE worker_id = ?", (now, worker_id)
            )
            conn.execute(
                "UPDATE tasks SET available_at = ? WHERE lease_owner = ?",
                (now + lease_seconds, worker_id),
            )

        self._write(beat)

    def release_leases(self, worker_id: str) -> None:
        self._write(lambda conn: _release_leases(conn, worker_id))

    def release_task(self, run_id: str, step_id: str, worker_id: str, delay: float) -> None:
        self._write(
            lambda conn: conn.execute(
                "UPDATE tasks SET lease_owner = NULL, available_at = ?"
                " WHERE run_id = ? AND step_id = ? AND lease_owner = ?",
                (time.time() + delay, run_id, step_id, worker_id),
            )
        )

    # Reads of a local file take microseconds: the worker does them inline.

    async def get_run_async(self, run_id: str) -> RunRecord | None:
        return self.get_run(run_id)

    async def list_events_async(self, run_id: str, after_seq: int = 0) -> list[EventRecord]:
        return self.list_events(run_id, after_seq)

    async def has_due_async(self, deployment_id: str, now: float) -> bool:
        return self.has_due(deployment_id, now)

    async def next_due_async(self, deployment_id: str) -> float | None:
        return self.next_due(deployment_id)

    # -- deployments ----------------------------------------------------------

    def register_worker(self, worker: WorkerInfo, manifest: dict[str, Any]) -> None:
        self._write(lambda conn: _register_worker(conn, worker, manifest))

    def unregister_worker(self, worker_id: str) -> None:
        def unregister(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE workers SET stopped_at = ? WHERE worker_id = ?", (time.time(), worker_id)
            )
            _release_leases(conn, worker_id)

        self._write(unregister)

    def get_deployment(self, deployment_id: str) -> DeploymentRecord | None:
        row = (
            self._read()
            .execute(_DEPLOYMENT_SELECT + " WHERE deployment_id = ?", (deployment_id,))
            .fetchone()
        )
        return _deployment_record(row) if row else None

    def latest_deployment(self, environment: str) -> DeploymentRecord | None:
        row = (
            self._read()
            .execute(
                _DEPLOYMENT_SELECT + " WHERE environment = ? ORDER BY created_at DESC LIMIT 1",
                (environment,),
            )
            .fetchone()
        )
        return _deployment_record(row) if row else None

    def list_deployments(
        self, environment: str | None, live_within: float
    ) -> list[DeploymentStatus]:
        conn = self._read()
        in_flight = dict(
            conn.execute(
                "SELECT deployment_id, COUNT(*) FROM runs"
                " WHERE status IN ('pending', 'running') GROUP BY deployment_id"
            ).fetchall()
        )
        workers = {
            row[0]: (row[1], row[2])
            for row in conn.execute(
                "SELECT deployment_id,"
                " SUM(stopped_at IS NULL AND heartbeat_at >= ?), MAX(heartbeat_at)"
                " FROM workers GROUP BY deployment_id",
                (time.time() - live_within,),
            )
        }
        rows = conn.execute(
            "SELECT deployment_id, environment, created_at FROM deployments ORDER BY created_at"
        ).fetchall()
        known = {row[0] for row in rows}
        # Runs can be pinned to a deployment no worker ever registered: show those too.
        for deployment_id in sorted(set(in_flight) - known):
            first = conn.execute(
                "SELECT MIN(created_at) FROM runs WHERE deployment_id = ?", (deployment_id,)
            ).fetchone()[0]
            rows.append((deployment_id, "", first))
        statuses = [
            DeploymentStatus(
                deployment_id=deployment_id,
                environment=env,
                created_at=created_at,
                in_flight=in_flight.get(deployment_id, 0),
                live_workers=int(workers.get(deployment_id, (0, None))[0] or 0),
                last_heartbeat_at=workers.get(deployment_id, (0, None))[1],
            )
            for deployment_id, env, created_at in rows
            if environment is None or env in (environment, "")
        ]
        return sorted(statuses, key=lambda d: d.created_at, reverse=True)

    # -- wake-ups ---------------------------------------------------------

    def add_listener(
        self,
        callback: Callable[[], None],
        *,
        skip_own_loop: bool = False,
        work_only: bool = False,
        deployment_id: str | None = None,
    ) -> Callable[[], None]:
        # SQLite cannot tell what another process's commit did: work_only changes nothing.
        entry = (callback, asyncio.get_running_loop() if skip_own_loop else None)
        self._listeners.append(entry)
        self._start_watcher()

        def remove() -> None:
            if entry in self._listeners:
                self._listeners.remove(entry)

        return remove

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._writer.stop()
        if self._watcher is not None:
            self._watcher.join(timeout=1)

    # -- internals --------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=30.0
        )
        conn.execute("PRAGMA page_size=1024")  # before WAL: only a new file takes it
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        conn.execute("PRAGMA busy_timeout=30000")
        return conn

    def _read(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
        return conn

    def _write(self, op: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise RuntimeError(f"the world {self.url} is closed")
        return self._writer.submit(op).result()

    async def _write_async(
        self, op: Callable[[sqlite3.Connection], T], on_committed: Callable[[T], None] | None = None
    ) -> T:
        if self._closed:
            raise RuntimeError(f"the world {self.url} is closed")
        return await self._writer.run_on_loop(op, on_committed)

    def _migrate(self) -> None:
        conn = self._connect()
        try:
            # Small pages: a commit touches a few rows in several B-trees, and every
            # page it dirties is written to the WAL and synced. Takes effect only on
            # a new, empty database file.
            conn.execute("PRAGMA page_size=1024")
            conn.execute("BEGIN IMMEDIATE")  # the lock: one process migrates at a time
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations"
                " (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)"
            )
            applied = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
            for version, statements in schema.migrations("sqlite"):
                if version in applied:
                    continue
                for statement in statements:
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                    (version, time.time()),
                )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        finally:
            conn.close()

    def _notify(self, origin: asyncio.AbstractEventLoop | None = None) -> None:
        for callback, own_loop in list(self._listeners):
            if own_loop is None or own_loop is not origin:
                callback()

    def _start_watcher(self) -> None:
        with self._watch_lock:
            if self._watcher is None and not self._closed:
                self._watcher = threading.Thread(
                    target=self._watch, name="tether-sqlite-watch", daemon=True
                )
                self._watcher.start()

    def _watch(self) -> None:
        """Notice commits of other processes (and other World instances).

        ``data_version`` of a connection moves when another connection
        commits; read on the writer's own connection, this process's commits
        (already announced by ``_notify``) do not move it.
        """
        last = self._writer.data_version()
        while not self._closed:
            time.sleep(_WATCH_INTERVAL)
            try:
                version = self._writer.data_version()
            except sqlite3.ProgrammingError:
                return  # closed meanwhile
            if version != last:
                last = version
                self._notify(None)


class _Writer:
    """Commits queued operations, many per transaction, on one connection.

    Operations come from other threads through a queue served by the writer
    thread, or from an asyncio loop (a worker's) that commits them itself at
    the end of the loop iteration, with no thread hop. A lock keeps one
    transaction at a time on the shared connection.
    """

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        on_commit: Callable[[asyncio.AbstractEventLoop | None], None],
    ) -> None:
        self._conn = connect()
        self._lock = threading.Lock()
        self._on_commit = on_commit
        self._queue: queue.SimpleQueue[_QueuedOp | None] = queue.SimpleQueue()
        self._loop_batches: dict[asyncio.AbstractEventLoop, list[_LoopOp]] = {}
        self._thread = threading.Thread(target=self._run, name="tether-sqlite-writer", daemon=True)
        self._thread.start()

    def submit(self, op: Callable[[sqlite3.Connection], T]) -> Future[T]:
        """Queue ``op`` for the writer thread; the future resolves once it is committed.

        The future cannot be cancelled: the writer thread must be able to resolve it.
        """
        future: Future[T] = Future()
        future.set_running_or_notify_cancel()
        self._queue.put((op, future))
        return future

    async def run_on_loop(
        self, op: Callable[[sqlite3.Connection], T], on_committed: Callable[[T], None] | None = None
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
        self._queue.put(None)
        self._thread.join(timeout=5)
        with self._lock:
            self._conn.close()

    def data_version(self) -> int:
        """The writer connection's ``PRAGMA data_version``: it moves when others commit."""
        with self._lock:
            return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    def _run(self) -> None:
        stopping = False
        while not stopping:
            item = self._queue.get()
            if item is None:
                break
            batch = [item]
            while len(batch) < _BATCH_LIMIT:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stopping = True
                    break
                batch.append(more)
            outcomes = self._execute([op for op, _ in batch], None)
            for (_, future), (result, error) in zip(batch, outcomes, strict=True):
                if error is None:
                    future.set_result(result)
                else:
                    future.set_exception(error)

    def _flush_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        batch = self._loop_batches.pop(loop, [])
        outcomes = self._execute([op for op, _, _ in batch], loop)
        for (_, future, on_committed), (result, error) in zip(batch, outcomes, strict=True):
            if error is None and on_committed is not None:
                try:
                    on_committed(result)
                except Exception:
                    log.exception("a commit's callback failed")
            if future.cancelled():
                continue
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)

    def _execute(
        self,
        ops: list[Callable[[sqlite3.Connection], Any]],
        origin: asyncio.AbstractEventLoop | None,
    ) -> list[tuple[Any, BaseException | None]]:
        """Commit ``ops`` in one transaction; if any fails, commit each alone.

        Operations rarely fail, so the common case pays for no savepoints.
        """
        outcomes: list[tuple[Any, BaseException | None]] = []
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

    def _transaction(self, ops: list[Callable[[sqlite3.Connection], Any]]) -> list[Any]:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            results = [op(conn) for op in ops]
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return results


_QueuedOp = tuple[Callable[[sqlite3.Connection], Any], Future[Any]]
_LoopOp = tuple[
    Callable[[sqlite3.Connection], Any], "asyncio.Future[Any]", Callable[[Any], None] | None
]


# -- operations run inside the writer's transaction --------------------------

_RUN_SELECT = (
    "SELECT run_id, workflow_name, deployment_id, status, input, output, error,"
    " parent_run_id, rerun_of, created_at, started_at, completed_at, last_seq FROM runs"
)


def _create_run(conn: sqlite3.Connection, run: NewRun, activation: Activation | None) -> RunRecord:
    now = run.created_at or time.time()
    conn.execute(
        "INSERT INTO runs (run_id, workflow_name, deployment_id, status, input, parent_run_id,"
        " rerun_of, created_at, last_seq) VALUES (?, ?, ?, 'pending', ?, ?, ?, ?, 1)",
        (
            run.run_id,
            run.workflow_name,
            run.deployment_id,
            run.input,
            run.parent_run_id,
            run.rerun_of,
            now,
        ),
    )
    attrs = {"deployment_id": run.deployment_id}
    if run.parent_run_id:
        attrs["parent_run_id"] = run.parent_run_id
    if run.rerun_of:
        attrs["rerun_of"] = run.rerun_of
    conn.execute(
        "INSERT INTO events (run_id, seq, type, name, payload, attrs, created_at)"
        " VALUES (?, 1, 'run_created', ?, ?, ?, ?)",
        (run.run_id, run.workflow_name, run.input, json.dumps(attrs), now),
    )
    if activation is not None:
        again = _append(conn, run.run_id, run.deployment_id, activation.events, activation)
        if any(e.type == "wait_created" for e in activation.events):
            _schedule_workflow(conn, run.run_id, run.deployment_id)
        if again:
            _queue_workflow(conn, run.run_id, run.deployment_id, time.time())
    else:
        _queue_workflow(conn, run.run_id, run.deployment_id, now)
    return RunRecord(
        run_id=run.run_id,
        workflow_name=run.workflow_name,
        deployment_id=run.deployment_id,
        status="pending",
        input=run.input,
        output=None,
        error=None,
        parent_run_id=run.parent_run_id,
        rerun_of=run.rerun_of,
        created_at=now,
        started_at=None,
        completed_at=None,
        last_seq=1,
    )


def _release_leases(conn: sqlite3.Connection, worker_id: str) -> None:
    conn.execute(
        "UPDATE tasks SET lease_owner = NULL, available_at = ? WHERE lease_owner = ?",
        (time.time(), worker_id),
    )


_DEPLOYMENT_SELECT = "SELECT deployment_id, environment, manifest, created_at FROM deployments"


def _deployment_record(row: tuple[Any, ...]) -> DeploymentRecord:
    return DeploymentRecord(row[0], row[1], json.loads(row[2]), row[3])


def _register_worker(
    conn: sqlite3.Connection, worker: WorkerInfo, manifest: dict[str, Any]
) -> None:
    now = time.time()
    row = conn.execute(
        "SELECT manifest FROM deployments WHERE deployment_id = ?", (worker.deployment_id,)
    ).fetchone()
    if row is None:
        conn.execute(
            "INSERT INTO deployments (deployment_id, environment, manifest, created_at)"
            " VALUES (?, ?, ?, ?)",
            (worker.deployment_id, worker.environment, json.dumps(manifest), now),
        )
    else:
        merged = json.loads(row[0])
        for section, entries in manifest.items():
            merged.setdefault(section, {}).update(entries)
        conn.execute(
            "UPDATE deployments SET manifest = ? WHERE deployment_id = ?",
            (json.dumps(merged), worker.deployment_id),
        )
    conn.execute(
        "INSERT INTO workers (worker_id, deployment_id, hostname, pid, started_at, heartbeat_at)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (worker.worker_id, worker.deployment_id, worker.hostname, worker.pid, now, now),
    )


def _run_state(conn: sqlite3.Connection, run_id: str) -> tuple[str, int, str] | None:
    row = conn.execute(
        "SELECT status, last_seq, deployment_id FROM runs WHERE run_id = ?", (run_id,)
    ).fetchone()
    return (row[0], row[1], row[2]) if row else None


def _commit_activation(conn: sqlite3.Connection, activation: Activation) -> bool:
    state = _run_state(conn, activation.run_id)
    if state is None:
        return False
    status, last_seq, deployment_id = state
    if status in TERMINAL_STATUSES or last_seq != activation.expected_seq:
        if status not in TERMINAL_STATUSES:
            _queue_workflow(conn, activation.run_id, deployment_id, time.time(), force=True)
        return False
    again = _append(conn, activation.run_id, deployment_id, activation.events, activation)
    _schedule_workflow(conn, activation.run_id, deployment_id)
    if again:
        _queue_workflow(conn, activation.run_id, deployment_id, time.time())
    return True


def _finish_step(
    conn: sqlite3.Connection, outcome: StepOutcome, activation: Activation | None
) -> bool:
    row = conn.execute(
        "SELECT r.status, r.last_seq, r.deployment_id, s.status FROM runs r"
        " JOIN steps s ON s.run_id = r.run_id AND s.step_id = ? WHERE r.run_id = ?",
        (outcome.step_id, outcome.run_id),
    ).fetchone()
    if row is None:
        return False
    status, last_seq, deployment_id, step_status = row
    if status in TERMINAL_STATUSES or step_status in ("completed", "failed"):
        return False  # the run ended or another attempt already recorded the step
    if (
        activation is not None
        and outcome.status != "retrying"
        and activation.expected_seq == last_seq
    ):
        # The activation's first event is this outcome, fed to the cached run. The
        # run's workflow task only changes if a sleep began or ended.
        again = _append(conn, outcome.run_id, deployment_id, activation.events, activation)
        if any(e.type in ("wait_created", "wait_completed") for e in activation.events):
            _schedule_workflow(conn, outcome.run_id, deployment_id)
        if again:
            _queue_workflow(conn, outcome.run_id, deployment_id, time.time())
        return True
    now = time.time()
    event_type = {"completed": "step_completed", "failed": "step_failed"}.get(
        outcome.status, "step_retrying"
    )
    attrs: dict[str, Any] = {"attempt": outcome.attempt}
    if outcome.retry_at is not None:
        attrs["retry_at"] = outcome.retry_at
    event = EventRecord(
        run_id=outcome.run_id,
        seq=last_seq + 1,
        type=event_type,
        correlation_id=outcome.step_id,
        payload=outcome.payload,
        attrs=attrs,
        created_at=now,
    )
    _append(conn, outcome.run_id, deployment_id, [event], None)
    if outcome.status != "retrying":
        _queue_workflow(conn, outcome.run_id, deployment_id, now)
    return False


def _claim_tasks(
    conn: sqlite3.Connection,
    deployment_id: str,
    worker_id: str,
    limit: int,
    lease: float,
    ahead: float,
) -> list[Task]:
    now = time.time()
    rows = conn.execute(
        "SELECT task_id, kind, run_id, step_id, available_at FROM tasks"
        " WHERE deployment_id = ? AND available_at <= ?"
        " AND (available_at <= ? OR (kind = 'workflow' AND lease_owner IS NULL))"
        " ORDER BY available_at LIMIT ?",
        (deployment_id, now + ahead, now, limit),
    ).fetchall()
    conn.executemany(
        "UPDATE tasks SET lease_owner = ?, available_at = ? WHERE task_id = ?",
        [(worker_id, now + lease, row[0]) for row in rows],
    )
    tasks: list[Task] = []
    for task_id, kind, run_id, step_id, due_at in sorted(rows):
        state = _run_state(conn, run_id)
        if state is None or state[0] in TERMINAL_STATUSES:
            conn.execute("DELETE FROM tasks WHERE task_id = ?", (task_id,))
            continue
        if kind == "workflow":
            tasks.append(Task(task_id, "workflow", run_id, deployment_id, due_at=due_at))
            continue
        step = conn.execute(
            "SELECT step_name, status, attempt, input FROM steps WHERE run_id = ? AND step_id = ?",
            (run_id, step_id),
        ).fetchone()
        if step is None or step[1] in ("completed", "failed"):
            conn.execute("DELETE FROM tasks WHERE task_id = ?", (task_id,))
            continue
        attempt = step[2] + 1
        started = EventRecord(
            run_id,
            state[1] + 1,
            "step_started",
            step_id,
            attrs={"attempt": attempt},
            created_at=now,
        )
        _append(conn, run_id, deployment_id, [started], None)
        tasks.append(
            Task(task_id, "step", run_id, deployment_id, step_id, step[0], step[3], attempt, due_at)
        )
    return tasks


def _cancel_runs(conn: sqlite3.Connection, run_ids: list[str]) -> CancelResult:
    result = CancelResult()
    now = time.time()
    for run_id in run_ids:
        state = _run_state(conn, run_id)
        if state is None or state[0] in TERMINAL_STATUSES:
            continue
        hooks = conn.execute(
            "SELECT hook_id FROM hooks WHERE run_id = ? AND status = 'active' ORDER BY created_at",
            (run_id,),
        ).fetchall()
        events = [
            EventRecord(
                run_id,
                state[1] + i,
                "hook_disposed",
                hook_id,
                attrs={"reason": "run cancelled"},
                created_at=now,
            )
            for i, (hook_id,) in enumerate(hooks, start=1)
        ]
        events.append(
            EventRecord(run_id, state[1] + len(events) + 1, "run_cancelled", created_at=now)
        )
        _append(conn, run_id, state[2], events, None)
        result.cancelled.append(run_id)
    return result


_HOOK_SELECT = (
    "SELECT run_id, hook_id, token, status, webhook, metadata, created_at, disposed_at FROM hooks"
)
_STREAM_SELECT = (
    "SELECT stream_id, run_id, namespace, next_index, closed, created_at, closed_at FROM streams"
)


def _where(filters: dict[str, Any]) -> tuple[str, list[Any]]:
    used = {column: value for column, value in filters.items() if value is not None}
    if not used:
        return "", []
    return " WHERE " + " AND ".join(f"{c} = ?" for c in used), list(used.values())


def _hook_record(row: tuple[Any, ...]) -> HookRecord:
    metadata = json.loads(row[5]) if row[5] else None
    return HookRecord(row[0], row[1], row[2], row[3], bool(row[4]), metadata, row[6], row[7])


def _stream_record(row: tuple[Any, ...]) -> StreamRecord:
    return StreamRecord(row[0], row[1], row[2], row[3], bool(row[4]), row[5], row[6])


def _resume_hook(
    conn: sqlite3.Connection, token: str, payload: str, webhook_only: bool
) -> str | None:
    row = conn.execute(
        "SELECT run_id, hook_id, webhook FROM hooks WHERE token = ? AND status = 'active'",
        (token,),
    ).fetchone()
    if row is None or (webhook_only and not row[2]):
        return None
    run_id, hook_id = row[0], row[1]
    state = _run_state(conn, run_id)
    if state is None or state[0] in TERMINAL_STATUSES:
        return None
    now = time.time()
    event = EventRecord(
        run_id, state[1] + 1, "hook_received", hook_id, payload=payload, created_at=now
    )
    _append(conn, run_id, state[2], [event], None)
    _queue_workflow(conn, run_id, state[2], now)
    return str(run_id)


def _append_chunks(
    conn: sqlite3.Connection,
    stream_id: str,
    run_id: str,
    namespace: str,
    chunks: list[str],
    close: bool,
) -> int | None:
    now = time.time()
    row = conn.execute(
        "SELECT next_index, closed FROM streams WHERE stream_id = ?", (stream_id,)
    ).fetchone()
    if row is None:
        conn.execute(
            "INSERT INTO streams (stream_id, run_id, namespace, next_index, closed, created_at)"
            " VALUES (?, ?, ?, 0, 0, ?)",
            (stream_id, run_id, namespace, now),
        )
        start = 0
    elif row[1]:
        return None
    else:
        start = row[0]
    conn.executemany(
        "INSERT INTO stream_chunks (stream_id, idx, data, created_at) VALUES (?, ?, ?, ?)",
        [(stream_id, start + i, chunk, now) for i, chunk in enumerate(chunks)],
    )
    next_index = start + len(chunks)
    conn.execute(
        "UPDATE streams SET next_index = ?, closed = ?, closed_at = ? WHERE stream_id = ?",
        (next_index, int(close), now if close else None, stream_id),
    )
    return next_index


def _wake_sleeps(conn: sqlite3.Connection, run_id: str) -> int:
    state = _run_state(conn, run_id)
    if state is None or state[0] in TERMINAL_STATUSES:
        return 0
    waiting = [
        row[0]
        for row in conn.execute(
            "SELECT wait_id FROM waits WHERE run_id = ? AND status = 'waiting' ORDER BY created_at",
            (run_id,),
        )
    ]
    if not waiting:
        return 0
    now = time.time()
    events = [
        EventRecord(
            run_id, state[1] + i, "wait_completed", wait_id, attrs={"woken": True}, created_at=now
        )
        for i, wait_id in enumerate(waiting, start=1)
    ]
    _append(conn, run_id, state[2], events, None)
    _queue_workflow(conn, run_id, state[2], now)
    return len(waiting)


def _append(
    conn: sqlite3.Connection,
    run_id: str,
    deployment_id: str,
    events: Sequence[EventRecord],
    activation: Activation | None,
) -> bool:
    """Insert events and derive the views from them, in the caller's transaction.

    Returns whether the run must be activated again at once: a hook it
    created lost its token to another hook (``hook_disposed`` was appended).
    The caller queues that after it has scheduled the run's workflow task.
    """
    if not events:
        return False
    _insert_events(conn, run_id, events)
    started_at: float | None = None
    previous: EventRecord | None = None
    conflicts: list[EventRecord] = []
    for event in events:
        if event.type == "run_started":
            started_at = event.created_at  # folded into the last_seq update below
        elif not (
            # A step claimed in the commit that created it: inserted as running.
            event.type == "step_started"
            and previous is not None
            and previous.type == "step_created"
            and previous.correlation_id == event.correlation_id
        ):
            started = _started_with(event, events)
            if _apply(conn, deployment_id, event, activation, started=started):
                conflicts.append(event)
        previous = event
    last_seq = events[-1].seq
    for i, event in enumerate(conflicts, start=1):
        # Answer the request at once: the workflow's hook raises HookConflictError.
        disposed = EventRecord(
            run_id,
            last_seq + i,
            "hook_disposed",
            event.correlation_id,
            attrs={"reason": "conflict", "token": (event.attrs or {}).get("token")},
            created_at=event.created_at,
        )
        _insert_events(conn, run_id, [disposed])
    last_seq += len(conflicts)
    if started_at is None:
        conn.execute("UPDATE runs SET last_seq = ? WHERE run_id = ?", (last_seq, run_id))
    else:
        conn.execute(
            "UPDATE runs SET last_seq = ?, started_at = ?,"
            " status = CASE status WHEN 'pending' THEN 'running' ELSE status END"
            " WHERE run_id = ?",
            (last_seq, started_at, run_id),
        )
    return bool(conflicts)


def _insert_events(conn: sqlite3.Connection, run_id: str, events: Sequence[EventRecord]) -> None:
    conn.executemany(
        "INSERT INTO events (run_id, seq, type, correlation_id, name, payload, attrs, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                run_id,
                e.seq,
                e.type,
                e.correlation_id,
                e.name,
                e.payload,
                json.dumps(e.attrs) if e.attrs else None,
                e.created_at,
            )
            for e in events
        ],
    )


def _started_with(event: EventRecord, events: Sequence[EventRecord]) -> EventRecord | None:
    """The ``step_started`` right after a ``step_created`` in the same commit, if any."""
    if event.type != "step_created":
        return None
    index = events.index(event)
    following = events[index + 1] if index + 1 < len(events) else None
    if (
        following is not None
        and following.type == "step_started"
        and following.correlation_id == event.correlation_id
    ):
        return following
    return None


def _apply(
    conn: sqlite3.Connection,
    deployment_id: str,
    e: EventRecord,
    activation: Activation | None,
    *,
    started: EventRecord | None = None,
) -> bool:
    """Update the views for one event (``run_started`` is folded in by ``_append``).

    Returns whether a hook it created lost its token to another active hook.
    """
    t, run_id, at = e.type, e.run_id, e.created_at
    if t in ("run_completed", "run_failed", "run_cancelled"):
        status = t.removeprefix("run_")
        column = "output" if t == "run_completed" else "error"
        conn.execute(
            f"UPDATE runs SET status = ?, {column} = ?, completed_at = ? WHERE run_id = ?",
            (status, e.payload, at, run_id),
        )
        conn.execute("DELETE FROM tasks WHERE run_id = ?", (run_id,))
        conn.execute(
            "UPDATE steps SET status = 'cancelled' WHERE run_id = ?"
            " AND status IN ('pending', 'running', 'retrying')",
            (run_id,),
        )
        conn.execute(
            "UPDATE waits SET status = 'cancelled' WHERE run_id = ? AND status = 'waiting'",
            (run_id,),
        )
        conn.execute(
            "UPDATE hooks SET status = 'disposed', disposed_at = ?"
            " WHERE run_id = ? AND status = 'active'",
            (at, run_id),
        )
    elif t == "step_created":
        conn.execute(
            "INSERT INTO steps (run_id, step_id, step_name, status, attempt, input, created_at,"
            " started_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                run_id,
                e.correlation_id,
                e.name,
                "pending" if started is None else "running",
                0 if started is None else (started.attrs or {}).get("attempt", 1),
                e.payload or "",
                at,
                None if started is None else started.created_at,
            ),
        )
        leased = activation is not None
        conn.execute(
            "INSERT INTO tasks (kind, run_id, step_id, deployment_id, available_at, lease_owner)"
            " VALUES ('step', ?, ?, ?, ?, ?)",
            (
                run_id,
                e.correlation_id,
                deployment_id,
                at + (activation.lease_seconds if activation else 0.0),
                activation.worker_id if leased and activation else None,
            ),
        )
    elif t == "step_started":
        attempt = (e.attrs or {}).get("attempt", 1)
        conn.execute(
            "UPDATE steps SET status = 'running', attempt = ?, started_at = ?"
            " WHERE run_id = ? AND step_id = ?",
            (attempt, at, run_id, e.correlation_id),
        )
    elif t in ("step_completed", "step_failed"):
        status = t.removeprefix("step_")
        column = "output" if t == "step_completed" else "error"
        conn.execute(
            f"UPDATE steps SET status = ?, {column} = ?, completed_at = ?"
            " WHERE run_id = ? AND step_id = ?",
            (status, e.payload, at, run_id, e.correlation_id),
        )
        conn.execute(
            "DELETE FROM tasks WHERE run_id = ? AND kind = 'step' AND step_id = ?",
            (run_id, e.correlation_id),
        )
    elif t == "step_retrying":
        retry_at = (e.attrs or {}).get("retry_at", at)
        conn.execute(
            "UPDATE steps SET status = 'retrying', error = ?, retry_at = ?"
            " WHERE run_id = ? AND step_id = ?",
            (e.payload, retry_at, run_id, e.correlation_id),
        )
        conn.execute(
            "UPDATE tasks SET available_at = ?, lease_owner = NULL"
            " WHERE run_id = ? AND kind = 'step' AND step_id = ?",
            (retry_at, run_id, e.correlation_id),
        )
    elif t == "hook_created":
        attrs = e.attrs or {}
        taken = conn.execute(
            "SELECT 1 FROM hooks WHERE token = ? AND status = 'active'", (attrs["token"],)
        ).fetchone()
        conn.execute(
            "INSERT INTO hooks (run_id, hook_id, token, status, webhook, metadata, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                run_id,
                e.correlation_id,
                attrs["token"],
                "conflict" if taken else "active",
                int(bool(attrs.get("webhook"))),
                json.dumps(attrs.get("metadata")) if attrs.get("metadata") is not None else None,
                at,
            ),
        )
        return taken is not None
    elif t == "hook_disposed":
        conn.execute(
            "UPDATE hooks SET status = CASE status WHEN 'active' THEN 'disposed' ELSE status END,"
            " disposed_at = ? WHERE run_id = ? AND hook_id = ?",
            (at, run_id, e.correlation_id),
        )
    elif t == "wait_created":
        conn.execute(
            "INSERT INTO waits (run_id, wait_id, status, resume_at, created_at)"
            " VALUES (?, ?, 'waiting', ?, ?)",
            (run_id, e.correlation_id, (e.attrs or {})["resume_at"], at),
        )
    elif t == "wait_completed":
        conn.execute(
            "UPDATE waits SET status = 'completed', completed_at = ?"
            " WHERE run_id = ? AND wait_id = ?",
            (at, run_id, e.correlation_id),
        )
    return False


def _schedule_workflow(conn: sqlite3.Connection, run_id: str, deployment_id: str) -> None:
    """After an activation: the run's next workflow task is its earliest pending sleep."""
    conn.execute("DELETE FROM tasks WHERE run_id = ? AND kind = 'workflow'", (run_id,))
    row = conn.execute(
        "SELECT MIN(resume_at) FROM waits WHERE run_id = ? AND status = 'waiting'", (run_id,)
    ).fetchone()
    if row[0] is not None:
        _queue_workflow(conn, run_id, deployment_id, float(row[0]))


def _queue_workflow(
    conn: sqlite3.Connection, run_id: str, deployment_id: str, at: float, *, force: bool = False
) -> None:
    """Make sure a workflow task for the run is due no later than ``at``.

    A task leased to a worker is left alone (that worker's activation will
    find the log moved and re-queue it) unless ``force`` takes the lease back.
    """
    conn.execute(
        "INSERT INTO tasks (kind, run_id, deployment_id, available_at) VALUES ('workflow', ?, ?, ?)"
        " ON CONFLICT (run_id, kind, step_id) DO UPDATE SET"
        " available_at = MIN(available_at, excluded.available_at), lease_owner = NULL"
        + ("" if force else " WHERE lease_owner IS NULL"),
        (run_id, deployment_id, at),
    )


def _event_record(row: tuple[Any, ...]) -> EventRecord:
    attrs = json.loads(row[6]) if row[6] else None
    return EventRecord(row[0], row[1], row[2], row[3], row[4], row[5], attrs, row[7])
