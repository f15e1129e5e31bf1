"""The PostgreSQL World: many worker processes on many machines, one database.

Writes go through one writer thread per World that groups whatever is queued
into one transaction (group commit: the server flushes its log once per
commit) and pipelines the statements, so a write costs no round trip of its
own. Every operation that appends events locks the run's row first
(``SELECT ... FOR UPDATE``), which makes the expected-sequence checks
race-free across processes; claims skip rows other workers hold
(``FOR UPDATE SKIP LOCKED``). Reads use a connection pool. Commits that make
work due or end a run ``NOTIFY tether_changes``; a listener thread per World
hears other processes' commits.

A lost connection (a server restart) is survived: reads are retried, and a
batch whose ``COMMIT`` may or may not have reached the server is settled by
asking the server for its transaction's status (``pg_xact_status``) before it
is either retried or reported as committed, so nothing is written twice.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import queue
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
import psycopg.errors
from psycopg.conninfo import make_conninfo
from psycopg_pool import ConnectionPool, PoolTimeout

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

T = TypeVar("T")
Row = tuple[Any, ...]
Connection = psycopg.Connection[Row]
Cursor = psycopg.Cursor[Row]

log = logging.getLogger("tether.postgres")

#: The channel every World of a database listens on; payloads name schema and sender.
CHANNEL = "tether_changes"
_BATCH_LIMIT = 512
#: How long a World keeps reconnecting before it reports the server unreachable.
DEFAULT_RECONNECT_TIMEOUT = 60.0
DEFAULT_POOL_MAX = 8
_BACKOFF_MIN = 0.05
_BACKOFF_MAX = 1.0
#: How often the listener looks up from its connection to see whether the World closed.
_LISTEN_TICK = 0.25
#: Retries of a batch the server aborted to break a deadlock (it wrote nothing).
_ROLLBACK_RETRIES = 10
#: How soon a claim tries again for a task whose run another transaction had locked.
_BUSY_RUN_RETRY = 0.005
#: The SQLSTATE ``tether_append`` raises when a run is not where its caller expected.
_STALE = "TT001"
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
#: Query parameters tether reads itself; every other one goes to libpq.
_OWN_PARAMS = ("schema", "pool_max", "reconnect_timeout")


class WorldUnavailableError(ConnectionError):
    """The PostgreSQL server cannot be reached (or not within the reconnect timeout)."""


def redact(url: str) -> str:
    """The URL without its password (in the authority or a ``password=`` parameter)."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        if ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":***"
        netloc = f"{userinfo}@{host}"
    query = [
        (key, "***" if key.lower() == "password" else value)
        for key, value in parse_qsl(parts.query, keep_blank_values=True)
    ]
    return urlunsplit(parts._replace(netloc=netloc, query=urlencode(query, safe="=-/:,")))


def parse_url(url: str) -> tuple[str, dict[str, str]]:
    """Split a world URL into a libpq conninfo string and tether's own options.

    ``postgresql://user:pw@host:5432/db?schema=tether&pool_max=8`` puts the
    tables in schema ``tether`` (created if missing); other query parameters
    (``sslmode``, ``options``, ...) go to libpq as they are.
    """
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("postgresql", "postgres"):
        raise ValueError(f"invalid PostgreSQL world URL {redact(url)!r}: expected postgresql://...")
    params = parse_qsl(parts.query, keep_blank_values=True)
    own = {key: value for key, value in params if key in _OWN_PARAMS}
    libpq = urlencode([(key, value) for key, value in params if key not in _OWN_PARAMS])
    base = urlunsplit(parts._replace(scheme="postgresql", query=libpq))
    extra: dict[str, Any] = {}
    if "connect_timeout" not in dict(params):
        extra["connect_timeout"] = 5
    if "application_name" not in dict(params):
        extra["application_name"] = "tether"
    name = own.get("schema")
    if name is not None:
        if not _IDENTIFIER.fullmatch(name):
            raise ValueError(
                f"invalid schema {name!r} in {redact(url)!r}: expected letters, digits and _"
            )
        extra["options"] = (dict(params).get("options", "") + f" -csearch_path={name}").strip()
    try:
        return make_conninfo(base, **extra), own
    except psycopg.ProgrammingError as exc:
        raise ValueError(f"invalid PostgreSQL world URL {redact(url)!r}: {exc}") from None


class PostgresWorld(World):
    """A World on one PostgreSQL database (or one schema of it) shared by many processes."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.shown_url = redact(url)
        self._conninfo, options = parse_url(url)
        try:
            self._reconnect_timeout = float(
                options.get("reconnect_timeout", DEFAULT_RECONNECT_TIMEOUT)
            )
            pool_max = int(options.get("pool_max", DEFAULT_POOL_MAX))
        except ValueError:
            raise ValueError(
                f"invalid pool_max or reconnect_timeout in {self.shown_url!r}: expected numbers"
            ) from None
        self._listeners: list[
            tuple[Callable[[], None], asyncio.AbstractEventLoop | None, bool, str | None]
        ] = []
        #: The deployment of each worker registered through this World: its commits
        #: may take the writer's fast path (see ``_commit_activation``).
        self._deployments: dict[str, str] = {}
        self._closed = False
        self._token = uuid.uuid4().hex[:12]
        self._schema = self._migrate(options.get("schema"))
        #: What this World's NOTIFYs carry: its schema (others ignore it) and itself.
        self._payload = f"{self._schema}|{self._token}"
        self._pool: ConnectionPool[Connection] = ConnectionPool(
            self._conninfo,
            min_size=1,
            max_size=max(pool_max, 1),
            kwargs={"autocommit": True},
            name=f"tether-{self._token}",
            open=True,
        )
        self._writer = _Writer(self)
        self._listener: threading.Thread | None = None
        self._listen_lock = threading.Lock()

    # -- runs -------------------------------------------------------------

    def create_run(self, run: NewRun, activation: Activation | None = None) -> RunRecord:
        return self._write(lambda tx: _create_run(tx, run, activation))

    async def create_run_async(
        self,
        run: NewRun,
        activation: Activation | None = None,
        on_created: Callable[[RunRecord], None] | None = None,
    ) -> RunRecord:
        return await self._write_async(lambda tx: _create_run(tx, run, activation), on_created)

    def get_run(self, run_id: str) -> RunRecord | None:
        rows = self._fetch(_RUN_SELECT + " WHERE run_id = %s", (run_id,))
        return RunRecord(*rows[0]) if rows else None

    def list_runs(self, filters: RunFilter) -> list[RunRecord]:
        sql, params = schema.run_query(_RUN_SELECT, filters, placeholder="%s")
        return [RunRecord(*row) for row in self._fetch(sql, params)]

    def list_events(self, run_id: str, after_seq: int = 0) -> list[EventRecord]:
        rows = self._fetch(
            "SELECT run_id, seq, type, correlation_id, name, payload, attrs, created_at"
            " FROM events WHERE run_id = %s AND seq > %s ORDER BY seq",
            (run_id, after_seq),
        )
        return [_event_record(row) for row in rows]

    def list_steps(self, run_id: str) -> list[StepRecord]:
        # Step ids are positions ("1", "2", ... "10"): order them as numbers, safely.
        rows = self._fetch(
            "SELECT run_id, step_id, step_name, status, attempt, input, output, error,"
            " created_at, started_at, completed_at, retry_at FROM steps WHERE run_id = %s"
            " ORDER BY created_at, length(step_id), step_id",
            (run_id,),
        )
        return [StepRecord(*row) for row in rows]

    def list_waits(self, run_id: str) -> list[WaitRecord]:
        rows = self._fetch(
            "SELECT run_id, wait_id, status, resume_at, created_at, completed_at"
            " FROM waits WHERE run_id = %s ORDER BY created_at, length(wait_id), wait_id",
            (run_id,),
        )
        return [WaitRecord(*row) for row in rows]

    def cancel_runs(self, run_ids: Sequence[str]) -> CancelResult:
        return self._write(lambda tx: _cancel_runs(tx, list(run_ids)))

    def wake_sleeps(self, run_id: str) -> int:
        return self._write(lambda tx: _wake_sleeps(tx, run_id))

    # -- hooks and streams ------------------------------------------------

    def resume_hook(self, token: str, payload: str, *, webhook_only: bool = False) -> str:
        run_id = self._write(lambda tx: _resume_hook(tx, token, payload, webhook_only))
        if run_id is None:
            kind = "webhook" if webhook_only else "hook"
            raise HookNotFoundError(
                f"no active {kind} has token {token!r}: it never existed or its run has ended"
            )
        return run_id

    def get_hook(self, token: str) -> HookRecord | None:
        rows = self._fetch(
            _HOOK_SELECT + " WHERE token = %s ORDER BY created_at DESC LIMIT 1", (token,)
        )
        return _hook_record(rows[0]) if rows else None

    def list_hooks(self, run_id: str | None = None, status: str | None = None) -> list[HookRecord]:
        where, params = _where({"run_id": run_id, "status": status})
        rows = self._fetch(_HOOK_SELECT + where + " ORDER BY created_at", params)
        return [_hook_record(row) for row in rows]

    def append_chunks(
        self, stream_id: str, run_id: str, namespace: str, chunks: Sequence[str], close: bool
    ) -> int:
        next_index = self._write(
            lambda tx: _append_chunks(tx, stream_id, run_id, namespace, list(chunks), close)
        )
        if next_index is None:
            raise ValueError(f"stream {stream_id!r} is closed: nothing more can be written to it")
        return next_index

    def read_chunks(
        self, stream_id: str, start_index: int, limit: int
    ) -> tuple[list[Chunk], StreamRecord | None]:
        def read(conn: Connection) -> tuple[list[Chunk], StreamRecord | None]:
            row = conn.execute(_STREAM_SELECT + " WHERE stream_id = %s", (stream_id,)).fetchone()
            if row is None:
                return [], None
            stream = _stream_record(row)
            start = max(0, stream.next_index + start_index) if start_index < 0 else start_index
            rows = conn.execute(
                "SELECT idx, data, created_at FROM stream_chunks"
                " WHERE stream_id = %s AND idx >= %s ORDER BY idx LIMIT %s",
                (stream_id, start, limit),
            ).fetchall()
            return [Chunk(*r) for r in rows], stream

        return self._read(read)

    def list_streams(self, run_id: str | None = None) -> list[StreamRecord]:
        where, params = _where({"run_id": run_id})
        rows = self._fetch(_STREAM_SELECT + where + " ORDER BY created_at", params)
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
            lambda tx: _claim(tx, deployment_id, worker_id, limit, lease_seconds, ahead)[0]
        )

    async def claim_tasks_async(
        self,
        deployment_id: str,
        worker_id: str,
        limit: int,
        lease_seconds: float,
        ahead: float = 0.0,
    ) -> list[Task]:
        return await self._write_async(
            lambda tx: _claim(tx, deployment_id, worker_id, limit, lease_seconds, ahead)[0]
        )

    async def claim_due_async(
        self,
        deployment_id: str,
        worker_id: str,
        limit: int,
        lease_seconds: float,
        ahead: float = 0.0,
    ) -> tuple[list[Task], float | None]:
        # One transaction of the writer: no has_due read first (a claim that finds
        # nothing writes nothing, so it costs no log flush) and no next_due after.
        return await self._write_async(
            lambda tx: _claim_due(tx, deployment_id, worker_id, limit, lease_seconds, ahead)
        )

    def next_due(self, deployment_id: str) -> float | None:
        rows = self._fetch(_NEXT_DUE, (deployment_id,))
        return float(rows[0][0]) if rows and rows[0][0] is not None else None

    def has_due(self, deployment_id: str, now: float) -> bool:
        rows = self._fetch(
            "SELECT 1 FROM tasks WHERE deployment_id = %s AND available_at <= %s LIMIT 1",
            (deployment_id, now),
        )
        return bool(rows)

    def commit_activation(self, activation: Activation) -> bool:
        deployment_id = self._deployments.get(activation.worker_id)
        return self._write(lambda tx: _commit_activation(tx, activation, deployment_id))

    async def commit_activation_async(self, activation: Activation) -> bool:
        deployment_id = self._deployments.get(activation.worker_id)
        return await self._write_async(lambda tx: _commit_activation(tx, activation, deployment_id))

    def finish_step(self, outcome: StepOutcome, activation: Activation | None = None) -> bool:
        deployment_id = self._deployments.get(outcome.worker_id)
        return self._write(lambda tx: _finish_step(tx, outcome, activation, deployment_id))

    async def finish_step_async(
        self, outcome: StepOutcome, activation: Activation | None = None
    ) -> bool:
        deployment_id = self._deployments.get(outcome.worker_id)
        return await self._write_async(
            lambda tx: _finish_step(tx, outcome, activation, deployment_id)
        )

    def heartbeat(self, worker_id: str, lease_seconds: float) -> None:
        def beat(tx: _Tx) -> None:
            now = time.time()
            tx.cur.execute(
                "UPDATE workers SET heartbeat_at = %s WHERE worker_id = %s", (now, worker_id)
            )
            tx.cur.execute(
                "UPDATE tasks SET available_at = %s WHERE lease_owner = %s",
                (now + lease_seconds, worker_id),
            )

        self._write(beat)

    def release_leases(self, worker_id: str) -> None:
        self._write(lambda tx: _release_leases(tx, worker_id))

    def release_task(self, run_id: str, step_id: str, worker_id: str, delay: float) -> None:
        def release(tx: _Tx) -> None:
            tx.cur.execute(
                "UPDATE tasks SET lease_owner = NULL, available_at = %s"
                " WHERE run_id = %s AND step_id = %s AND lease_owner = %s",
                (time.time() + delay, run_id, step_id, worker_id),
            )
            tx.work.add("*")

        self._write(release)

    # -- deployments ----------------------------------------------------------

    def register_worker(self, worker: WorkerInfo, manifest: dict[str, Any]) -> None:
        self._write(lambda tx: _register_worker(tx, worker, manifest))
        self._deployments[worker.worker_id] = worker.deployment_id

    def unregister_worker(self, worker_id: str) -> None:
        def unregister(tx: _Tx) -> None:
            tx.cur.execute(
                "UPDATE workers SET stopped_at = %s WHERE worker_id = %s", (time.time(), worker_id)
            )
            _release_leases(tx, worker_id)

        self._write(unregister)

    def get_deployment(self, deployment_id: str) -> DeploymentRecord | None:
        rows = self._fetch(_DEPLOYMENT_SELECT + " WHERE deployment_id = %s", (deployment_id,))
        return _deployment_record(rows[0]) if rows else None

    def latest_deployment(self, environment: str) -> DeploymentRecord | None:
        rows = self._fetch(
            _DEPLOYMENT_SELECT + " WHERE environment = %s ORDER BY created_at DESC LIMIT 1",
            (environment,),
        )
        return _deployment_record(rows[0]) if rows else None

    def list_deployments(
        self, environment: str | None, live_within: float
    ) -> list[DeploymentStatus]:
        def read(conn: Connection) -> tuple[list[Row], dict[str, int], dict[str, Row]]:
            in_flight: dict[str, int] = dict(
                conn.execute(
                    "SELECT deployment_id, COUNT(*) FROM runs"
                    " WHERE status IN ('pending', 'running') GROUP BY deployment_id"
                ).fetchall()
            )
            workers = {
                row[0]: row[1:]
                for row in conn.execute(
                    "SELECT deployment_id,"
                    " COUNT(*) FILTER (WHERE stopped_at IS NULL AND heartbeat_at >= %s),"
                    " MAX(heartbeat_at) FROM workers GROUP BY deployment_id",
                    (time.time() - live_within,),
                )
            }
            rows = conn.execute(
                "SELECT deployment_id, environment, created_at FROM deployments"
                # Runs can be pinned to a deployment no worker ever registered: show those too.
                " UNION ALL SELECT deployment_id, '', MIN(created_at) FROM runs r"
                " WHERE status IN ('pending', 'running') AND NOT EXISTS (SELECT 1 FROM"
                " deployments d WHERE d.deployment_id = r.deployment_id) GROUP BY deployment_id"
            ).fetchall()
            return rows, in_flight, workers

        rows, in_flight, workers = self._read(read)
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
        loop = asyncio.get_running_loop() if skip_own_loop else None
        entry = (callback, loop, work_only, deployment_id)
        self._listeners.append(entry)
        self._start_listener()

        def remove() -> None:
            if entry in self._listeners:
                self._listeners.remove(entry)

        return remove

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._writer.stop()
        if self._listener is not None:
            self._listener.join(timeout=2 * _LISTEN_TICK)
        self._pool.close(timeout=1.0)

    # -- internals --------------------------------------------------------

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
                raise ValueError(
                    f"world {self.shown_url}: no schema of its search_path exists "
                    "(create it, or pass ?schema=NAME to have it created)"
                )
            name = str(row[0])
            conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext('tether.migrations'), hashtext(%s))",
                (name,),
            )
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations"
                " (version integer PRIMARY KEY, applied_at double precision NOT NULL)"
            )
            applied = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
            for version, statements in schema.migrations("postgres"):
                if version in applied:
                    continue
                for statement in statements:
                    conn.execute(statement)  # type: ignore[call-overload]
                conn.execute(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES (%s, %s)",
                    (version, time.time()),
                )
            return name

    def _write(self, op: Callable[[_Tx], T]) -> T:
        if self._closed:
            raise RuntimeError(f"the world {self.shown_url} is closed")
        result: T = self._writer.submit(op, None).result()
        return result

    async def _write_async(
        self, op: Callable[[_Tx], T], on_committed: Callable[[T], None] | None = None
    ) -> T:
        """Commit ``op`` on the writer; ``on_committed`` is called from the writer thread."""
        if self._closed:
            raise RuntimeError(f"the world {self.shown_url} is closed")
        future = self._writer.submit(op, asyncio.get_running_loop())
        if on_committed is not None:
            callback = on_committed
            future.add_done_callback(lambda done: done.exception() or callback(done.result()))
        result: T = await asyncio.wrap_future(future)
        return result

    def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self._read(lambda conn: conn.execute(sql, params).fetchall())  # type: ignore[call-overload, no-any-return]

    def _read(self, fn: Callable[[Connection], T]) -> T:
        """Run a read on a pooled connection, again after a lost connection (reads are safe)."""
        if self._closed:
            raise RuntimeError(f"the world {self.shown_url} is closed")
        lost_since: float | None = None
        delay = _BACKOFF_MIN
        while True:
            try:
                with self._pool.connection(timeout=self._reconnect_timeout) as conn:
                    try:
                        return fn(conn)
                    except psycopg.Error as exc:
                        if not _lost(conn, exc):
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
            delay = min(delay * 2, _BACKOFF_MAX)

    def _notify(self, origins: set[asyncio.AbstractEventLoop | None], signal: str) -> None:
        """Wake local listeners; those on a loop skip commits only that loop made."""
        for callback, own_loop, work_only, deployment_id in list(self._listeners):
            if work_only and not _is_work_for(signal, deployment_id):
                continue
            if own_loop is None or origins != {own_loop}:
                callback()

    def _start_listener(self) -> None:
        with self._listen_lock:
            if self._listener is None and not self._closed:
                self._listener = threading.Thread(
                    target=self._listen, name="tether-postgres-listen", daemon=True
                )
                self._listener.start()

    def _listen(self) -> None:
        """Hear other processes' commits (NOTIFY); reconnect with backoff when the link drops."""
        delay = _BACKOFF_MIN
        while not self._closed:
            try:
                conn = psycopg.connect(self._conninfo, autocommit=True)
            except psycopg.OperationalError:
                time.sleep(delay)
                delay = min(delay * 2, _BACKOFF_MAX)
                continue
            delay = _BACKOFF_MIN
            try:
                with conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    # We may have missed commits while not listening.
                    self._notify({None}, "w")
                    while not self._closed:
                        heard = ""
                        for note in conn.notifies(timeout=_LISTEN_TICK, stop_after=1):
                            heard = self._heard(note.payload)
                        if heard:
                            # Take everything already delivered, then wake everyone once.
                            for note in conn.notifies(timeout=0):
                                heard = _merge_signals(heard, self._heard(note.payload))
                            self._notify({None}, heard)
            except psycopg.Error:
                if not self._closed:
                    log.warning("listener lost its connection to %s; reconnecting", self.shown_url)

    def _heard(self, payload: str) -> str:
        """The signal of another World's commit on our schema (``_Tx.signal``), else ``""``."""
        schema_name, _, rest = payload.partition("|")
        sender, _, signal = rest.partition("|")
        if schema_name != self._schema or sender == self._token:
            return ""
        return signal or "w"


#: The longest list of deployments a work signal names; past it, it names none (all wake).
_SIGNAL_MAX = 1000


def _work_signal(deployments: set[str]) -> str:
    """``"w:dep1,dep2"``: work became due for these deployments; ``"w"``: for any."""
    names = ",".join(sorted(deployments))
    if "*" in deployments or "," in "".join(deployments) or len(names) > _SIGNAL_MAX:
        return "w"
    return f"w:{names}"


def _merge_signals(a: str, b: str) -> str:
    """What two commits announce together."""
    if a.startswith("w") and b.startswith("w"):
        if a == "w" or b == "w":
            return "w"
        return _work_signal(set(a[2:].split(",")) | set(b[2:].split(",")))
    for signal in ("w", "r"):
        for side in (a, b):
            if side.startswith(signal):
                return side
    return ""


def _is_work_for(signal: str, deployment_id: str | None) -> bool:
    """Whether a commit that announced ``signal`` made work due for ``deployment_id``."""
    if not signal.startswith("w"):
        return False
    return signal == "w" or deployment_id is None or deployment_id in signal[2:].split(",")


class _Tx:
    """What an operation gets: the batch's cursors, its path, and what it must NOTIFY."""

    __slots__ = ("aux", "careful", "cur", "notify", "work")

    def __init__(self, conn: Connection, careful: bool) -> None:
        self.cur: Cursor = conn.cursor()
        #: A second cursor, for a read sent in the same round trip as one on ``cur``.
        self.aux: Cursor = conn.cursor()
        #: Read the state an operation depends on before writing (no fast path).
        self.careful = careful
        #: Readers elsewhere may be waiting for this commit (a result, a chunk).
        self.notify = False
        #: The deployments the commit made work due for (a task queued or released);
        #: ``"*"``: some whose names the operation did not know.
        self.work: set[str] = set()

    @property
    def signal(self) -> str:
        """What the commit announces: work due (``_work_signal``), ``"r"`` or ``""``.

        ``"r"``: only readers care (a run ended, a chunk was written).
        """
        return _work_signal(self.work) if self.work else "r" if self.notify else ""


class _StaleError(Exception):
    """A fast-path check failed: the batch must run again on the careful path."""


class _Item:
    __slots__ = ("future", "op", "origin")

    def __init__(
        self,
        op: Callable[[_Tx], Any],
        future: Future[Any],
        origin: asyncio.AbstractEventLoop | None,
    ) -> None:
        self.op = op
        self.future = future
        self.origin = origin


class _Writer:
    """Commits queued operations, many per transaction, on one connection of its own.

    A batch that fails commits each operation alone, so one bad operation
    fails only its caller. A batch that loses its connection is run again on
    a new one, unless its ``COMMIT`` was sent: then the server is asked
    whether that transaction committed (``pg_xact_status``) first.
    """

    def __init__(self, world: PostgresWorld) -> None:
        self._world = world
        self._conn: Connection | None = None
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread = threading.Thread(
            target=self._run, name="tether-postgres-writer", daemon=True
        )
        self._thread.start()

    def submit(self, op: Callable[[_Tx], T], origin: asyncio.AbstractEventLoop | None) -> Future[T]:
        """Queue ``op``; the future resolves once it is committed.

        The future cannot be cancelled: an operation once queued is committed
        even if its caller stops waiting (a cancelled task), and the writer
        must be able to resolve it.
        """
        future: Future[T] = Future()
        future.set_running_or_notify_cancel()
        self._queue.put(_Item(op, future, origin))
        return future

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)
        if self._conn is not None:
            self._conn.close()

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
            outcomes, signal = self._execute([i.op for i in batch])
            if signal:
                # Only commits someone else may wait for (a run ended, a task is due
                # for any worker, a chunk was written) wake this process's listeners.
                self._world._notify({i.origin for i in batch}, signal)
            for entry, (result, error) in zip(batch, outcomes, strict=True):
                if error is None:
                    entry.future.set_result(result)
                else:
                    entry.future.set_exception(error)

    def _execute(
        self, ops: list[Callable[[_Tx], Any]]
    ) -> tuple[list[tuple[Any, BaseException | None]], str]:
        """Commit ``ops`` in one transaction; if that fails, commit each alone.

        The batch first runs on the fast path, where operations check what
        they depend on inside the statement stream; if a check fails, it runs
        again on the careful path, where they read it first.
        Returns each operation's outcome and what the commits announced
        (``_Tx.signal``).
        """
        for careful in (False, True):
            try:
                results, signal = self._commit(ops, careful)
                return [(result, None) for result in results], signal
            except _StaleError:
                continue
            except Exception as exc:
                if len(ops) == 1 or isinstance(exc, WorldUnavailableError):
                    return [(None, exc)] * len(ops), ""
                break
        outcomes: list[tuple[Any, BaseException | None]] = []
        signal = ""
        for op in ops:
            try:
                (result,), announced = self._commit([op], True)
            except Exception as alone:
                outcomes.append((None, alone))
            else:
                outcomes.append((result, None))
                signal = _merge_signals(signal, announced)
        return outcomes, signal

    def _commit(self, ops: list[Callable[[_Tx], Any]], careful: bool) -> tuple[list[Any], str]:
        """Run ``ops`` in one transaction; returns their results and what to announce.

        The connection is in autocommit mode and the transaction is spelled
        out, so that ``BEGIN`` and the statements travel in one round trip
        and ``COMMIT`` in a second one. The transaction id, asked for after
        the statements, is only assigned if they wrote something: a batch
        that wrote nothing (an empty claim) commits without a log flush.
        """
        lost_since: float | None = None
        rollbacks = 0
        while True:
            conn = self._connection(lost_since)
            xid: str | None = None
            commit_sent = False
            results: list[Any] = []
            try:
                with conn.pipeline():
                    conn.cursor().execute("BEGIN")
                    tx = _Tx(conn, careful)
                    results = [op(tx) for op in ops]
                    if tx.signal:
                        tx.cur.execute(
                            "SELECT pg_notify(%s, %s)",
                            (CHANNEL, f"{self._world._payload}|{tx.signal}"),
                        )
                    xact = conn.cursor()
                    xact.execute("SELECT pg_current_xact_id_if_assigned()::text")
                    row = xact.fetchone()
                    xid = row[0] if row else None
                    commit_sent = True
                    xact.execute("COMMIT")
                return results, tx.signal
            except psycopg.Error as exc:
                if not _lost(conn, exc):
                    _rollback(conn)
                    if exc.sqlstate == _STALE:
                        raise _StaleError(str(exc)) from exc
                    if (
                        isinstance(exc, psycopg.errors.TransactionRollback)
                        and rollbacks < _ROLLBACK_RETRIES
                    ):
                        # A deadlock victim: nothing was written, run it again, a little
                        # later each time so that the two sides stop meeting.
                        rollbacks += 1
                        time.sleep(random.uniform(0, 0.002 * rollbacks))
                        continue
                    raise
                conn.close()
                self._conn = None
                if lost_since is None:
                    lost_since = time.monotonic()
                    log.warning("writer lost its connection to %s: %s", self._world.shown_url, exc)
                if commit_sent and xid is not None:
                    committed = self._committed(xid, lost_since)
                    log.warning(
                        "a commit cut off by the lost connection had %s",
                        "committed" if committed else "not committed: running it again",
                    )
                    if committed:
                        return results, "w"  # announce everything: cheap, and rare
            except BaseException:
                if not (conn.broken or conn.closed):
                    _rollback(conn)
                raise

    def _connection(self, lost_since: float | None) -> Connection:
        """The writer's connection, reconnecting with backoff for up to the reconnect timeout."""
        if self._conn is not None and not self._conn.closed:
            return self._conn
        delay = _BACKOFF_MIN
        started = lost_since if lost_since is not None else time.monotonic()
        while True:
            try:
                self._conn = self._world._connect(autocommit=True)
                if lost_since is not None:
                    log.warning("writer reconnected to %s", self._world.shown_url)
                return self._conn
            except WorldUnavailableError:
                if time.monotonic() - started > self._world._reconnect_timeout:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, _BACKOFF_MAX)

    def _committed(self, xid: str, lost_since: float) -> bool:
        """Whether the transaction whose ``COMMIT`` got no answer committed after all."""
        delay = _BACKOFF_MIN
        while True:
            conn = self._connection(lost_since)
            try:
                row = conn.execute("SELECT pg_xact_status(%s::xid8)", (xid,)).fetchone()
            except psycopg.Error as exc:
                if not _lost(conn, exc):
                    raise
                conn.close()
                self._conn = None
                row = None
            status = row[0] if row else None
            if status in ("committed", "aborted"):
                return bool(status == "committed")
            if time.monotonic() - lost_since > self._world._reconnect_timeout:
                raise WorldUnavailableError(
                    f"cannot tell whether a commit to {self._world.shown_url} succeeded: "
                    "the server is unreachable"
                )
            time.sleep(delay)  # still in progress on the server, or the server is away
            delay = min(delay * 2, _BACKOFF_MAX)


def _lost(conn: Connection, exc: psycopg.Error) -> bool:
    """Whether ``exc`` means the connection is gone, rather than a statement refused."""
    if conn.broken or conn.closed:
        return True
    state = exc.sqlstate
    if state is None:
        # Raised by the client itself: a dead socket, or a pipeline it could not finish.
        return isinstance(exc, psycopg.OperationalError)
    return state.startswith("08") or state in ("57P01", "57P02", "57P03")


def _rollback(conn: Connection) -> None:
    try:
        conn.rollback()
    except psycopg.Error:
        conn.close()


# -- operations run inside the writer's transaction --------------------------

_RUN_SELECT = (
    "SELECT run_id, workflow_name, deployment_id, status, input, output, error,"
    " parent_run_id, rerun_of, created_at, started_at, completed_at, last_seq FROM runs"
)
_LOCK_RUN = "SELECT status, last_seq, deployment_id FROM runs WHERE run_id = %s FOR UPDATE"


def _create_run(tx: _Tx, run: NewRun, activation: Activation | None) -> RunRecord:
    now = run.created_at or time.time()
    tx.cur.execute(
        "INSERT INTO runs (run_id, workflow_name, deployment_id, status, input, parent_run_id,"
        " rerun_of, created_at, last_seq) VALUES (%s, %s, %s, 'pending', %s, %s, %s, %s, 1)",
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
    tx.cur.execute(
        "INSERT INTO events (run_id, seq, type, name, payload, attrs, created_at)"
        " VALUES (%s, 1, 'run_created', %s, %s, %s, %s)",
        (run.run_id, run.workflow_name, run.input, json.dumps(attrs), now),
    )
    if activation is not None:
        _append(
            tx,
            run.run_id,
            run.deployment_id,
            activation.events,
            activation,
            schedule=any(e.type == "wait_created" for e in activation.events),
        )
    else:
        _queue_workflow(tx, run.run_id, run.deployment_id, now)
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


def _release_leases(tx: _Tx, worker_id: str) -> None:
    tx.cur.execute(
        "UPDATE tasks SET lease_owner = NULL, available_at = %s WHERE lease_owner = %s",
        (time.time(), worker_id),
    )
    tx.work.add("*")


_DEPLOYMENT_SELECT = "SELECT deployment_id, environment, manifest, created_at FROM deployments"


def _deployment_record(row: Row) -> DeploymentRecord:
    return DeploymentRecord(row[0], row[1], json.loads(row[2]), row[3])


def _register_worker(tx: _Tx, worker: WorkerInfo, manifest: dict[str, Any]) -> None:
    now = time.time()
    # Workers of one deployment may start at once: insert-or-nothing, then merge under a lock.
    tx.cur.execute(
        "INSERT INTO deployments (deployment_id, environment, manifest, created_at)"
        " VALUES (%s, %s, %s, %s) ON CONFLICT (deployment_id) DO NOTHING RETURNING 1",
        (worker.deployment_id, worker.environment, json.dumps(manifest), now),
    )
    if tx.cur.fetchone() is None:
        tx.cur.execute(
            "SELECT manifest FROM deployments WHERE deployment_id = %s FOR UPDATE",
            (worker.deployment_id,),
        )
        row = tx.cur.fetchone()
        merged = json.loads(row[0]) if row else {}
        for section, entries in manifest.items():
            merged.setdefault(section, {}).update(entries)
        tx.cur.execute(
            "UPDATE deployments SET manifest = %s WHERE deployment_id = %s",
            (json.dumps(merged), worker.deployment_id),
        )
    tx.cur.execute(
        "INSERT INTO workers (worker_id, deployment_id, hostname, pid, started_at, heartbeat_at)"
        " VALUES (%s, %s, %s, %s, %s, %s)",
        (worker.worker_id, worker.deployment_id, worker.hostname, worker.pid, now, now),
    )


def _run_state(tx: _Tx, run_id: str) -> tuple[str, int, str] | None:
    """The run's status, last seq and deployment, with its row locked until the commit."""
    tx.cur.execute(_LOCK_RUN, (run_id,))
    row = tx.cur.fetchone()
    return (row[0], row[1], row[2]) if row else None


def _commit_activation(tx: _Tx, activation: Activation, deployment_id: str | None) -> bool:
    """Append an activation's events if the run is still where it was computed from.

    ``deployment_id`` is the deployment of the activation's worker, when
    this World registered it: then the fast path sends the check with the
    writes (``tether_append`` raises if it fails) instead of reading first.
    """
    run_id = activation.run_id
    if not tx.careful and deployment_id is not None:
        _append(
            tx,
            run_id,
            deployment_id,
            activation.events,
            activation,
            expected_seq=activation.expected_seq,
            schedule=True,
        )
        return True
    state = _run_state(tx, activation.run_id)
    if state is None:
        return False
    status, last_seq, deployment_id = state
    if status in TERMINAL_STATUSES or last_seq != activation.expected_seq:
        if status not in TERMINAL_STATUSES:
            _queue_workflow(tx, run_id, deployment_id, time.time(), force=True)
        return False
    _append(tx, run_id, deployment_id, activation.events, activation, schedule=True)
    return True


def _finish_step(
    tx: _Tx, outcome: StepOutcome, activation: Activation | None, deployment_id: str | None
) -> bool:
    """Record a step attempt's end, with the activation it led to when there is one.

    ``deployment_id`` as for ``_commit_activation``: it allows the fast path.
    """
    # The run's workflow task only changes if a sleep began or ended.
    schedule = activation is not None and any(
        e.type in ("wait_created", "wait_completed") for e in activation.events
    )
    if (
        activation is not None
        and outcome.status != "retrying"
        and not tx.careful
        and deployment_id is not None
    ):
        # The step's outcome is the activation's first event (see below). The run being
        # at the expected seq also means no other attempt recorded the step meanwhile.
        _append(
            tx,
            outcome.run_id,
            deployment_id,
            activation.events,
            activation,
            expected_seq=activation.expected_seq,
            schedule=schedule,
        )
        return True
    # Lock the run, then read the step in a statement of its own: it starts after the
    # lock is granted, so it sees what the previous holder committed (one round trip).
    tx.cur.execute(_LOCK_RUN, (outcome.run_id,))
    tx.aux.execute(
        "SELECT status FROM steps WHERE run_id = %s AND step_id = %s",
        (outcome.run_id, outcome.step_id),
    )
    run = tx.cur.fetchone()
    step = tx.aux.fetchone()
    if run is None or step is None:
        return False
    status, last_seq, deployment_id = run
    if status in TERMINAL_STATUSES or step[0] in ("completed", "failed"):
        return False  # the run ended or another attempt already recorded the step
    if (
        activation is not None
        and outcome.status != "retrying"
        and activation.expected_seq == last_seq
    ):
        # The activation's first event is this outcome, fed to the cached run.
        _append(tx, outcome.run_id, deployment_id, activation.events, activation, schedule=schedule)
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
    _append(tx, outcome.run_id, deployment_id, [event], None)
    if outcome.status != "retrying":
        _queue_workflow(tx, outcome.run_id, deployment_id, now)
    return False


_NEXT_DUE = "SELECT MIN(available_at) FROM tasks WHERE deployment_id = %s"
_FIRST_DUE = schema.first_due_query("%s")


def _claim_due(
    tx: _Tx, deployment_id: str, worker_id: str, limit: int, lease: float, ahead: float
) -> tuple[list[Task], float | None]:
    """``claim_due_async``'s transaction: the claim, and the next due time read with it."""
    next_due = tx.cur.connection.cursor()
    tasks, handed_back = _claim(tx, deployment_id, worker_id, limit, lease, ahead, next_due)
    now = time.time()
    if len(tasks) >= limit:
        return tasks, now
    row = next_due.fetchone()  # arrived with the claim's rows: no round trip of its own
    due = schema.claim_again_at(row, ahead)
    if handed_back:
        due = min(due, now + _BUSY_RUN_RETRY) if due is not None else now + _BUSY_RUN_RETRY
    return tasks, due


def _claim(
    tx: _Tx,
    deployment_id: str,
    worker_id: str,
    limit: int,
    lease: float,
    ahead: float,
    next_due: Cursor | None = None,
) -> tuple[list[Task], bool]:
    """Lease due tasks; returns them and whether some were handed back (their run was busy).

    ``ahead``: see ``World.claim_tasks``. ``next_due``, if given, is sent
    the deployment's first due task query in the claim's round trip (it
    sees the leases just taken).
    """
    now = time.time()
    tx.cur.execute(
        "WITH due AS (SELECT task_id, available_at FROM tasks"
        " WHERE deployment_id = %s AND available_at <= %s"
        " AND (available_at <= %s OR (kind = 'workflow' AND lease_owner IS NULL))"
        " ORDER BY available_at LIMIT %s FOR UPDATE SKIP LOCKED)"
        " UPDATE tasks t SET lease_owner = %s, available_at = %s FROM due"
        " WHERE t.task_id = due.task_id"
        " RETURNING t.task_id, t.kind, t.run_id, t.step_id, due.available_at",
        (deployment_id, now + ahead, now, limit, worker_id, now + lease),
    )
    if next_due is not None:
        next_due.execute(_FIRST_DUE, (deployment_id,))  # same round trip as the claim
    rows = sorted(tx.cur.fetchall())
    if not rows:
        return [], False
    due_at = {row[0]: row[4] for row in rows}
    steps = [(run_id, step_id) for _, kind, run_id, step_id, _ in rows if kind == "step"]
    # Lock the runs before appending step_started; the steps are read by a later
    # statement, after the locks are granted. Everyone else locks a run before its
    # tasks, so a claim, holding tasks, must not wait for a run: SKIP LOCKED, and
    # the tasks of a run busy elsewhere are handed back, due again in a moment.
    # Statements that take an array are planned for each execution (prepare=False):
    # a prepared statement's generic plan, made while the table was small, would
    # scan the whole table for ever after.
    run_ids = sorted({row[2] for row in rows})
    tx.cur.execute(
        "SELECT run_id, status, last_seq FROM runs WHERE run_id = ANY(%s) ORDER BY run_id"
        " FOR UPDATE SKIP LOCKED",
        (run_ids,),
        prepare=False,
    )
    tx.aux.execute(
        "SELECT s.run_id, s.step_id, s.step_name, s.status, s.attempt, s.input FROM steps s"
        " JOIN unnest(%s::text[], %s::text[]) AS k(run_id, step_id)"
        " ON s.run_id = k.run_id AND s.step_id = k.step_id",
        ([r for r, _ in steps], [s for _, s in steps]),
        prepare=False,
    )
    runs = {row[0]: (row[1], row[2]) for row in tx.cur.fetchall()}
    step_rows = {(row[0], row[1]): row[2:] for row in tx.aux.fetchall()}
    busy: set[str] = set()
    if len(runs) < len(run_ids):
        # Missing: locked by another transaction, or gone (then the task is dropped).
        tx.cur.execute(
            "SELECT run_id FROM runs WHERE run_id = ANY(%s)",
            ([r for r in run_ids if r not in runs],),
            prepare=False,
        )
        busy = {row[0] for row in tx.cur.fetchall()}
    tasks: list[Task] = []
    dropped: list[int] = []
    handed_back: list[int] = []
    for task_id, kind, run_id, step_id, _ in rows:
        state = runs.get(run_id)
        if run_id in busy:
            handed_back.append(task_id)
            continue
        if state is None or state[0] in TERMINAL_STATUSES:
            dropped.append(task_id)
            continue
        if kind == "workflow":
            tasks.append(Task(task_id, "workflow", run_id, deployment_id, due_at=due_at[task_id]))
            continue
        step = step_rows.get((run_id, step_id))
        if step is None or step[1] in ("completed", "failed"):
            dropped.append(task_id)
            continue
        step_name, _, attempt, step_input = step
        last_seq = state[1] + 1
        runs[run_id] = (state[0], last_seq)
        started = EventRecord(
            run_id,
            last_seq,
            "step_started",
            step_id,
            attrs={"attempt": attempt + 1},
            created_at=now,
        )
        _append(tx, run_id, deployment_id, [started], None)
        task = Task(task_id, "step", run_id, deployment_id, step_id, step_name, step_input)
        tasks.append(dataclasses.replace(task, attempt=attempt + 1, due_at=due_at[task_id]))
    if dropped:
        tx.cur.execute("DELETE FROM tasks WHERE task_id = ANY(%s)", (dropped,), prepare=False)
    if handed_back:
        # Due again in a moment, or at its time if it was taken ahead of it.
        tx.cur.execute(
            "UPDATE tasks t SET lease_owner = NULL, available_at = GREATEST(b.due_at, %s)"
            " FROM unnest(%s::bigint[], %s::double precision[]) AS b(task_id, due_at)"
            " WHERE t.task_id = b.task_id",
            (now + _BUSY_RUN_RETRY, handed_back, [due_at[t] for t in handed_back]),
            prepare=False,
        )
    return tasks, bool(handed_back)


def _cancel_runs(tx: _Tx, run_ids: list[str]) -> CancelResult:
    result = CancelResult()
    if not run_ids:
        return result
    tx.cur.execute(
        "SELECT run_id, status, last_seq, deployment_id FROM runs WHERE run_id = ANY(%s)"
        " ORDER BY run_id FOR UPDATE",
        (sorted(set(run_ids)),),
        prepare=False,
    )
    states = {row[0]: row[1:] for row in tx.cur.fetchall()}
    now = time.time()
    for run_id in run_ids:
        state = states.get(run_id)
        if state is None or state[0] in TERMINAL_STATUSES:
            continue
        states[run_id] = ("cancelled", *state[1:])  # a repeated id is cancelled once
        # The status is tested here, not in the WHERE: there, a plan made on a young
        # table could find the run's hooks by scanning every active one (its index).
        tx.cur.execute(
            "SELECT hook_id, status FROM hooks WHERE run_id = %s ORDER BY created_at", (run_id,)
        )
        active = [hook_id for hook_id, status in tx.cur.fetchall() if status == "active"]
        events = [
            EventRecord(
                run_id,
                state[1] + i,
                "hook_disposed",
                hook_id,
                attrs={"reason": "run cancelled"},
                created_at=now,
            )
            for i, hook_id in enumerate(active, start=1)
        ]
        events.append(
            EventRecord(run_id, state[1] + len(events) + 1, "run_cancelled", created_at=now)
        )
        _append(tx, run_id, state[2], events, None)
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
    return " WHERE " + " AND ".join(f"{c} = %s" for c in used), list(used.values())


def _hook_record(row: Row) -> HookRecord:
    metadata = json.loads(row[5]) if row[5] else None
    return HookRecord(row[0], row[1], row[2], row[3], bool(row[4]), metadata, row[6], row[7])


def _stream_record(row: Row) -> StreamRecord:
    return StreamRecord(row[0], row[1], row[2], row[3], bool(row[4]), row[5], row[6])


def _resume_hook(tx: _Tx, token: str, payload: str, webhook_only: bool) -> str | None:
    tx.cur.execute(
        "SELECT run_id, hook_id, webhook FROM hooks WHERE token = %s AND status = 'active'",
        (token,),
    )
    row = tx.cur.fetchone()
    if row is None or (webhook_only and not row[2]):
        return None
    run_id, hook_id = row[0], row[1]
    state = _run_state(tx, run_id)
    if state is None or state[0] in TERMINAL_STATUSES:
        return None
    now = time.time()
    event = EventRecord(
        run_id, state[1] + 1, "hook_received", hook_id, payload=payload, created_at=now
    )
    _append(tx, run_id, state[2], [event], None)
    _queue_workflow(tx, run_id, state[2], now)
    return str(run_id)


def _append_chunks(
    tx: _Tx,
    stream_id: str,
    run_id: str,
    namespace: str,
    chunks: list[str],
    close: bool,
) -> int | None:
    now = time.time()
    # Two writers may create the stream at once: insert-or-nothing, then lock the row.
    tx.cur.execute(
        "INSERT INTO streams (stream_id, run_id, namespace, next_index, closed, created_at)"
        " VALUES (%s, %s, %s, 0, false, %s) ON CONFLICT (stream_id) DO NOTHING",
        (stream_id, run_id, namespace, now),
    )
    tx.cur.execute(
        "SELECT next_index, closed FROM streams WHERE stream_id = %s FOR UPDATE", (stream_id,)
    )
    row = tx.cur.fetchone()
    if row is None or row[1]:
        return None
    start = int(row[0])
    if chunks:
        tx.cur.executemany(
            "INSERT INTO stream_chunks (stream_id, idx, data, created_at) VALUES (%s, %s, %s, %s)",
            [(stream_id, start + i, chunk, now) for i, chunk in enumerate(chunks)],
        )
    next_index = start + len(chunks)
    tx.cur.execute(
        "UPDATE streams SET next_index = %s, closed = %s, closed_at = %s WHERE stream_id = %s",
        (next_index, close, now if close else None, stream_id),
    )
    tx.notify = True  # readers in other processes wait for chunks
    return next_index


def _wake_sleeps(tx: _Tx, run_id: str) -> int:
    tx.cur.execute(_LOCK_RUN, (run_id,))
    tx.aux.execute(
        "SELECT wait_id FROM waits WHERE run_id = %s AND status = 'waiting'"
        " ORDER BY created_at, length(wait_id), wait_id",
        (run_id,),
    )
    state = tx.cur.fetchone()
    waiting = [row[0] for row in tx.aux.fetchall()]
    if state is None or state[0] in TERMINAL_STATUSES or not waiting:
        return 0
    now = time.time()
    events = [
        EventRecord(
            run_id, state[1] + i, "wait_completed", wait_id, attrs={"woken": True}, created_at=now
        )
        for i, wait_id in enumerate(waiting, start=1)
    ]
    _append(tx, run_id, state[2], events, None)
    _queue_workflow(tx, run_id, state[2], now)
    return len(waiting)


#: Event types whose commit someone may wait for: a run's result, a retry due for any worker.
_ENDING = frozenset({"run_completed", "run_failed", "run_cancelled"})
_WORKING = frozenset({"step_retrying"})


def _append(
    tx: _Tx,
    run_id: str,
    deployment_id: str,
    events: Sequence[EventRecord],
    activation: Activation | None,
    *,
    expected_seq: int | None = None,
    schedule: bool = False,
) -> None:
    """Insert events and derive the views from them, in the caller's transaction.

    One statement: ``tether_append`` (migrations 0005, 0006) does the work on the
    server. With ``expected_seq`` it first checks that the run is still there
    (the fast path); with ``schedule`` the run's workflow task becomes its
    earliest pending sleep afterwards. A hook that lost its token to another
    active hook is answered at once and the run queued for a workflow task.
    """
    if any(
        e.type in _WORKING
        or e.type == "hook_created"  # a token conflict queues the run
        or (e.type == "step_created" and activation is None)  # due at once, for any worker
        for e in events
    ):
        tx.work.add(deployment_id)
    elif any(e.type in _ENDING for e in events):
        tx.notify = True
    tx.cur.execute(
        "SELECT tether_append(%s, %s, %s, %s, %s, %s, %s, %s)",
        (
            run_id,
            deployment_id,
            expected_seq,
            json.dumps(
                [
                    [
                        e.seq,
                        e.type,
                        e.correlation_id,
                        e.name,
                        e.payload,
                        e.attrs or None,
                        e.created_at,
                    ]
                    for e in events
                ]
            ),
            activation.worker_id if activation else None,
            activation.lease_seconds if activation else 0.0,
            schedule,
            time.time(),
        ),
    )


def _queue_workflow(
    tx: _Tx, run_id: str, deployment_id: str, at: float, *, force: bool = False
) -> None:
    """Make sure a workflow task for the run is due no later than ``at``.

    A task leased to a worker is left alone (that worker's activation will
    find the log moved and re-queue it) unless ``force`` takes the lease back.
    """
    tx.cur.execute(
        "INSERT INTO tasks (kind, run_id, deployment_id, available_at)"
        " VALUES ('workflow', %s, %s, %s) ON CONFLICT (run_id, kind, step_id) DO UPDATE SET"
        " available_at = LEAST(tasks.available_at, EXCLUDED.available_at), lease_owner = NULL"
        + ("" if force else " WHERE tasks.lease_owner IS NULL"),
        (run_id, deployment_id, at),
    )
    tx.work.add(deployment_id)


def _event_record(row: Row) -> EventRecord:
    attrs = json.loads(row[6]) if row[6] else None
    return EventRecord(row[0], row[1], row[2], row[3], row[4], row[5], attrs, row[7])
