"""PostgreSQL's group commit: one writer connection, batches sent whole, crash-safe commits.

A batch that loses its connection is run again on a new one, unless its
``COMMIT`` was sent: then the server is asked for the transaction's status
(``pg_xact_status``) before it is either retried or reported as committed,
so nothing is written twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, TypeVar

import psycopg
import psycopg.errors

from tether.clock import Clock
from tether.worlds.base import BUSY_LOAD, closed_error
from tether.worlds.batches import Outcome, answer, batches, call_committed, resolve
from tether.worlds.operations import RunState, Tx
from tether.worlds.postgres_listener import (
    BACKOFF_MAX,
    BACKOFF_MIN,
    CHANNEL,
    WORK_CHANNEL,
    WORKER_PREFIX,
)
from tether.worlds.postgres_url import WorldUnavailableError
from tether.worlds.records import Activation, EventRecord
from tether.worlds.signals import merge_signals, work_signal
from tether.worlds.sql import POSTGRES, Row

T = TypeVar("T")
Connection = psycopg.Connection[Row]
Op = Callable[[Tx], Any]

log = logging.getLogger("tether.postgres")

#: Retries of a batch the server aborted to break a deadlock (it wrote nothing).
_ROLLBACK_RETRIES = 10
#: The status of a statement's result that holds rows.
_ROWS = psycopg.pq.ExecStatus.TUPLES_OK
#: The SQLSTATE ``tether_append`` raises when a run is not where its caller expected.
_STALE = "TT001"
#: Event types whose commit someone may wait for: a run's result, a retry due for any worker.
_ENDING = frozenset({"run_completed", "run_failed", "run_cancelled"})
_WORKING = frozenset({"step_retrying"})
#: A worker is woken by name only if it beat this recently (a default worker beats every
#: 2.5 s); others, and deployments without such a worker, are woken on WORK_CHANNEL.
LIVE_SECONDS = 5.0
#: A commit's announcement: every signal for readers, and work for one deployment to one
#: live worker of it (not one of this World's own: they know). The busiest that is not
#: busy is picked, else the least busy: work packs onto as few processes as can carry
#: it, whose commits then stay large, and spills to the next as one fills up.
_ANNOUNCE_TO_ONE = (
    "SELECT pg_notify(%s, %s), pg_notify(COALESCE((SELECT"
    f" '{WORKER_PREFIX}' || md5(worker_id) FROM workers WHERE deployment_id = %s"
    " AND stopped_at IS NULL AND heartbeat_at >= %s AND worker_id <> ALL(%s::text[])"
    f" ORDER BY cpu_load >= {BUSY_LOAD}, CASE WHEN cpu_load < {BUSY_LOAD} THEN -cpu_load"
    " ELSE cpu_load END, started_at, worker_id LIMIT 1), %s), %s)"
)


class PgTx:
    """The transaction adapter (``operations.Tx``) on the writer's connection.

    It also gathers what the commit must NOTIFY (``signal``). Statements are
    bound here (client-side) and held until something needs an answer: then
    every held statement and the read travel as one message, which the
    server runs in order. Held writes cost no round trip, and a whole batch
    of them one send: the server parses them as one string, and the client
    spends a fraction of what a statement each costs it (``send``).
    """

    __slots__ = ("_binder", "_held", "careful", "clock", "notify", "work", "wrote")

    sql = POSTGRES

    def __init__(self, conn: Connection, careful: bool, clock: Clock) -> None:
        self._binder = psycopg.ClientCursor(conn)
        #: Bound statements not sent yet; the transaction's BEGIN first.
        self._held: list[str] = ["BEGIN"]
        #: Whether anything sent may have written (else the commit needs no transaction id).
        self.wrote = False
        #: Read the state an operation depends on before writing (no fast path).
        self.careful = careful
        self.clock = clock
        #: Readers elsewhere may be waiting for this commit (a result, a chunk).
        self.notify = False
        #: The deployments the commit made work due for (a task queued or released);
        #: ``"*"``: some whose names the operation did not know.
        self.work: set[str] = set()

    @property
    def fast(self) -> bool:
        return not self.careful

    @property
    def signal(self) -> str:
        """What the commit announces (``signals``): work due, ``"r"`` or ``""``."""
        return work_signal(self.work) if self.work else "r" if self.notify else ""

    def _bind(self, sql: str, params: Sequence[Any]) -> str:
        return self._binder.mogrify(sql, params) if params else sql  # type: ignore[arg-type]

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._held.append(self._bind(sql, params))

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._held.extend(self._bind(sql, row) for row in rows)

    def send(self, *queries: tuple[str, Sequence[Any]], writes: bool = True) -> list[list[Row]]:
        """Send the held statements and ``queries`` in one message; the queries' rows.

        ``writes=False``: the queries only read (or their caller says, from
        their rows, whether they wrote: ``wrote``).
        """
        self.wrote = self.wrote or writes or self.holds_writes()
        held, self._held = self._held, []
        statements = held + [self._bind(sql, params) for sql, params in queries]
        cur = self._binder
        cur.execute(";\n".join(statements))
        # One result per statement, in order: skip the held ones' to the queries'.
        for _ in held:
            cur.nextset()
        answers: list[list[Row]] = []
        for i in range(len(queries)):
            if i:
                cur.nextset()
            # The result's status, not ``description``: that builds a column object each.
            result = cur.pgresult
            answers.append(cur.fetchall() if result and result.status == _ROWS else [])
        return answers

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self.send((sql, params))[0]

    def query_one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        rows = self.query(sql, params)
        return rows[0] if rows else None

    def query_together(self, *queries: tuple[str, Sequence[Any]]) -> list[list[Row]]:
        return self.send(*queries)

    def holds_writes(self) -> bool:
        """Whether statements other than the BEGIN wait to be sent (held ones write)."""
        return len(self._held) > (0 if self.begun else 1)

    @property
    def begun(self) -> bool:
        """Whether the transaction was sent to the server (its BEGIN is no longer held)."""
        return self._held[:1] != ["BEGIN"]

    def xid(self) -> str | None:
        """Send what is held; the transaction's id, if it wrote anything (else ``None``)."""
        (rows,) = self.send(("SELECT pg_current_xact_id_if_assigned()::text", ()))
        return str(rows[0][0]) if rows and rows[0][0] is not None else None

    def lock_run_and_step(self, run_id: str, step_id: str) -> tuple[RunState, str] | None:
        # The step in a statement of its own, sent with the lock in one round trip: it
        # starts after the lock is granted.
        runs, steps = self.query_together(
            (self.sql.lock_run, (run_id,)), (self.sql.step_status, (run_id, step_id))
        )
        if not runs or not steps:
            return None
        return (runs[0][0], runs[0][1], runs[0][2]), steps[0][0]

    def lock_runs(self, run_ids: Sequence[str]) -> dict[str, RunState]:
        # In run_id order, as every transaction that locks several runs does: no deadlock.
        rows = self.query(
            "SELECT run_id, status, last_seq, deployment_id FROM runs WHERE run_id = ANY(%s)"
            " ORDER BY run_id FOR UPDATE",
            (sorted(set(run_ids)),),
        )
        return {row[0]: (row[1], row[2], row[3]) for row in rows}

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
        # One statement: tether_append (migrations 0005 to 0007) does the work on the server.
        if any(
            e.type in _WORKING
            or e.type == "hook_created"  # a token conflict queues the run
            or (e.type == "step_created" and activation is None)  # due at once, for any worker
            for e in events
        ):
            self.work.add(deployment_id)
        elif any(e.type in _ENDING for e in events):
            self.notify = True
        encoded = json.dumps([_event_row(e) for e in events])
        self.execute(
            "SELECT tether_append(%s, %s, %s, %s, %s, %s, %s, %s)",
            (
                run_id,
                deployment_id,
                expected_seq,
                encoded,
                activation.worker_id if activation else None,
                activation.lease_seconds if activation else 0.0,
                schedule,
                self.clock.time(),
            ),
        )

    def work_due(self, deployment_id: str) -> None:
        self.work.add(deployment_id)

    def readers_wait(self) -> None:
        self.notify = True


def _event_row(e: EventRecord) -> list[Any]:
    """One event as ``tether_append`` (0007) takes it: nothing it parses holds a ``\\u0000``.

    PostgreSQL's json operators fail on a document holding that escape, which
    ``json.dumps`` writes for a NUL: the attrs travel as their JSON text, in a
    string, and hook metadata (any JSON a user gave) likewise in the attrs the
    function reads, the eighth element.
    """
    if not e.attrs:
        return [e.seq, e.type, e.correlation_id, e.name, e.payload, None, e.created_at]
    row = [e.seq, e.type, e.correlation_id, e.name, e.payload, json.dumps(e.attrs), e.created_at]
    if "metadata" in e.attrs:
        metadata = e.attrs["metadata"]
        row.append({**e.attrs, "metadata": None if metadata is None else json.dumps(metadata)})
    return row


class StaleError(Exception):
    """A fast-path check failed: the batch must run again on the careful path."""


class _Item:
    """A queued operation: a thread waits on ``future``, or a loop (``origin``) on ``waiter``."""

    __slots__ = ("future", "on_committed", "op", "origin", "waiter")

    def __init__(
        self,
        op: Op,
        future: Future[Any] | None,
        origin: asyncio.AbstractEventLoop | None,
        waiter: asyncio.Future[Any] | None = None,
        on_committed: Callable[[Any], None] | None = None,
    ):
        self.op = op
        self.future = future
        self.origin = origin
        self.waiter = waiter
        self.on_committed = on_committed


def _settle(answers: list[tuple[asyncio.Future[Any], Outcome]]) -> None:
    """On a loop: hand each waiting coroutine what its operation came to."""
    for waiter, outcome in answers:
        answer(waiter, outcome)


class Writer:
    """Commits queued operations, many per transaction, on one connection of its own.

    A batch that fails commits each operation alone, so one bad operation
    fails only its caller. ``on_commit(origins, signal)`` is called after a
    batch whose commit announced something, with the loops its operations
    came from.
    """

    def __init__(
        self,
        connect: Callable[[], Connection],
        *,
        clock: Clock,
        payload: str,
        shown_url: str,
        reconnect_timeout: float,
        on_commit: Callable[[set[asyncio.AbstractEventLoop | None], str], None],
        own_workers: Callable[[], list[str]],
    ) -> None:
        self._connect = connect
        self._own_workers = own_workers
        self._clock = clock
        self._payload = payload
        self._shown_url = shown_url
        self._reconnect_timeout = reconnect_timeout
        self._on_commit = on_commit
        self._conn: Connection | None = None
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        #: Set by stop() under ``_closing``: nothing is queued after the stop marker
        #: (it would never be taken, and its caller would wait forever).
        self._closing = threading.Lock()
        self._stopped = False
        self._thread = threading.Thread(
            target=self._run, name="tether-postgres-writer", daemon=True
        )
        self._thread.start()

    def submit(self, op: Callable[[Tx], T], origin: asyncio.AbstractEventLoop | None) -> Future[T]:
        """Queue ``op``; the future resolves once it is committed.

        The future cannot be cancelled: an operation once queued is committed
        even if its caller stops waiting (a cancelled task), and the writer
        must be able to resolve it.
        """
        future: Future[T] = Future()
        future.set_running_or_notify_cancel()
        self._put(_Item(op, future, origin))
        return future

    def submit_async(
        self, op: Callable[[Tx], T], on_committed: Callable[[T], None] | None = None
    ) -> asyncio.Future[T]:
        """Queue ``op`` from a running loop; the future resolves on it once committed.

        ``on_committed`` is called with the result from the writer thread, at
        once, even if the caller stopped waiting. A batch's answers reach each
        loop in one call, not one per operation.
        """
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[T] = loop.create_future()
        self._put(_Item(op, None, loop, waiter, on_committed))
        return waiter

    def _put(self, item: _Item) -> None:
        with self._closing:
            if self._stopped:
                raise closed_error(self._shown_url)
            self._queue.put(item)

    def stop(self) -> None:
        """Finish the queued batches and stop the writer thread."""
        with self._closing:
            self._stopped = True
            self._queue.put(None)
        self._thread.join(timeout=10)
        if self._conn is not None:
            self._conn.close()

    def _run(self) -> None:
        for batch in batches(self._queue):
            outcomes, signal = self._execute([i.op for i in batch])
            if signal:
                # Only commits someone else may wait for (a run ended, a task is due
                # for any worker, a chunk was written) wake this process's listeners.
                self._on_commit({i.origin for i in batch}, signal)
            answers: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Outcome]]]
            answers = {}
            for entry, outcome in zip(batch, outcomes, strict=True):
                call_committed(entry.on_committed, outcome)
                if entry.future is not None:
                    resolve(entry.future, outcome)
                elif entry.waiter is not None and entry.origin is not None:
                    answers.setdefault(entry.origin, []).append((entry.waiter, outcome))
            for loop, settled in answers.items():
                with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits
                    loop.call_soon_threadsafe(_settle, settled)

    def _execute(self, ops: list[Op]) -> tuple[list[Outcome], str]:
        """Commit ``ops`` in one transaction; if that fails, commit each alone.

        The batch first runs on the fast path, where operations check what
        they depend on inside the statement stream; if a check fails, it runs
        again on the careful path, where they read it first.
        Returns each operation's outcome and what the commits announced
        (``PgTx.signal``).
        """
        for careful in (False, True):
            try:
                results, signal = self._commit(ops, careful)
                return [(result, None) for result in results], signal
            except StaleError:
                continue
            except Exception as exc:
                if len(ops) == 1 or isinstance(exc, WorldUnavailableError):
                    return [(None, exc)] * len(ops), ""
                break
        outcomes: list[Outcome] = []
        signal = ""
        for op in ops:
            try:
                (result,), announced = self._commit([op], True)
            except Exception as alone:
                outcomes.append((None, alone))
            else:
                outcomes.append((result, None))
                signal = merge_signals(signal, announced)
        return outcomes, signal

    def _commit(self, ops: list[Op], careful: bool) -> tuple[list[Any], str]:
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
                tx = PgTx(conn, careful, self._clock)
                results = [op(tx) for op in ops]
                if tx.signal:
                    self._announce(tx)
                if tx.wrote or tx.holds_writes():
                    xid = tx.xid()
                elif not tx.begun:
                    return results, tx.signal  # nothing was sent: nothing to commit
                # Read only (an empty claim): a COMMIT lost on the way is harmless to
                # run again, so no transaction id is asked for first.
                commit_sent = True
                conn.commit()  # the BEGIN's transaction: COMMIT, without a cursor
                return results, tx.signal
            except psycopg.Error as exc:
                if not lost(conn, exc):
                    _rollback(conn)
                    if exc.sqlstate == _STALE:
                        raise StaleError(str(exc)) from exc
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
                    log.warning("writer lost its connection to %s: %s", self._shown_url, exc)
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

    def _announce(self, tx: PgTx) -> None:
        """NOTIFY what the commit announces: readers on CHANNEL, workers as it says."""
        said = f"{self._payload}|{tx.signal}"
        if not tx.work:
            tx.execute("SELECT pg_notify(%s, %s)", (CHANNEL, said))
            return
        work = f"{self._payload}|{work_signal(tx.work)}"
        if len(tx.work) > 1 or "*" in tx.work:
            tx.execute(
                "SELECT pg_notify(%s, %s), pg_notify(%s, %s)", (CHANNEL, said, WORK_CHANNEL, work)
            )
            return
        (deployment_id,) = tx.work
        live_since = self._clock.time() - LIVE_SECONDS
        tx.execute(
            _ANNOUNCE_TO_ONE,
            (CHANNEL, said, deployment_id, live_since, self._own_workers(), WORK_CHANNEL, work),
        )

    def _connection(self, lost_since: float | None) -> Connection:
        """The writer's connection, reconnecting with backoff for up to the reconnect timeout."""
        if self._conn is not None and not self._conn.closed:
            return self._conn
        delay = BACKOFF_MIN
        started = lost_since if lost_since is not None else time.monotonic()
        while True:
            try:
                self._conn = self._connect()
                if lost_since is not None:
                    log.warning("writer reconnected to %s", self._shown_url)
                return self._conn
            except WorldUnavailableError:
                if time.monotonic() - started > self._reconnect_timeout:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)

    def _committed(self, xid: str, lost_since: float) -> bool:
        """Whether the transaction whose ``COMMIT`` got no answer committed after all."""
        delay = BACKOFF_MIN
        while True:
            conn = self._connection(lost_since)
            try:
                row = conn.execute("SELECT pg_xact_status(%s::xid8)", (xid,)).fetchone()
            except psycopg.Error as exc:
                if not lost(conn, exc):
                    raise
                conn.close()
                self._conn = None
                row = None
            status = row[0] if row else None
            if status in ("committed", "aborted"):
                return bool(status == "committed")
            if time.monotonic() - lost_since > self._reconnect_timeout:
                raise WorldUnavailableError(
                    f"cannot tell whether a commit to {self._shown_url} succeeded: "
                    "the server is unreachable"
                )
            time.sleep(delay)  # still in progress on the server, or the server is away
            delay = min(delay * 2, BACKOFF_MAX)


def lost(conn: Connection, exc: psycopg.Error) -> bool:
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
