"""The PostgreSQL World: many worker processes on many machines, one database.

Writes go through one writer thread per World that groups whatever is queued
into one transaction (group commit: the server flushes its log once per
commit) and sends the statements bound client-side in one message, so a
write costs no round trip of its own (``postgres_writer``). Runs started from
an event loop (through an in-process worker) commit on a second writer, so
that a start does not wait for a busy worker's batch. Every operation
that appends events locks the run's row first (``SELECT ... FOR UPDATE``),
which makes the expected-sequence checks race-free across processes; claims
skip rows other workers hold (``postgres_claim``). Reads use a connection
pool. Commits that make work due or end a run NOTIFY readers, and wake one
live worker of the deployment their work is for; a listener thread per World
hears other processes' commits (``postgres_listener``).

A lost connection (a server restart) is survived: reads are retried, and a
batch whose ``COMMIT`` may or may not have reached the server is settled
before it is retried, so nothing is written twice.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from tether.clock import SYSTEM_CLOCK, Clock
from tether.errors import InvalidValueError
from tether.worlds import schema
from tether.worlds.base import closed_error
from tether.worlds.operations import Reader, Tx
from tether.worlds.postgres_claim import claim_due
from tether.worlds.postgres_listener import (
    BACKOFF_MAX,
    BACKOFF_MIN,
    CHANNEL,
    WORK_CHANNEL,
    Listener,
    worker_channel,
)
from tether.worlds.postgres_url import WorldUnavailableError, parse_url, redact
from tether.worlds.postgres_writer import Connection, PgTx, Writer, lost
from tether.worlds.records import Task
from tether.worlds.sql import POSTGRES, Row
from tether.worlds.sqlworld import ClaimRound, SqlWorld

__all__ = ["PostgresWorld", "WorldUnavailableError", "parse_url", "redact"]

T = TypeVar("T")

log = logging.getLogger("tether.postgres")

#: How long a World keeps reconnecting before it reports the server unreachable.
DEFAULT_RECONNECT_TIMEOUT = 60.0
DEFAULT_POOL_MAX = 8
#: A heartbeat, one autocommit statement: the worker's row first (the count, a one-time
#: filter, runs the update before the tasks are scanned; batches lock a worker's row
#: before its tasks too, so the two never deadlock), then its leases, even of a worker
#: with no row. Tasks another transaction holds are skipped rather than waited for: the
#: writer may be finishing them, and the next beat extends the rest.
_HEARTBEAT = (
    "WITH beat AS (UPDATE workers SET heartbeat_at = %s, cpu_load = %s WHERE worker_id = %s"
    " RETURNING 1) UPDATE tasks SET available_at = %s WHERE (SELECT count(*) FROM beat) >= 0"
    " AND task_id IN (SELECT task_id FROM tasks WHERE lease_owner = %s"
    " FOR UPDATE SKIP LOCKED)"
)


class PostgresWorld(SqlWorld):
    """A World on one PostgreSQL database (or one schema of it) shared by many processes."""

    sql = POSTGRES

    def __init__(self, url: str, clock: Clock = SYSTEM_CLOCK) -> None:
        super().__init__(url, clock)
        self.shown_url = redact(url)
        self._conninfo, options = parse_url(url)
        try:
            self._reconnect_timeout = float(
                options.get("reconnect_timeout", DEFAULT_RECONNECT_TIMEOUT)
            )
            pool_max = int(options.get("pool_max", DEFAULT_POOL_MAX))
        except ValueError:
            raise InvalidValueError(
                f"invalid pool_max or reconnect_timeout in {self.shown_url!r}: expected numbers"
            ) from None
        token = uuid.uuid4().hex[:12]
        self._schema = self._migrate(options.get("schema"))
        self._pool: ConnectionPool[Connection] = ConnectionPool(
            self._conninfo,
            min_size=1,
            max_size=max(pool_max, 1),
            kwargs={"autocommit": True},
            name=f"tether-{token}",
            open=True,
        )
        # What this World's NOTIFYs carry: its schema (others ignore it) and itself.
        self._payload = f"{self._schema}|{token}"
        self._writer = self._new_writer()
        #: Runs started from a loop (``start()`` through an in-process worker) commit on a
        #: writer of their own, made when first wanted: a start then waits for its own
        #: commit, not for a busy worker's batch to finish first.
        self._starts: Writer | None = None
        self._starts_lock = threading.Lock()
        #: The heartbeats' connection, made at the first beat (``heartbeat``).
        self._beat_conn: Connection | None = None
        self._beat_lock = threading.Lock()
        #: CHANNEL and WORK_CHANNEL once a listener wanted them: kept, so that waiters
        #: coming and going do not make the listener listen again each time.
        self._wanted: set[str] = set()
        self._listener = Listener(
            self._conninfo,
            self._schema,
            token,
            self.shown_url,
            self._channels,
            lambda _, signal: self._notify({None}, signal),
        )

    def _new_writer(self) -> Writer:
        return Writer(
            lambda: self._connect(autocommit=True),
            clock=self.clock,
            payload=self._payload,
            shown_url=self.shown_url,
            reconnect_timeout=self._reconnect_timeout,
            on_commit=self._notify,
            own_workers=lambda: list(self._deployments),
        )

    async def _start_async(
        self, op: Callable[[Tx], T], on_committed: Callable[[T], None] | None = None
    ) -> T:
        with self._starts_lock:  # close() sets _closed first, then takes this lock
            if self._closed:
                raise closed_error(self.shown_url)
            if self._starts is None:
                self._starts = self._new_writer()
            waiter = self._starts.submit_async(op, on_committed)
        return await waiter

    # -- the claim ------------------------------------------------------------------

    async def _claim_round(self, claim: ClaimRound) -> tuple[list[Task], float | None]:
        # One transaction of the writer: no read of what is due first and none after.
        return await self._write_async(lambda tx: claim_due(cast(PgTx, tx), claim))

    def _start_watching(self) -> None:
        self._listener.start()

    def _channels(self) -> set[str]:
        """What the listener listens on: readers', workers', and each own worker's channel."""
        return self._wanted | {worker_channel(worker_id) for worker_id in self._deployments}

    def _listeners_changed(self) -> None:
        wanted = set(self._wanted)
        for _, _, work_only, _ in list(self._listeners):
            wanted.add(WORK_CHANNEL if work_only else CHANNEL)
        self._wanted = wanted
        self._listener.changed()  # the thread listens again only if the set differs

    def _stop(self) -> None:
        self._writer.stop()
        with self._starts_lock:
            starts = self._starts
        if starts is not None:
            starts.stop()
        self._listener.stop()
        self._pool.close(timeout=1.0)
        with self._beat_lock:
            if self._beat_conn is not None:
                self._beat_conn.close()

    # -- internals ----------------------------------------------------------------------

    def _connect(self, *, autocommit: bool = False) -> Connection:
        """A new connection; raises ``WorldUnavailableError`` naming the URL (not its password)."""
        try:
            return psycopg.connect(self._conninfo, autocommit=autocommit)
        except psycopg.OperationalError as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            raise WorldUnavailableError(
                f"cannot connect to the PostgreSQL world {self.shown_url}: {reason}"
            ) from exc

    def _migrate(self, wanted_schema: str | None) -> str:
        """Apply missing migrations under an advisory lock; return the schema in use."""
        with self._connect() as conn:
            if wanted_schema is not None:
                # Concurrent CREATE SCHEMA IF NOT EXISTS can still collide: lock first.
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (wanted_schema,))
                conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{wanted_schema}"')
            row = conn.execute("SELECT current_schema()").fetchone()
            if row is None or row[0] is None:
                raise InvalidValueError(
                    f"world {self.shown_url}: no schema of its search_path exists "
                    "(create it, or pass ?schema=NAME to have it created)"
                )
            name = str(row[0])
            conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext('tether.migrations'), hashtext(%s))",
                (name,),
            )
            schema.apply_migrations(
                conn, "postgres", param="%s", real="double precision", now=self.clock.time()
            )
            return name

    def _write(self, op: Callable[[Tx], T]) -> T:
        if self._closed:
            raise closed_error(self.shown_url)
        result: T = self._writer.submit(op, None).result()
        return result

    async def _write_async(
        self, op: Callable[[Tx], T], on_committed: Callable[[T], None] | None = None
    ) -> T:
        """Commit ``op`` on the writer; ``on_committed`` is called from the writer thread."""
        if self._closed:
            raise closed_error(self.shown_url)
        return await self._writer.submit_async(op, on_committed)

    def heartbeat(self, worker_id: str, lease_seconds: float, load: float = 0.0) -> None:
        # On a connection of its own, neither the writer's (a heartbeat queued behind a
        # busy writer's batches came late enough, on a loaded machine, for the worker's
        # leases to lapse and its running steps to be started again elsewhere) nor the
        # pool's (a worker replaying many runs holds all of it, with more reads queued).
        with self._beat_lock:
            if self._closed:
                raise closed_error(self.shown_url)
            now = self.clock.time()
            params = (now, load, worker_id, now + lease_seconds, worker_id)
            for attempt in (1, 2):  # once more on a new connection after a lost one
                conn = self._beat_conn
                if conn is None or conn.closed:
                    conn = self._beat_conn = self._connect(autocommit=True)
                try:
                    conn.execute(_HEARTBEAT, params)
                    return
                except psycopg.Error as exc:
                    if not lost(conn, exc) or attempt == 2:
                        raise
                    conn.close()

    def _read(self, fn: Callable[[Reader], T]) -> T:
        """Run a read on a pooled connection, again after a lost connection (reads are safe)."""
        if self._closed:
            raise closed_error(self.shown_url)
        lost_since: float | None = None
        delay = BACKOFF_MIN
        while True:
            try:
                with self._pool.connection(timeout=self._reconnect_timeout) as conn:
                    try:
                        return fn(_PooledReader(conn))
                    except psycopg.Error as exc:
                        if not lost(conn, exc):
                            raise
                        conn.close()  # the pool drops a closed connection
                        error: Exception = exc
            except PoolTimeout as exc:
                error = exc
            now = time.monotonic()
            if lost_since is None:
                lost_since = now
                log.warning("lost the connection to %s; retrying the read", self.shown_url)
                self._pool.check()  # drop every idle connection the outage broke
            elif now - lost_since > self._reconnect_timeout:
                raise WorldUnavailableError(
                    f"the PostgreSQL world {self.shown_url} is unreachable "
                    f"for {self._reconnect_timeout:g}s"
                ) from error
            time.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)


class _PooledReader:
    """A ``Reader`` on a pooled connection."""

    sql = POSTGRES

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self._conn.execute(sql, params).fetchall()  # type: ignore[call-overload, no-any-return]

    def query_one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        return self._conn.execute(sql, params).fetchone()  # type: ignore[call-overload, no-any-return]
