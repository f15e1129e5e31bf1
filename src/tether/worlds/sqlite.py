"""The embedded World: one SQLite file (WAL), shared by the processes of one machine.

Writes go through one writer thread per process that groups whatever is
queued into a single transaction (group commit, ``sqlite_writer``), so many
runs' events cost one fsync. Reads use a connection per thread. Commits by
other processes are noticed through ``PRAGMA data_version``, which changes
when another connection commits.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

from tether.clock import SYSTEM_CLOCK, Clock
from tether.errors import InvalidValueError
from tether.worlds import schema, sqlite_projection
from tether.worlds.base import closed_error
from tether.worlds.operations import Reader, RunState, Tx, queue_workflow
from tether.worlds.records import TERMINAL_STATUSES, Activation, EventRecord, RunRecord, Task
from tether.worlds.sql import SQLITE, Row
from tether.worlds.sqlite_writer import Writer
from tether.worlds.sqlworld import ClaimRound, SqlWorld

T = TypeVar("T")

_WATCH_INTERVAL = 0.005
_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")


def path_from_url(url: str) -> tuple[Path, dict[str, str]]:
    """Split ``sqlite:///relative.db`` or ``sqlite:////abs.db?synchronous=NORMAL``."""
    parts = urlsplit(url)
    if parts.scheme != "sqlite" or not parts.path.startswith("/") or parts.path == "/":
        raise InvalidValueError(
            f"invalid SQLite world URL {url!r}: expected sqlite:///relative/path.db "
            "or sqlite:////absolute/path.db"
        )
    options = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    return Path(parts.path[1:]), options


class SqliteWorld(SqlWorld):
    """A World on one SQLite file; several processes may open the same file."""

    sql = SQLITE

    def __init__(self, url: str, clock: Clock = SYSTEM_CLOCK) -> None:
        super().__init__(url, clock)
        self.path, options = path_from_url(url)
        self._synchronous = options.get("synchronous", "FULL").upper()
        if self._synchronous not in _SYNCHRONOUS:
            raise InvalidValueError(
                f"invalid synchronous={self._synchronous!r} in {url!r}: expected one of "
                + ", ".join(_SYNCHRONOUS)
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._migrate()
        self._writer = Writer(
            self._connect, lambda conn: SqliteTx(conn, clock), lambda loop: self._notify({loop})
        )
        self._watcher: threading.Thread | None = None
        self._watch_lock = threading.Lock()

    # -- the claim ------------------------------------------------------------------

    async def _claim_round(self, claim: ClaimRound) -> tuple[list[Task], float | None]:
        # A round that finds nothing due writes nothing: the first due time is read
        # first, and again after a claim that did not fill the limit.
        now = self.clock.time()
        first = self._first_due(claim.deployment_id, claim.ahead)
        tasks: list[Task] = []
        if first is not None and first <= now:
            tasks = await self._write_async(lambda tx: _claim(tx, claim))
            if len(tasks) >= claim.limit:
                return tasks, now
            first = self._first_due(claim.deployment_id, claim.ahead)
        return tasks, first

    def _first_due(self, deployment_id: str, ahead: float) -> float | None:
        """When a claim round with ``ahead`` next finds work (``claim_due_async``)."""
        row = self._connection().execute(self.sql.first_due, (deployment_id,)).fetchone()
        return schema.claim_again_at(row, ahead)

    # Reads of a local file take microseconds: the worker does them inline.

    async def get_run_async(self, run_id: str) -> RunRecord | None:
        return self.get_run(run_id)

    async def list_events_async(self, run_id: str, after_seq: int = 0) -> list[EventRecord]:
        return self.list_events(run_id, after_seq)

    # -- internals ----------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=30.0
        )
        conn.execute("PRAGMA page_size=1024")  # before WAL: only a new file takes it
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        conn.execute("PRAGMA busy_timeout=30000")
        return conn

    def _connection(self) -> sqlite3.Connection:
        """This thread's connection for reading."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
        return conn

    def _read(self, fn: Callable[[Reader], T]) -> T:
        return fn(SqliteTx(self._connection(), self.clock))

    def _write(self, op: Callable[[Tx], T]) -> T:
        if self._closed:
            raise closed_error(self.url)
        return self._writer.submit(op).result()

    async def _write_async(
        self, op: Callable[[Tx], T], on_committed: Callable[[T], None] | None = None
    ) -> T:
        if self._closed:
            raise closed_error(self.url)
        return await self._writer.run_on_loop(op, on_committed)

    def _migrate(self) -> None:
        conn = self._connect()
        try:
            # Small pages: a commit touches a few rows in several B-trees, and every
            # page it dirties is written to the WAL and synced. Takes effect only on
            # a new, empty database file.
            conn.execute("PRAGMA page_size=1024")
            conn.execute("BEGIN IMMEDIATE")  # the lock: one process migrates at a time
            schema.apply_migrations(conn, "sqlite", param="?", real="REAL", now=self.clock.time())
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        finally:
            conn.close()

    def _stop(self) -> None:
        self._writer.stop()
        if self._watcher is not None:
            self._watcher.join(timeout=1)

    def _start_watching(self) -> None:
        with self._watch_lock:
            if self._watcher is None and not self._closed:
                watcher = threading.Thread(
                    target=self._watch, name="tether-sqlite-watch", daemon=True
                )
                watcher.start()
                # Kept once started: a Ctrl-C inside start() leaves none for _stop to join.
                self._watcher = watcher

    def _watch(self) -> None:
        """Notice commits of other processes (and other World instances).

        ``data_version`` of a connection moves when another connection
        commits; read on the writer's own connection, this process's commits
        (already announced by ``_notify``) do not move it. It polls in real
        time whatever the World's clock: it watches the file, not the runs.
        """
        last: int | None = None
        while not self._closed:
            try:
                version = self._writer.data_version()
            except sqlite3.ProgrammingError:
                return  # closed meanwhile (even before the first read: a short-lived World)
            if last is not None and version != last:
                self._notify({None})
            last = version
            time.sleep(_WATCH_INTERVAL)


class SqliteTx:
    """The transaction adapter (``operations.Tx``) on a SQLite connection.

    SQLite's write transaction holds the whole database, so nothing needs a
    lock of its own, and nobody is notified: other processes watch
    ``data_version``.
    """

    sql = SQLITE
    fast = False  # one writer, in-process: there is no round trip to save

    def __init__(self, conn: sqlite3.Connection, clock: Clock) -> None:
        self.conn = conn
        self.clock = clock

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self.conn.execute(sql, params)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self.conn.executemany(sql, rows)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self.conn.execute(sql, params).fetchall()

    def query_one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        row: Row | None = self.conn.execute(sql, params).fetchone()
        return row

    def query_together(self, *queries: tuple[str, Sequence[Any]]) -> list[list[Row]]:
        return [self.query(sql, params) for sql, params in queries]

    def lock_run_and_step(self, run_id: str, step_id: str) -> tuple[RunState, str] | None:
        # SQLite's write transaction holds the whole database: one joined read will do.
        row = self.query_one(self.sql.run_and_step, (run_id, step_id))
        return None if row is None else ((row[0], row[1], row[2]), row[3])

    def lock_runs(self, run_ids: Sequence[str]) -> dict[str, RunState]:
        states: dict[str, RunState] = {}
        for run_id in dict.fromkeys(run_ids):
            row = self.query_one(self.sql.lock_run, (run_id,))
            if row is not None:
                states[run_id] = (row[0], row[1], row[2])
        return states

    def append(
        self,
        run_id: str,
        deployment_id: str,
        events: Sequence[EventRecord],
        activation: Activation | None,
        *,
        expected_seq: int | None = None,
        schedule: bool = False,
    ) -> None:
        # ``expected_seq`` comes only with ``fast``, which SQLite never is.
        again = sqlite_projection.append(self, run_id, deployment_id, events, activation)
        if schedule:
            sqlite_projection.schedule_workflow(self, run_id, deployment_id)
        if again:
            queue_workflow(self, run_id, deployment_id, self.clock.time())

    def work_due(self, deployment_id: str) -> None:
        pass

    def readers_wait(self) -> None:
        pass


def _claim(tx: Tx, claim: ClaimRound) -> list[Task]:
    """Lease up to ``limit`` due tasks (see ``World.claim_due_async``), oldest first."""
    deployment_id, worker_id, lease = claim.deployment_id, claim.worker_id, claim.lease_seconds
    now = tx.clock.time()
    due = tx.query(
        "SELECT task_id, kind, run_id, step_id, available_at, lease_owner FROM tasks"
        " WHERE deployment_id = ? AND available_at <= ?"
        " AND (available_at <= ? OR (kind = 'workflow' AND lease_owner IS NULL))"
        " ORDER BY available_at LIMIT ?",
        (deployment_id, now + claim.ahead, now, claim.limit),
    )
    tx.executemany(
        "UPDATE tasks SET lease_owner = ?, available_at = ? WHERE task_id = ?",
        [(worker_id, now + lease, row[0]) for row in due],
    )
    # A step leased to this worker whose lease ran out (its heartbeat came late, on a
    # busy machine) runs here still, or its outcome is on its way: its lease is renewed
    # above, and it must not start a second time.
    rows = [row[:5] for row in due if not (row[1] == "step" and row[5] == worker_id)]
    tasks: list[Task] = []
    for task_id, kind, run_id, step_id, due_at in sorted(rows):
        state = tx.query_one(tx.sql.lock_run, (run_id,))
        if state is None or state[0] in TERMINAL_STATUSES:
            tx.execute("DELETE FROM tasks WHERE task_id = ?", (task_id,))
            continue
        if kind == "workflow":
            tasks.append(Task(task_id, "workflow", run_id, deployment_id, due_at=due_at))
            continue
        step = tx.query_one(
            "SELECT step_name, status, attempt, input FROM steps WHERE run_id = ? AND step_id = ?",
            (run_id, step_id),
        )
        if step is None or step[1] in ("completed", "failed"):
            tx.execute("DELETE FROM tasks WHERE task_id = ?", (task_id,))
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
        tx.append(run_id, deployment_id, [started], None)
        tasks.append(
            Task(task_id, "step", run_id, deployment_id, step_id, step[0], step[3], attempt, due_at)
        )
    return tasks
