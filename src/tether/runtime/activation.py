"""Activations: replaying a run, resuming it past its log, and committing what it asked for.

A worker keeps suspended runs in memory (bounded, least recently used out)
and feeds a cached run only the events it has not seen; a run not in
memory is replayed from its whole log (``RunInstance.replay``). Each
activation then resumes the code with its new answers (a step's result, a
sleep's end: ``RunInstance.resume``) and commits the events that follow in
one write, if the log is still where the activation read it; else the run
is dropped from memory and replayed on its next activation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Future, InvalidStateError

from tether import registry
from tether.clock import Clock
from tether.errors import WorkflowNotFoundError
from tether.runtime.instance import ACTIVATION_EVENTS, TERMINAL_EVENTS, RunInstance, error_payload
from tether.runtime.steps import StepJob
from tether.worlds.base import World
from tether.worlds.records import Activation, EventRecord, NewRun, RunRecord, StepOutcome

log = logging.getLogger("tether.worker")

#: How often a step's outcome is offered to a failing World before the step is re-run.
RECORD_ATTEMPTS = 5


class Activations:
    """One worker's runs in memory, and every commit that moves one of them."""

    def __init__(
        self,
        *,
        world: World,
        clock: Clock,
        worker_id: str,
        deployment_id: str,
        lease_seconds: float,
        cache_size: int,
        wake_up: Callable[[], None],
    ) -> None:
        self.world = world
        self.clock = clock
        self.worker_id = worker_id
        self.deployment_id = deployment_id
        self.lease_seconds = lease_seconds
        self.cache_size = cache_size
        #: Called when the worker should claim again soon (work was queued or re-queued).
        self._wake_up = wake_up
        self._cache: OrderedDict[str, RunInstance] = OrderedDict()
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    async def start(self, run: NewRun, future: Future[RunRecord]) -> list[StepJob]:
        """Create ``run`` and its first activation in one commit; answer ``future`` with it.

        Returns the steps the first activation leased to this worker.
        """
        definition = registry.WORKFLOWS.get(run.workflow_name)
        try:
            if definition is None:
                future.set_result(await self.world.create_run_async(run))
                return []
            async with self._lock(run.run_id):
                record = RunRecord(
                    run.run_id,
                    run.workflow_name,
                    run.deployment_id,
                    "pending",
                    run.input,
                    None,
                    None,
                    run.parent_run_id,
                    run.rerun_of,
                    run.created_at or self.clock.time(),
                    None,
                    None,
                    1,
                )
                instance = RunInstance(record, definition)
                instance.last_seq = 1  # run_created
                started = EventRecord(run.run_id, 0, "run_started", created_at=self.clock.time())
                new_events = instance.resume([started])
                activation = Activation(
                    run.run_id, 1, new_events, self.worker_id, self.lease_seconds
                )
                try:
                    # The caller, blocked in start(), is answered from the commit's
                    # thread: it need not wait for this loop to come round.
                    await self.world.create_run_async(
                        run, activation, lambda made: _resolve(future, made)
                    )
                except BaseException:
                    instance.close()
                    raise
                return self._after_commit(instance, new_events, True)
        except BaseException as exc:
            with contextlib.suppress(InvalidStateError):  # the commit may have answered
                future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return []

    async def activate(
        self,
        run_id: str,
        due_at: float = 0.0,
        run: RunRecord | None = None,
        log: Sequence[EventRecord] | None = None,
    ) -> list[StepJob]:
        """Replay or continue a run, apply its due sleeps, commit what it asks for.

        Returns the steps the commit leased to this worker. ``run`` and
        ``log``, if the claim read them (``Task.run``), are the run and its
        whole log: then nothing is read here.

        A task claimed ahead of its time (``due_at`` still to come) is a timer:
        it waits for its time here. A cached run with nothing but sleeps out
        then goes on from memory, without reading its log: only an operator
        (a cancel, a wake-up) can have moved it, and then the commit is
        refused and the run replayed from its log.
        """
        timer = due_at > self.clock.time()
        while due_at > self.clock.time():
            await self.clock.sleep_until(due_at)  # the loop's clock may wake us a little early
        async with self._lock(run_id):
            instance = self._cache.pop(run_id, None)
            events: list[EventRecord] = []
            known = instance.last_seq if instance else 0
            if log is not None:
                events = [e for e in log if e.seq > known]
            elif not (timer and instance is not None and instance.only_sleeping):
                events = await self.world.list_events_async(run_id, known)
            if instance is not None and any(e.type in ACTIVATION_EVENTS for e in events):
                instance.close()  # another worker advanced the run: replay it from the log
                instance = None
                events = (
                    list(log) if log is not None else await self.world.list_events_async(run_id, 0)
                )
            if any(e.type in TERMINAL_EVENTS for e in events):
                if instance is not None:
                    instance.close()
                return []
            if instance is None:
                instance = await self._new_instance(run_id, run)
                if instance is None:
                    return []
            instance.replay(events)
            expected = instance.last_seq
            answers: list[EventRecord] = []
            now = self.clock.time()
            if not instance.started:
                answers.append(EventRecord(run_id, 0, "run_started", created_at=now))
            for wait_id, resume_at in sorted(instance.waits.items(), key=lambda w: w[1]):
                if resume_at <= now:
                    answers.append(
                        EventRecord(run_id, 0, "wait_completed", wait_id, created_at=now)
                    )
            new_events = instance.resume(answers)
            activation = Activation(
                run_id, expected, new_events, self.worker_id, self.lease_seconds
            )
            committed = await self.world.commit_activation_async(activation)
            if not committed:
                self._wake_up()  # the world re-queued the run
            return self._after_commit(instance, new_events, committed)

    async def _new_instance(self, run_id: str, run: RunRecord | None) -> RunInstance | None:
        if run is None:
            run = await self.world.get_run_async(run_id)
        if run is None:
            return None
        definition = registry.WORKFLOWS.get(run.workflow_name)
        if definition is None:
            log.error(
                "run %s needs workflow %s, which deployment %s does not define",
                run_id,
                run.workflow_name,
                self.deployment_id,
            )
            error = WorkflowNotFoundError(
                f"workflow {run.workflow_name!r} is not defined in deployment "
                f"{self.deployment_id!r} (worker {self.worker_id})"
            )
            end = EventRecord(run_id, run.last_seq + 1, "run_failed", payload=error_payload(error))
            await self.world.commit_activation_async(
                Activation(run_id, run.last_seq, [end], self.worker_id, self.lease_seconds)
            )
            return None
        return RunInstance(run, definition)

    def _after_commit(
        self, instance: RunInstance, new_events: list[EventRecord], committed: bool
    ) -> list[StepJob]:
        """Keep the run in memory and return the steps it leased to us, or drop it."""
        if not committed or instance.ended:
            instance.close()
            return []
        self._cache[instance.run_id] = instance
        if len(self._cache) > self.cache_size:
            _, evicted = self._cache.popitem(last=False)
            evicted.close()
        if any(e.type == "wait_created" for e in new_events):
            self._wake_up()  # recompute the next timer
        return [
            StepJob(instance.run_id, e.correlation_id or "", e.name or "", e.payload or "", 1)
            for e in new_events
            if e.type == "step_created"
        ]

    async def deliver(self, outcome: StepOutcome) -> list[StepJob]:
        """Record a step's end; if the run is cached here, advance it in the same commit."""
        async with self._lock(outcome.run_id):
            instance = self._cache.pop(outcome.run_id, None)
            if instance is None:
                await self.record(outcome)
                return []
            kind = "step_completed" if outcome.status == "completed" else "step_failed"
            answer = EventRecord(
                outcome.run_id,
                0,
                kind,
                outcome.step_id,
                payload=outcome.payload,
                attrs={"attempt": outcome.attempt},
                created_at=self.clock.time(),
            )
            expected = instance.last_seq
            new_events = instance.resume([answer])
            activation = Activation(
                outcome.run_id, expected, new_events, self.worker_id, self.lease_seconds
            )
            try:
                applied = await self.world.finish_step_async(outcome, activation)
            except Exception:
                log.warning(
                    "recording step %s of run %s failed; retrying",
                    outcome.step_id,
                    outcome.run_id,
                    exc_info=True,
                )
                instance.close()
                await self.record(outcome)
                return []
            if not applied:
                self._wake_up()
            return self._after_commit(instance, new_events, applied)

    async def record(self, outcome: StepOutcome) -> None:
        """Record an outcome alone, retrying a World that fails for a moment.

        The run is queued for a workflow task. The outcome is only in memory:
        re-running the step is the last resort.
        """
        for attempt in range(RECORD_ATTEMPTS):
            try:
                await self.world.finish_step_async(outcome, None)
                break
            except Exception:
                if attempt == RECORD_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(0.05 * 2**attempt)
        self._wake_up()  # the run was queued for a workflow task

    def evict(self, run_id: str) -> None:
        """Drop the run from memory: its next activation replays it from the log."""
        instance = self._cache.pop(run_id, None)
        if instance is not None:
            instance.close()

    def close(self) -> None:
        """Drop every run in memory (the worker stops)."""
        for instance in self._cache.values():
            instance.close()
        self._cache.clear()

    @contextlib.asynccontextmanager
    async def _lock(self, run_id: str) -> AsyncIterator[None]:
        """One activation at a time per run in this worker."""
        lock, users = self._locks.get(run_id, (asyncio.Lock(), 0))
        self._locks[run_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[run_id]
            if users == 1:
                del self._locks[run_id]
            else:
                self._locks[run_id] = (lock, users - 1)


def _resolve(future: Future[RunRecord], record: RunRecord) -> None:
    """Answer a waiting ``start()``, unless a failure (a cancelled loop) answered it first."""
    with contextlib.suppress(InvalidStateError):
        future.set_result(record)
