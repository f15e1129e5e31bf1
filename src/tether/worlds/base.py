"""The World protocol: storage, queue and change notification behind one narrow interface.

Everything above this module (runtime, client API, CLI, web UI) talks to a
``World`` and never knows which backend runs. The event log is the truth:
runs, steps and waits are views that each write derives from the events it
appends, in the same transaction.

Every method is blocking and thread-safe. Writes from many threads are
grouped into few transactions by the backend (group commit), so callers that
want throughput call from many threads (the worker does) instead of batching
by hand.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Any

from tether.worlds.records import (
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


class World(abc.ABC):
    """Storage, queue and wake-ups for runs; one implementation per backend."""

    url: str

    # -- runs -------------------------------------------------------------

    @abc.abstractmethod
    def create_run(self, run: NewRun, activation: Activation | None = None) -> RunRecord:
        """Insert the run, its ``run_created`` event and its first workflow task.

        With an ``activation`` (the run's first, computed by an in-process
        worker) that commits in the same transaction instead of a task.
        """

    @abc.abstractmethod
    def get_run(self, run_id: str) -> RunRecord | None:
        """Return the run, or ``None`` if there is no run with that id."""

    @abc.abstractmethod
    def list_runs(self, filters: RunFilter) -> list[RunRecord]:
        """Return runs matching ``filters``, newest first unless ascending."""

    @abc.abstractmethod
    def list_events(self, run_id: str, after_seq: int = 0) -> list[EventRecord]:
        """Return the run's events with ``seq > after_seq`` in order."""

    @abc.abstractmethod
    def list_steps(self, run_id: str) -> list[StepRecord]:
        """Return the run's steps in the order they were created."""

    @abc.abstractmethod
    def list_waits(self, run_id: str) -> list[WaitRecord]:
        """Return the run's sleeps in the order they were created."""

    @abc.abstractmethod
    def cancel_runs(self, run_ids: Sequence[str]) -> CancelResult:
        """Append ``run_cancelled`` to each unfinished run, drop its queued work."""

    @abc.abstractmethod
    def wake_sleeps(self, run_id: str) -> int:
        """End the run's pending sleeps now (``wait_completed``); returns how many."""

    # -- hooks and streams ------------------------------------------------

    @abc.abstractmethod
    def resume_hook(self, token: str, payload: str, *, webhook_only: bool = False) -> str:
        """Deliver a serialized payload to the active hook with ``token``; returns its run id.

        Appends ``hook_received`` to the run and queues it on its own
        deployment. Raises ``HookNotFoundError`` for an unknown or disposed
        token (and, with ``webhook_only``, for a hook that is not a webhook).
        """

    @abc.abstractmethod
    def list_hooks(self, run_id: str | None = None, status: str | None = None) -> list[HookRecord]:
        """Hooks, oldest first, of one run or of all runs."""

    @abc.abstractmethod
    def append_chunks(
        self, stream_id: str, run_id: str, namespace: str, chunks: Sequence[str], close: bool
    ) -> int:
        """Append serialized chunks to a stream (and close it); returns its next index.

        Raises ``ValueError`` naming the stream if it is already closed.
        """

    @abc.abstractmethod
    def read_chunks(
        self, stream_id: str, start_index: int, limit: int
    ) -> tuple[list[Chunk], StreamRecord | None]:
        """Chunks from ``start_index`` on (negative counts from the end), and the stream."""

    @abc.abstractmethod
    def list_streams(self, run_id: str | None = None) -> list[StreamRecord]:
        """Streams, oldest first, created by one run or by all runs."""

    # -- worker side ------------------------------------------------------

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
        that have ended are dropped, not handed out.

        The second value is when the next task falls due after the claim:
        ``None`` when the deployment has no task at all; now when the claim
        took ``limit`` tasks (more may be due); half of ``ahead`` before a
        workflow task that may be claimed ahead (so that the next round
        takes the timers of half a window at once). A round that finds
        nothing due must write nothing. An unknown deployment has no tasks.
        """

    @abc.abstractmethod
    def commit_activation(self, activation: Activation) -> bool:
        """Append an activation's events if the log is still at ``expected_seq``.

        Returns ``False`` (and writes nothing but re-queues the run) when the
        log moved on or the run already ended.
        """

    @abc.abstractmethod
    def finish_step(self, outcome: StepOutcome, activation: Activation | None = None) -> bool:
        """Record a step attempt's end; returns whether ``activation`` was applied too.

        With an ``activation`` (computed by feeding the outcome to a cached
        run), both commit together if the log is still where the activation
        expects it; otherwise only the outcome is recorded and the run is
        queued for a workflow task. A result for a run that has ended or a
        step already recorded is dropped.
        """

    @abc.abstractmethod
    def heartbeat(self, worker_id: str, lease_seconds: float) -> None:
        """Record that the worker is alive and extend every lease it holds."""

    @abc.abstractmethod
    def release_task(self, run_id: str, step_id: str, worker_id: str, delay: float) -> None:
        """Give back one task ``worker_id`` holds, due in ``delay`` seconds.

        ``step_id`` names a step's task; ``""`` the run's workflow task. A
        worker that failed to handle it calls this, so that any worker
        takes it again (a workflow task replays the run from its log)
        instead of it staying leased, renewed by heartbeats, forever.
        """

    # -- deployments ----------------------------------------------------------

    @abc.abstractmethod
    def register_worker(self, worker: WorkerInfo, manifest: dict[str, Any]) -> None:
        """Record a starting worker and its deployment.

        The deployment's manifest becomes the union of what its processes
        registered; its ``created_at`` is when it was first seen.
        """

    @abc.abstractmethod
    def unregister_worker(self, worker_id: str) -> None:
        """Mark the worker stopped and give back its leases."""

    @abc.abstractmethod
    def get_deployment(self, deployment_id: str) -> DeploymentRecord | None:
        """The deployment with that id, or ``None`` if no worker ever registered it."""

    @abc.abstractmethod
    def latest_deployment(self, environment: str) -> DeploymentRecord | None:
        """The newest registered deployment of the environment."""

    @abc.abstractmethod
    def list_deployments(
        self, environment: str | None, live_within: float
    ) -> list[DeploymentStatus]:
        """Deployments, newest first, with runs in flight and workers whose
        heartbeat is at most ``live_within`` seconds old."""

    # -- the worker's hot path, awaited on its event loop ----------------------
    # Defaults run the blocking method on a thread; a backend that can commit
    # on the caller's loop (grouping what the loop asked for), or whose reads
    # are local and fast, overrides them.

    async def get_run_async(self, run_id: str) -> RunRecord | None:
        """``get_run`` for a worker's event loop."""
        return await asyncio.to_thread(self.get_run, run_id)

    async def list_events_async(self, run_id: str, after_seq: int = 0) -> list[EventRecord]:
        """``list_events`` for a worker's event loop."""
        return await asyncio.to_thread(self.list_events, run_id, after_seq)

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
        need not wait for the loop.
        """
        record = await asyncio.to_thread(self.create_run, run, activation)
        if on_created is not None:
            on_created(record)
        return record

    async def commit_activation_async(self, activation: Activation) -> bool:
        """``commit_activation`` for a worker's event loop."""
        return await asyncio.to_thread(self.commit_activation, activation)

    async def finish_step_async(
        self, outcome: StepOutcome, activation: Activation | None = None
    ) -> bool:
        """``finish_step`` for a worker's event loop."""
        return await asyncio.to_thread(self.finish_step, outcome, activation)

    # -- wake-ups ---------------------------------------------------------

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

        With ``skip_own_loop`` (called on an event loop), commits made by
        ``*_async`` calls from that same loop do not call it: a worker knows
        what its own writes did. With ``work_only``, commits that made no
        work due (a run ended, a chunk was written), or none for
        ``deployment_id`` when given, may not call it either, if the World
        can tell. Returns a function that removes the listener.
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

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections and threads; the world is unusable afterwards."""
