"""What a World on a SQL database does the same way whatever the database: ``SqlWorld``.

A backend subclasses it and supplies how to read (``_read``), how to commit
operations (``_write``, ``_write_async``: its group-commit writer), the claim
and change notification. Every other World method is here, once: readers run
the shared statements (``sql.Statements``), writers the shared operations
(``operations``) on the backend's transaction adapter.

Identifiers are checked here, once for both backends, so that both answer
alike what one database would refuse: a write that would store an id, token
or namespace no World can hold raises ``InvalidIdentifierError``; a lookup by
one finds nothing (``storable.can_be_identifier``), as nothing can be stored
under it.
"""

from __future__ import annotations

import abc
import asyncio
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from tether.clock import Clock
from tether.errors import HookNotFoundError, InvalidValueError, StreamClosedError
from tether.storable import can_be_identifier, check_identifier
from tether.worlds import operations, schema
from tether.worlds.base import World
from tether.worlds.operations import Reader, Tx
from tether.worlds.records import (
    Activation,
    CancelResult,
    CheckRequest,
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
from tether.worlds.signals import is_work_for
from tether.worlds.sql import (
    Row,
    Statements,
    chunk,
    deployment_record,
    event_record,
    hook_record,
    run_record,
    step_record,
    stream_record,
    wait_record,
)

T = TypeVar("T")
#: A listener: its callback, the loop whose own commits it skips, work_only, its deployment.
_Listener = tuple[Callable[[], None], asyncio.AbstractEventLoop | None, bool, str | None]


@dataclass(frozen=True)
class ClaimRound:
    """What a worker's claim round asks for (``World.claim_due_async``)."""

    deployment_id: str
    worker_id: str
    limit: int
    lease_seconds: float
    ahead: float


class SqlWorld(World):
    """The World methods shared by the SQL backends."""

    clock: Clock
    #: The statements in the backend's dialect.
    sql: Statements

    def __init__(self, url: str, clock: Clock) -> None:
        self.url = url
        self.clock = clock
        #: The deployment of each worker registered through this World: its commits
        #: may take the writer's fast path (``operations.commit_activation``).
        self._deployments: dict[str, str] = {}
        self._listeners: list[_Listener] = []
        self._closed = False

    # -- what a backend supplies ---------------------------------------------------

    @abc.abstractmethod
    def _read(self, fn: Callable[[Reader], T]) -> T:
        """Run ``fn`` on a connection for reading and return what it returns."""

    @abc.abstractmethod
    def _write(self, op: Callable[[Tx], T]) -> T:
        """Commit ``op`` (perhaps with others' operations) and return its result."""

    @abc.abstractmethod
    async def _write_async(
        self, op: Callable[[Tx], T], on_committed: Callable[[T], None] | None = None
    ) -> T:
        """``_write`` for an event loop; ``on_committed`` is called once it is committed."""

    async def _start_async(
        self, op: Callable[[Tx], T], on_committed: Callable[[T], None] | None = None
    ) -> T:
        """``_write_async`` for a run started from a loop (a backend may give it a lane)."""
        return await self._write_async(op, on_committed)

    @abc.abstractmethod
    async def _claim_round(self, claim: ClaimRound) -> tuple[list[Task], float | None]:
        """``claim_due_async``: the backend's claim."""

    def _start_watching(self) -> None:
        """Start hearing other processes' commits (once): they call ``_notify``."""

    def _stop(self) -> None:
        """Stop the writer and the watching; release connections (``close``)."""

    def _listeners_changed(self) -> None:
        """Listeners or this World's workers came or went (a backend may listen otherwise)."""

    def _query(self, statement: str, params: Sequence[Any] = ()) -> list[Row]:
        return self._read(lambda reader: reader.query(statement, params))

    # -- the claim and wake-ups ---------------------------------------------------

    async def claim_due_async(
        self,
        deployment_id: str,
        worker_id: str,
        limit: int,
        lease_seconds: float,
        ahead: float = 0.0,
    ) -> tuple[list[Task], float | None]:
        return await self._claim_round(
            ClaimRound(deployment_id, worker_id, limit, lease_seconds, ahead)
        )

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
        self._listeners_changed()
        self._start_watching()

        def remove() -> None:
            if entry in self._listeners:
                self._listeners.remove(entry)

        return remove

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop()

    def _notify(self, origins: set[asyncio.AbstractEventLoop | None], signal: str = "w") -> None:
        """Wake local listeners of a commit that announced ``signal`` (``signals``).

        ``origins``: the loops the commit's operations came from (``None``: a
        thread, another process); a listener on a loop skips commits only
        that loop made.
        """
        for callback, own_loop, work_only, deployment_id in list(self._listeners):
            if work_only and not is_work_for(signal, deployment_id):
                continue
            if own_loop is None or origins != {own_loop}:
                callback()

    # -- runs ----------------------------------------------------------------------

    def create_run(self, run: NewRun, activation: Activation | None = None) -> RunRecord:
        _check_new_run(run)
        return self._write(lambda tx: operations.create_run(tx, run, activation))

    async def create_run_async(
        self,
        run: NewRun,
        activation: Activation | None = None,
        on_created: Callable[[RunRecord], None] | None = None,
    ) -> RunRecord:
        _check_new_run(run)
        return await self._start_async(
            lambda tx: operations.create_run(tx, run, activation), on_created
        )

    def fork_run(self, run: NewRun, history: Sequence[EventRecord]) -> RunRecord:
        _check_new_run(run)
        return self._write(lambda tx: operations.fork_run(tx, run, history))

    def upgrade_run(
        self, original: str, expected_seq: int, run: NewRun, history: Sequence[EventRecord]
    ) -> RunRecord | None:
        _check_new_run(run)
        if not can_be_identifier(original):
            return None
        return self._write(
            lambda tx: operations.upgrade_run(tx, original, expected_seq, run, history)
        )

    def get_run(self, run_id: str) -> RunRecord | None:
        if not can_be_identifier(run_id):
            return None
        rows = self._query(self.sql.get_run, (run_id,))
        return run_record(rows[0]) if rows else None

    def find_run_ids(self, prefix: str, limit: int) -> list[str]:
        if not prefix:
            raise InvalidValueError(
                "a run id prefix must not be empty: give the first characters of one"
            )
        if not can_be_identifier(prefix):
            return []
        end = _after_prefix(prefix)
        if end is not None and self._compares_by_code_point:
            rows = self._query(self.sql.run_ids_in_range, (prefix, end, limit))
        else:
            rows = self._query(self.sql.run_ids_starting, (len(prefix), prefix, limit))
        return [row[0] for row in rows]

    @functools.cached_property
    def _compares_by_code_point(self) -> bool:
        """Whether the ids that start with a prefix are one range of the run id index."""
        probe = self.sql.dialect.code_point_probe
        return probe is None or bool(self._query(probe)[0][0])

    def list_runs(self, filters: RunFilter) -> list[RunRecord]:
        if not _findable(
            filters.status,
            filters.workflow_name,
            filters.deployment_id,
            filters.parent_run_id,
            filters.rerun_of,
        ):
            return []
        statement, params = schema.run_query(
            self.sql.run_select, filters, placeholder=self.sql.dialect.param
        )
        return [run_record(row) for row in self._query(statement, params)]

    def count_runs(self, filters: RunFilter) -> dict[str, int]:
        if not _findable(
            filters.workflow_name, filters.deployment_id, filters.parent_run_id, filters.rerun_of
        ):
            return {}
        statement, params = schema.count_query(filters, placeholder=self.sql.dialect.param)
        return {str(status): int(n) for status, n in self._query(statement, params)}

    def list_events(self, run_id: str, after_seq: int = 0) -> list[EventRecord]:
        if not can_be_identifier(run_id):
            return []
        rows = self._query(self.sql.list_events, (run_id, after_seq))
        return [event_record(row) for row in rows]

    def list_steps(self, run_id: str) -> list[StepRecord]:
        if not can_be_identifier(run_id):
            return []
        return [step_record(row) for row in self._query(self.sql.list_steps, (run_id,))]

    def list_waits(self, run_id: str) -> list[WaitRecord]:
        if not can_be_identifier(run_id):
            return []
        return [wait_record(row) for row in self._query(self.sql.list_waits, (run_id,))]

    def cancel_runs(self, run_ids: Sequence[str]) -> CancelResult:
        findable = [run_id for run_id in run_ids if can_be_identifier(run_id)]
        return self._write(lambda tx: operations.cancel_runs(tx, findable))

    def wake_sleeps(self, run_id: str) -> int:
        if not can_be_identifier(run_id):
            return 0
        return self._write(lambda tx: operations.wake_sleeps(tx, run_id))

    # -- activations and step outcomes ----------------------------------------------

    def commit_activation(self, activation: Activation) -> bool:
        deployment_id = self._deployments.get(activation.worker_id)
        return self._write(lambda tx: operations.commit_activation(tx, activation, deployment_id))

    async def commit_activation_async(self, activation: Activation) -> bool:
        deployment_id = self._deployments.get(activation.worker_id)
        return await self._write_async(
            lambda tx: operations.commit_activation(tx, activation, deployment_id)
        )

    def finish_step(self, outcome: StepOutcome, activation: Activation | None = None) -> bool:
        deployment_id = self._deployments.get(outcome.worker_id)
        return self._write(
            lambda tx: operations.finish_step(tx, outcome, activation, deployment_id)
        )

    async def finish_step_async(
        self, outcome: StepOutcome, activation: Activation | None = None
    ) -> bool:
        deployment_id = self._deployments.get(outcome.worker_id)
        return await self._write_async(
            lambda tx: operations.finish_step(tx, outcome, activation, deployment_id)
        )

    def heartbeat(self, worker_id: str, lease_seconds: float, load: float = 0.0) -> None:
        self._write(lambda tx: operations.heartbeat(tx, worker_id, lease_seconds, load))

    def release_task(self, run_id: str, step_id: str, worker_id: str, delay: float) -> None:
        self._write(lambda tx: operations.release_task(tx, run_id, step_id, worker_id, delay))

    def hand_back_step(self, run_id: str, step_id: str, worker_id: str, attempt: int) -> bool:
        return self._write(
            lambda tx: operations.hand_back_step(tx, run_id, step_id, worker_id, attempt)
        )

    # -- hooks and streams ----------------------------------------------------------

    def resume_hook(self, token: str, payload: str, *, webhook_only: bool = False) -> str:
        run_id = None
        if can_be_identifier(token):
            run_id = self._write(
                lambda tx: operations.resume_hook(tx, token, payload, webhook_only)
            )
        if run_id is None:
            kind = "webhook" if webhook_only else "hook"
            raise HookNotFoundError(
                f"no active {kind} has token {token!r}: it never existed or its run has ended"
            )
        return run_id

    def list_hooks(self, run_id: str | None = None, status: str | None = None) -> list[HookRecord]:
        if not _findable(run_id, status):
            return []
        where, params = self.sql.where({"run_id": run_id, "status": status})
        rows = self._query(self.sql.hook_select + where + " ORDER BY created_at", params)
        return [hook_record(row) for row in rows]

    def append_chunks(
        self, stream_id: str, run_id: str, namespace: str, chunks: Sequence[str], close: bool
    ) -> int:
        check_identifier(run_id, "run id")
        check_identifier(namespace, "stream namespace")
        check_identifier(stream_id, "stream id", max_length=None)
        next_index = self._write(
            lambda tx: operations.append_chunks(tx, stream_id, run_id, namespace, chunks, close)
        )
        if next_index is None:
            raise StreamClosedError(
                f"stream {stream_id!r} is closed: nothing more can be written to it"
                " (write every chunk before close(), or write to another namespace)"
            )
        return next_index

    def read_chunks(
        self, stream_id: str, start_index: int, limit: int
    ) -> tuple[list[Chunk], StreamRecord | None]:
        if not can_be_identifier(stream_id):
            return [], None

        def read(reader: Reader) -> tuple[list[Chunk], StreamRecord | None]:
            row = reader.query_one(self.sql.get_stream, (stream_id,))
            if row is None:
                return [], None
            stream = stream_record(row)
            start = max(0, stream.next_index + start_index) if start_index < 0 else start_index
            rows = reader.query(self.sql.read_chunks, (stream_id, start, limit))
            return [chunk(r) for r in rows], stream

        return self._read(read)

    def list_streams(self, run_id: str | None = None) -> list[StreamRecord]:
        if not _findable(run_id):
            return []
        where, params = self.sql.where({"run_id": run_id})
        rows = self._query(self.sql.stream_select + where + " ORDER BY created_at", params)
        return [stream_record(row) for row in rows]

    # -- deployments ----------------------------------------------------------------

    def register_worker(
        self, worker: WorkerInfo, manifest: dict[str, Any], *, replace: bool = False
    ) -> list[str]:
        check_identifier(worker.deployment_id, "deployment id")
        check_identifier(worker.environment, "environment")
        replaced = self._write(
            lambda tx: operations.register_worker(tx, worker, manifest, replace=replace)
        )
        self._deployments[worker.worker_id] = worker.deployment_id
        self._listeners_changed()
        return replaced

    def worker_draining(self, worker_id: str) -> None:
        self._write(lambda tx: operations.worker_draining(tx, worker_id))

    def unregister_worker(self, worker_id: str) -> None:
        self._write(lambda tx: operations.unregister_worker(tx, worker_id))
        if self._deployments.pop(worker_id, None) is not None:
            self._listeners_changed()

    # -- replays asked of live workers -----------------------------------------------

    def ask_check(self, request: CheckRequest) -> None:
        check_identifier(request.deployment_id, "deployment id")
        self._write(lambda tx: operations.ask_check(tx, request))

    def take_check(self, deployment_id: str, worker_id: str) -> CheckRequest | None:
        # A read first: idle workers look every few seconds, and most looks find nothing.
        if not self._query(self.sql.check_waiting, (deployment_id, self.clock.time())):
            return None
        return self._write(lambda tx: operations.take_check(tx, deployment_id, worker_id))

    def answer_check(self, request_id: str, answer: str) -> None:
        self._write(lambda tx: operations.answer_check(tx, request_id, answer))

    def get_check(self, request_id: str) -> CheckRequest | None:
        rows = self._query(self.sql.get_check, (request_id,))
        return CheckRequest(*rows[0]) if rows else None

    def drop_check(self, request_id: str) -> None:
        self._write(lambda tx: operations.drop_check(tx, request_id))

    def get_deployment(self, deployment_id: str) -> DeploymentRecord | None:
        if not can_be_identifier(deployment_id):
            return None
        rows = self._query(self.sql.get_deployment, (deployment_id,))
        return deployment_record(rows[0]) if rows else None

    def latest_deployment(self, environment: str) -> DeploymentRecord | None:
        if not can_be_identifier(environment):
            return None
        rows = self._query(self.sql.latest_deployment, (environment,))
        return deployment_record(rows[0]) if rows else None

    def list_deployments(
        self, environment: str | None, live_within: float
    ) -> list[DeploymentStatus]:
        since = self.clock.time() - live_within

        def read(reader: Reader) -> tuple[list[Row], dict[str, int], dict[str, Row]]:
            in_flight = {row[0]: int(row[1]) for row in reader.query(self.sql.runs_in_flight)}
            workers = {row[0]: row[1:] for row in reader.query(self.sql.workers_live, (since,))}
            return reader.query(self.sql.deployments_seen), in_flight, workers

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


def _check_new_run(run: NewRun) -> None:
    """Raise ``InvalidIdentifierError`` for an id of ``run`` no World can store."""
    check_identifier(run.run_id, "run id")
    check_identifier(run.deployment_id, "deployment id")
    check_identifier(run.workflow_name, "workflow name", max_length=None)
    for linked in (run.parent_run_id, run.rerun_of):
        if linked is not None:
            check_identifier(linked, "run id")


def _findable(*values: str | None) -> bool:
    """Whether each value given (not ``None``) could name something stored."""
    return all(value is None or can_be_identifier(value) for value in values)


def _after_prefix(prefix: str) -> str | None:
    """The first text past every text that starts with ``prefix``, by code point.

    ``None`` when there is none (``prefix`` is all U+10FFFF). Surrogates are
    skipped: no stored text holds one.
    """
    stem = prefix.rstrip(chr(0x10FFFF))
    if not stem:
        return None
    last = ord(stem[-1]) + 1
    if 0xD800 <= last <= 0xDFFF:
        last = 0xE000
    return stem[:-1] + chr(last)
