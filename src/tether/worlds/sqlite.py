"""The embedded World: one SQLite file (WAL), shared by the processes of one machine.

Writes go through one writer thread per process that groups whatever is
queued into a single transaction (group commit), so many runs' events cost
one fsync. Reads use a connection per thread. Commits by other processes are
noticed through ``PRAGMA data_version``, which changes when another
connection commits.
"""

from __future__ import annotations

import json
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

from tether.worlds import schema
from tether.worlds.base import (
    TERMINAL_STATUSES,
    Activation,
    CancelResult,
    EventRecord,
    NewRun,
    RunFilter,
    RunRecord,
    StepOutcome,
    StepRecord,
    Task,
    WaitRecord,
    World,
)

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
        self._listeners: list[Callable[[], None]] = []
        self._changed = threading.Condition()
        self._closed = False
        self._migrate()
        self._writer = _Writer(self._connect, self._notify)
        self._watcher: threading.Thread | None = None
        self._watch_lock = threading.Lock()

    # -- runs -------------------------------------------------------------

    def create_run(self, run: NewRun) -> RunRecord:
        return self._write(lambda conn: _create_run(conn, run))

    def get_run(self, run_id: str) -> RunRecord | None:
        row = self._read().execute(_RUN_SELECT + " WHERE run_id = ?", (run_id,)).fetchone()
        return _run_record(row) if row else None

    def list_runs(self, filters: RunFilter) -> list[RunRecord]:
        sql, params = schema.run_query(_RUN_SELECT, filters, placeholder="?")
        return [_run_record(row) for row in self._read().execute(sql, params)]

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

    # -- worker side ------------------------------------------------------

    def claim_tasks(
        self, deployment_id: str, worker_id: str, limit: int, lease_seconds: float
    ) -> list[Task]:
        return self._write(
            lambda conn: _claim_tasks(conn, deployment_id, worker_id, limit, lease_seconds)
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

    def commit_activation(self, activation: Activation) -> bool:
        return self._write(lambda conn: _commit_activation(conn, activation))

    def finish_step(self, outcome: StepOutcome, activation: Activation | None = None) -> bool:
        return self._write(lambda conn: _finish_step(conn, outcome, activation))

    def renew_leases(self, worker_id: str, lease_seconds: float) -> None:
        self._write(
            lambda conn: conn.execute(
                "UPDATE tasks SET available_at = ? WHERE lease_owner = ?",
                (time.time() + lease_seconds, worker_id),
            )
        )

    def release_leases(self, worker_id: str) -> None:
        self._write(
            lambda conn: conn.execute(
                "UPDATE tasks SET lease_owner = NULL, available_at = ? WHERE lease_owner = ?",
                (time.time(), worker_id),
            )
        )

    # -- wake-ups ---------------------------------------------------------

    def add_listener(self, callback: Callable[[], None]) -> Callable[[], None]:
        self._listeners.append(callback)
        self._start_watcher()

        def remove() -> None:
            if callback in self._listeners:
                self._listeners.remove(callback)

        return remove

    def wait_for_change(self, timeout: float) -> None:
        self._start_watcher()
        with self._changed:
            self._changed.wait(timeout)

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

    def _migrate(self) -> None:
        conn = self._connect()
        try:
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

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()
        for callback in list(self._listeners):
            callback()

    def _start_watcher(self) -> None:
        with self._watch_lock:
            if self._watcher is None and not self._closed:
                self._watcher = threading.Thread(
                    target=self._watch, name="tether-sqlite-watch", daemon=True
                )
                self._watcher.start()

    def _watch(self) -> None:
        """Notice commits of other processes: ``data_version`` moves when they commit."""
        conn = self._connect()
        last = conn.execute("PRAGMA data_version").fetchone()[0]
        while not self._closed:
            time.sleep(_WATCH_INTERVAL)
            version = conn.execute("PRAGMA data_version").fetchone()[0]
            if version != last:
                last = version
                self._notify()
        conn.close()


class _Writer:
    """One thread that commits queued operations, many per transaction."""

    def __init__(
        self, connect: Callable[[], sqlite3.Connection], on_commit: Callable[[], None]
    ) -> None:
        self._connect = connect
        self._on_commit = on_commit
        self._queue: queue.SimpleQueue[
            tuple[Callable[[sqlite3.Connection], Any], Future[Any]] | None
        ] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="tether-sqlite-writer", daemon=True)
        self._thread.start()

    def submit(self, op: Callable[[sqlite3.Connection], T]) -> Future[T]:
        future: Future[T] = Future()
        self._queue.put((op, future))
        return future

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)

    def _run(self) -> None:
        conn = self._connect()
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
            self._commit(conn, batch)
        conn.close()

    def _commit(
        self,
        conn: sqlite3.Connection,
        batch: list[tuple[Callable[[sqlite3.Connection], Any], Future[Any]]],
    ) -> None:
        """Commit the batch in one transaction; if any operation fails, commit each alone.

        Operations rarely fail, so the common case pays for no savepoints.
        """
        try:
            results = self._transaction(conn, [op for op, _ in batch])
        except Exception as exc:
            if len(batch) == 1:
                batch[0][1].set_exception(exc)
                self._on_commit()
                return
            for op, future in batch:
                try:
                    (result,) = self._transaction(conn, [op])
                except Exception as alone:
                    future.set_exception(alone)
                else:
                    future.set_result(result)
        else:
            for (_, future), result in zip(batch, results, strict=True):
                future.set_result(result)
        self._on_commit()

    @staticmethod
    def _transaction(
        conn: sqlite3.Connection, ops: list[Callable[[sqlite3.Connection], Any]]
    ) -> list[Any]:
        conn.execute("BEGIN IMMEDIATE")
        try:
            results = [op(conn) for op in ops]
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return results


# -- operations run inside the writer's transaction --------------------------

_RUN_SELECT = (
    "SELECT run_id, workflow_name, deployment_id, status, input, output, error,"
    " parent_run_id, rerun_of, created_at, started_at, completed_at, last_seq FROM runs"
)


def _create_run(conn: sqlite3.Connection, run: NewRun) -> RunRecord:
    now = time.time()
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
    conn.execute(
        "INSERT INTO tasks (kind, run_id, deployment_id, available_at, lease_owner)"
        " VALUES ('workflow', ?, ?, ?, ?)",
        (run.run_id, run.deployment_id, now + (60.0 if run.lease_to else 0.0), run.lease_to),
    )
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
    _append(conn, activation.run_id, deployment_id, activation.events, activation)
    _schedule_workflow(conn, activation.run_id, deployment_id)
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
        _append(conn, outcome.run_id, deployment_id, activation.events, activation)
        if any(e.type in ("wait_created", "wait_completed") for e in activation.events):
            _schedule_workflow(conn, outcome.run_id, deployment_id)
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
    conn: sqlite3.Connection, deployment_id: str, worker_id: str, limit: int, lease: float
) -> list[Task]:
    now = time.time()
    rows = conn.execute(
        "UPDATE tasks SET lease_owner = ?, available_at = ? WHERE task_id IN ("
        " SELECT task_id FROM tasks WHERE deployment_id = ? AND available_at <= ?"
        " ORDER BY available_at LIMIT ?) RETURNING task_id, kind, run_id, step_id",
        (worker_id, now + lease, deployment_id, now, limit),
    ).fetchall()
    tasks: list[Task] = []
    for task_id, kind, run_id, step_id in sorted(rows):
        state = _run_state(conn, run_id)
        if state is None or state[0] in TERMINAL_STATUSES:
            conn.execute("DELETE FROM tasks WHERE task_id = ?", (task_id,))
            continue
        if kind == "workflow":
            tasks.append(Task(task_id, "workflow", run_id, deployment_id))
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
            Task(task_id, "step", run_id, deployment_id, step_id, step[0], step[3], attempt)
        )
    return tasks


def _cancel_runs(conn: sqlite3.Connection, run_ids: list[str]) -> CancelResult:
    result = CancelResult()
    now = time.time()
    for run_id in run_ids:
        state = _run_state(conn, run_id)
        if state is None or state[0] in TERMINAL_STATUSES:
            continue
        event = EventRecord(run_id, state[1] + 1, "run_cancelled", created_at=now)
        _append(conn, run_id, state[2], [event], None)
        result.cancelled.append(run_id)
    return result


def _append(
    conn: sqlite3.Connection,
    run_id: str,
    deployment_id: str,
    events: Sequence[EventRecord],
    activation: Activation | None,
) -> None:
    """Insert events and derive the views from them, in the caller's transaction."""
    if not events:
        return
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
    for event in events:
        _apply(conn, deployment_id, event, activation)
    conn.execute("UPDATE runs SET last_seq = ? WHERE run_id = ?", (events[-1].seq, run_id))


def _apply(
    conn: sqlite3.Connection, deployment_id: str, e: EventRecord, activation: Activation | None
) -> None:
    """Update the views for one event."""
    t, run_id, at = e.type, e.run_id, e.created_at
    if t == "run_started":
        conn.execute(
            "UPDATE runs SET status = 'running', started_at = ? WHERE run_id = ?", (at, run_id)
        )
    elif t in ("run_completed", "run_failed", "run_cancelled"):
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
    elif t == "step_created":
        conn.execute(
            "INSERT INTO steps (run_id, step_id, step_name, status, attempt, input, created_at)"
            " VALUES (?, ?, ?, 'pending', 0, ?, ?)",
            (run_id, e.correlation_id, e.name, e.payload or "", at),
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


def _run_record(row: Iterable[Any]) -> RunRecord:
    return RunRecord(*row)


def _event_record(row: tuple[Any, ...]) -> EventRecord:
    attrs = json.loads(row[6]) if row[6] else None
    return EventRecord(row[0], row[1], row[2], row[3], row[4], row[5], attrs, row[7])


def default_path_exists(url: str) -> bool:
    """Whether the database file of a SQLite URL exists already."""
    return os.path.exists(path_from_url(url)[0])
