"""The World protocol: what the engine, the client and the operator tools ask of storage.

Everything above this module (runtime, client API, CLI, web UI) talks to a
``World`` and never knows which backend runs. A World is four parts, each an
abstract class here, with what every method must do:

- ``RunStore``: runs and their event log, the views derived from it (steps,
  waits), hooks, deployments and workers;
- ``WorkQueue``: the tasks workers claim, the outcomes they commit;
- ``StreamStore``: append-only chunk streams that runs write for readers;
- ``ChangeFeed``: wake-ups for whoever waits for the World to change.

The event log is the truth. Events per run have dense sequence numbers from
1 (``run_created``); runs, steps, waits, hooks and the queue are views that
each write derives from the events it appends, in the same transaction.
Timestamps are epoch seconds read from the World's clock (``open_world``'s
``clock``); payloads are serialized text the World stores as it is given
(``serde``'s text, which holds no NUL and no surrogate).

Ids, tokens and namespaces are identifiers (``storable.check_identifier``): a
write that would store one no World can hold raises
``InvalidIdentifierError`` and writes nothing; a lookup by one finds
nothing (``None``, ``[]``, ``HookNotFoundError``), as on every World.

Every blocking method is thread-safe. Writes from many threads are grouped
into few transactions by the backend (group commit), so callers that want
throughput call from many threads (the worker does) instead of batching by
hand. After ``close`` every method raises ``RuntimeError`` naming the World.
A write the database refuses (a duplicate id) raises the driver's integrity
error and writes nothing.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Any

from tether.clock import Clock
from tether.errors import WorldClosedError
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

#: A worker whose heartbeat reports this load (the larger of the share of one core its
#: process used and the share of its concurrency in use) is busy: work goes to others.
BUSY_LOAD = 0.8

#: What a closed World's errors say to do.
CLOSED_HINT = (
    "a World object cannot be used after close(); after tether.close(), the next tether"
    " call opens the World again (or open_world(url) gives a new one)"
)


def closed_error(shown_url: str) -> WorldClosedError:
    """The error a closed World's calls raise, naming it and what to do instead."""
    return WorldClosedError(f"the world {shown_url} is closed: {CLOSED_HINT}")


class RunStore(abc.ABC):
    """Runs, their event log and its views, hooks, deployments and workers."""

    url: str
    #: What the World reads for event times, due times and leases; a worker serving the
    #: World reads the same clock unless it is given another.
    clock: Clock

    # -- runs -------------------------------------------------------------

    @abc.abstractmethod
    def create_run(self, run: NewRun, activation: Activation | None = None) -> RunRecord:
        """Insert the run (``pending``), its ``run_created`` event (seq 1) and its first task.

        The event's attrs name the deployment, and the parent and rerun when
        given. Without ``activation`` a workflow task due now is queued on
        the run's deployment. With one (the run's first, computed by an
        in-process worker; ``expected_seq`` 1) its events commit in the same
        transaction instead, as ``commit_activation`` would. A ``run_id``
        already taken raises the driver's integrity error, unless
        ``run.if_absent``: then the run holding it is returned and nothing is
        written (the caller compares its workflow).
        """

    @abc.abstractmethod
    def fork_run(self, run: NewRun, history: Sequence[EventRecord]) -> RunRecord:
        """Create ``run`` (a fork) whose log is ``run_created`` then ``history``, in one commit.

        ``history`` is events of another run, renumbered from seq 2 and given
        ``run.run_id``; the views are derived from it as from any append, and a
        workflow task due now is queued. With ``run.if_absent`` and the id
        taken, the run holding it is returned and nothing is written.
        """

    @abc.abstractmethod
    def upgrade_run(
        self, original: str, expected_seq: int, run: NewRun, history: Sequence[EventRecord]
    ) -> RunRecord | None:
        """Cancel ``original`` (``run_cancelled`` with ``upgraded_to``) and fork ``run``, at once.

        One commit: never both running, never neither. Returns ``None`` and
        writes nothing when the original has ended or its log is past
        ``expected_seq`` (it moved since ``history`` was read).
        """

    @abc.abstractmethod
    def get_run(self, run_id: str) -> RunRecord | None:
        """Return the run, or ``None`` if there is no run with that id."""

    @abc.abstractmethod
    def find_run_ids(self, prefix: str, limit: int) -> list[str]:
        """Up to ``limit`` ids of runs that start with ``prefix``, in id order.

        Every character matches only itself (``_`` and ``%`` included; case
        counts); an id equal to ``prefix`` is among them. The run id's index
        answers it, so its cost follows the matches, not the runs (on
        PostgreSQL, where the database compares text by code point, as C and
        C.UTF-8 do; under a language's collation each id is tested). Raises
        ``ValueError`` for an empty prefix.
        """

    @abc.abstractmethod
    def list_runs(self, filters: RunFilter) -> list[RunRecord]:
        """Return up to ``filters.limit`` runs matching every filter that is not ``None``.

        Ordered by ``created_at`` then ``run_id``, newest first unless
        ``descending`` is false; ``cursor`` (``schema.encode_cursor`` of the
        last run of the previous page) continues after that run. Raises
        ``ValueError`` naming a cursor that ``encode_cursor`` did not make.
        """

    @abc.abstractmethod
    def count_runs(self, filters: RunFilter) -> dict[str, int]:
        """How many runs match ``filters`` (all but its status, cursor and limit), per status."""

    @abc.abstractmethod
    def list_events(self, run_id: str, after_seq: int = 0) -> list[EventRecord]:
        """Return the run's events with ``seq > after_seq`` in order; ``[]`` for no such run."""

    @abc.abstractmethod
    def list_steps(self, run_id: str) -> list[StepRecord]:
        """Return the run's steps in the order they were created (ids as numbers on ties)."""

    @abc.abstractmethod
    def list_waits(self, run_id: str) -> list[WaitRecord]:
        """Return the run's sleeps in the order they were created (ids as numbers on ties)."""

    @abc.abstractmethod
    def cancel_runs(self, run_ids: Sequence[str]) -> CancelResult:
        """End each unfinished run of ``run_ids``: its active hooks, then the run.

        Appends ``hook_disposed`` (reason ``"run cancelled"``) for each active
        hook and ``run_cancelled``; the run's tasks are dropped, its pending,
        running and retrying steps and its waits become ``cancelled``. Unknown
        and finished runs are skipped and a repeated id counts once; returns
        the runs cancelled, in the order given.
        """

    @abc.abstractmethod
    def wake_sleeps(self, run_id: str) -> int:
        """End the run's pending sleeps now; returns how many (0 for an unknown or ended run).

        Appends ``wait_completed`` with attrs ``{"woken": true}`` for each
        and queues the run's workflow task, due now.
        """

    # -- the same, awaited on a worker's event loop ----------------------------
    # Defaults run the blocking method on a thread; a backend that can commit
    # on the caller's loop (grouping what the loop asked for), or whose reads
    # are local and fast, overrides them.

    async def create_run_async(
        self,
        run: NewRun,
        activation: Activation | None = None,
        on_created: Callable[[RunRecord], None] | None = None,
    ) -> RunRecord:
        """``create_run`` for a worker's event loop.

        ``on_created`` is called with the record once the run is committed,
        from the thread that committed it, perhaps before this coroutine
        resumes: a caller blocked on the run's creation in another thread
        need not wait for the loop. A write once asked for is committed even
        if the caller stops waiting.
        """
        record = await asyncio.to_thread(self.create_run, run, activation)
        if on_created is not None:
            on_created(record)
        return record

    async def get_run_async(self, run_id: str) -> RunRecord | None:
        """``get_run`` for a worker's event loop."""
        return await asyncio.to_thread(self.get_run, run_id)

    async def list_events_async(self, run_id: str, after_seq: int = 0) -> list[EventRecord]:
        """``list_events`` for a worker's event loop."""
        return await asyncio.to_thread(self.list_events, run_id, after_seq)

    # -- hooks ------------------------------------------------------------

    @abc.abstractmethod
    def resume_hook(self, token: str, payload: str, *, webhook_only: bool = False) -> str:
        """Deliver a serialized payload to the active hook with ``token``; returns its run id.

        Appends ``hook_received`` (the payload, the hook's id) to the run and
        queues its workflow task, due now. A hook takes any number of
        payloads. Raises ``HookNotFoundError`` naming the token when no
        active hook has it (never existed, disposed, its run ended), and,
        with ``webhook_only``, when the hook is not a webhook.
        """

    @abc.abstractmethod
    def list_hooks(self, run_id: str | None = None, status: str | None = None) -> list[HookRecord]:
        """Hooks, oldest first, of one run or of all runs, of one status or any.

        A ``hook_created`` whose token an active hook holds is stored as
        status ``conflict`` and answered at once with ``hook_disposed``
        (reason ``"conflict"``); at most one hook per token is active.
        """

    # -- deployments and workers --------------------------------------------

    @abc.abstractmethod
    def register_worker(
        self, worker: WorkerInfo, manifest: dict[str, Any], *, replace: bool = False
    ) -> list[str]:
        """Record a starting worker (its heartbeat now) and its deployment.

        The deployment's manifest becomes the union, section by section, of
        what its workers registered; its ``created_at`` is when it was first
        seen. A worker that defines a workflow or step differently from what
        the deployment registered raises ``DeploymentConflictError`` naming
        them, and nothing is written, unless ``replace``: its entries win, and
        the workflows and steps it replaced are returned (else ``[]``).
        A ``worker_id`` already registered raises the driver's integrity error.
        """

    @abc.abstractmethod
    def worker_draining(self, worker_id: str) -> None:
        """Mark the worker stopped as its drain begins: no new work is meant for it."""

    @abc.abstractmethod
    def unregister_worker(self, worker_id: str) -> None:
        """Mark the worker stopped and give back its leases, due now (unknown: no-op)."""

    # -- replays asked of live workers (``tether.checking``) ------------------------

    @abc.abstractmethod
    def ask_check(self, request: CheckRequest) -> None:
        """Record a replay asked of the deployment's live workers, and wake them."""

    @abc.abstractmethod
    def take_check(self, deployment_id: str, worker_id: str) -> CheckRequest | None:
        """The oldest unanswered request of the deployment, now the worker's to answer.

        ``None`` when there is none. A request another worker took is taken
        again only once that worker's hold has passed (it died meanwhile).
        """

    @abc.abstractmethod
    def answer_check(self, request_id: str, answer: str) -> None:
        """Record the answer to a request; the first answer given stays."""

    @abc.abstractmethod
    def get_check(self, request_id: str) -> CheckRequest | None:
        """The request, with its answer once given; ``None`` once dropped."""

    @abc.abstractmethod
    def drop_check(self, request_id: str) -> None:
        """Forget the request (the asker has its answer, or gave up)."""

    @abc.abstractmethod
    def get_deployment(self, deployment_id: str) -> DeploymentRecord | None:
        """The deployment with that id, or ``None`` if no worker ever registered it."""

    @abc.abstractmethod
    def latest_deployment(self, environment: str) -> DeploymentRecord | None:
        """The newest registered deployment of the environment, or ``None``."""

    @abc.abstractmethod
    def list_deployments(
        self, environment: str | None, live_within: float
    ) -> list[DeploymentStatus]:
        """Deployments of the environment (``None``: all), newest first.

        Each with its runs in flight (pending or running) and its workers not
        stopped whose heartbeat is at most ``live_within`` seconds old. A
        deployment no worker registered but that runs are pinned to is listed
        too, with environment ``""`` and its oldest in-flight run's time.
        """


class WorkQueue(abc.ABC):
    """The tasks workers claim, and what they commit when they have handled one."""

    @abc.abstractmethod
    async def claim_due_async(
        self,
        deployment_id: str,
        worker_id: str,
        limit: int,
        lease_seconds: float,
        ahead: float = 0.0,
    ) -> tuple[list[Task], float | None]:
        """A worker's claim round: lease due tasks, and say when to claim again.

        Leases up to ``limit`` tasks of ``deployment_id`` to ``worker_id``,
        oldest due first, each until ``lease_seconds`` from now (heartbeats
        extend it). A task is due when its time has come or its previous
        lease expired (the worker that held it died). Claiming a step appends
        its ``step_started`` event and hands out the next attempt number.
        With ``ahead``, workflow tasks nobody holds that fall due within that
        many seconds are leased too, with their ``due_at``: the worker holds
        them until then, so that timers falling due close together cost one
        claim, not one each. A step is never claimed ahead. Tasks of runs
        that ended, and of steps already recorded, are dropped, not handed out.

        The second value is when the next task falls due after the claim:
        ``None`` when the deployment has no task at all; now when the claim
        took ``limit`` tasks (more may be due); half of ``ahead`` before a
        workflow task that may be claimed ahead (so that the next round
        takes the timers of half a window at once). A round that finds
        nothing due writes nothing. An unknown deployment has no tasks.
        """

    @abc.abstractmethod
    def commit_activation(self, activation: Activation) -> bool:
        """Append an activation's events if the log is still at ``expected_seq``.

        Steps it creates are leased to its worker (a ``step_started`` right
        after the ``step_created`` inserts the step running); afterwards the
        run's workflow task is its earliest pending sleep, or none. Returns
        ``False`` and writes nothing when the run is unknown or ended; when
        the log moved on it also re-queues the run's workflow task, due now,
        taking it back from whoever holds it.
        """

    @abc.abstractmethod
    def finish_step(self, outcome: StepOutcome, activation: Activation | None = None) -> bool:
        """Record a step attempt's end; returns whether ``activation`` was applied too.

        ``completed``/``failed`` append ``step_completed``/``step_failed`` and
        queue the run's workflow task, due now; ``retrying`` appends
        ``step_retrying`` and makes the step's task due at ``retry_at``, for
        any worker. With an ``activation`` (computed by feeding the outcome
        to a cached run: the outcome's event is its first) both commit
        together if the log is still at ``expected_seq``; otherwise only the
        outcome is recorded. A result for an unknown or ended run or a step
        already completed or failed is dropped (``False``, nothing written).
        """

    @abc.abstractmethod
    def heartbeat(self, worker_id: str, lease_seconds: float, load: float = 0.0) -> None:
        """Record that the worker is alive and extend every lease it holds to from now.

        ``load``: the larger of the share of one core the worker's process
        used since its last beat and the share of its concurrency in use
        (PostgreSQL wakes the busiest worker under ``BUSY_LOAD``).
        """

    @abc.abstractmethod
    def release_task(self, run_id: str, step_id: str, worker_id: str, delay: float) -> None:
        """Give back one task ``worker_id`` holds, due in ``delay`` seconds.

        ``step_id`` names a step's task; ``""`` the run's workflow task. A
        worker that failed to handle it calls this, so that any worker
        takes it again (a workflow task replays the run from its log)
        instead of it staying leased, renewed by heartbeats, forever. A task
        the worker does not hold is left alone.
        """

    @abc.abstractmethod
    def hand_back_step(self, run_id: str, step_id: str, worker_id: str, attempt: int) -> bool:
        """End a step attempt ``worker_id`` leased but never began; returns whether it did.

        A stopping worker calls this for each step it holds but has not
        started, so that no ``step_started`` is left standing for code that
        never ran. Appends ``step_retrying`` with attrs ``{"attempt", "retry_at":
        now, "handed_back": true}`` and no payload (nothing failed), which
        releases the step's task, due now for any worker; the next attempt is
        ``attempt + 1``. Writes nothing and returns ``False`` unless the run is
        active, the step is running that attempt and its task is leased to
        ``worker_id`` (the step was recorded, or the lease ran out and another
        worker took it).
        """

    # -- the same, awaited on a worker's event loop (defaults: on a thread) -----

    async def commit_activation_async(self, activation: Activation) -> bool:
        """``commit_activation`` for a worker's event loop."""
        return await asyncio.to_thread(self.commit_activation, activation)

    async def finish_step_async(
        self, outcome: StepOutcome, activation: Activation | None = None
    ) -> bool:
        """``finish_step`` for a worker's event loop."""
        return await asyncio.to_thread(self.finish_step, outcome, activation)


class StreamStore(abc.ABC):
    """Append-only streams of serialized chunks, written by runs, read by anyone."""

    @abc.abstractmethod
    def append_chunks(
        self, stream_id: str, run_id: str, namespace: str, chunks: Sequence[str], close: bool
    ) -> int:
        """Append chunks to a stream (created by its first append), and close it if asked.

        Chunks get the indexes that follow the stream's last; returns its
        next index. Raises ``ValueError`` naming the stream if it is already
        closed (nothing is written).
        """

    @abc.abstractmethod
    def read_chunks(
        self, stream_id: str, start_index: int, limit: int
    ) -> tuple[list[Chunk], StreamRecord | None]:
        """Up to ``limit`` chunks from ``start_index`` on, and the stream.

        A negative ``start_index`` counts from the end (clamped at the
        first chunk). An unknown stream reads as ``([], None)``.
        """

    @abc.abstractmethod
    def list_streams(self, run_id: str | None = None) -> list[StreamRecord]:
        """Streams, oldest first, created by one run or by all runs."""


class ChangeFeed(abc.ABC):
    """Wake-ups for code that waits until the World may have changed."""

    @abc.abstractmethod
    def add_listener(
        self,
        callback: Callable[[], None],
        *,
        skip_own_loop: bool = False,
        work_only: bool = False,
        deployment_id: str | None = None,
    ) -> Callable[[], None]:
        """Call ``callback`` (from any thread) whenever the world may have changed.

        Commits of other World instances and processes call it too. With
        ``skip_own_loop`` (called on an event loop), commits made by
        ``*_async`` calls from that same loop do not call it: a worker knows
        what its own writes did. With ``work_only``, commits that made no
        work due (a run ended, a chunk was written), or none for
        ``deployment_id`` when given, may not call it either, if the World
        can tell. Returns a function that removes the listener. A callback
        must be quick and must not raise.
        """

    @contextlib.contextmanager
    def watch(self) -> Iterator[Callable[[float], None]]:
        """For blocking code: ``with world.watch() as changed: changed(1.0)``.

        ``changed(timeout)`` returns when the world may have changed since the
        previous call (or since the block began), or after ``timeout``
        seconds; no change between two calls is missed.
        """
        event = threading.Event()

        def changed(timeout: float) -> None:
            event.wait(timeout)
            event.clear()

        remove = self.add_listener(event.set)
        try:
            yield changed
        finally:
            remove()

    @contextlib.asynccontextmanager
    async def changes(self) -> AsyncIterator[Callable[[float], Awaitable[None]]]:
        """For async code: ``async with world.changes() as changed: await changed(1.0)``.

        ``changed(timeout)`` returns when the world may have changed since the
        previous call (or since the block began), or after ``timeout``
        seconds; no change between two calls is missed.
        """
        loop = asyncio.get_running_loop()
        event = asyncio.Event()

        def notify() -> None:
            loop.call_soon_threadsafe(event.set)

        async def changed(timeout: float) -> None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout)
            event.clear()

        remove = self.add_listener(notify)
        try:
            yield changed
        finally:
            remove()


class World(RunStore, WorkQueue, StreamStore, ChangeFeed):
    """Storage, queue, streams and wake-ups for runs; one implementation per backend."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections and threads; the world is unusable afterwards (idempotent)."""
