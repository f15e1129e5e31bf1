"""The worker: claims its deployment's tasks, advances runs and runs their steps.

One asyncio loop per worker. Workflow code runs on each run's own
deterministic loop, inside an activation on this loop; async steps run as
tasks here and plain ``def`` steps in a thread pool. Steps a workflow asks
for are leased to this worker in the same commit that records them and run
at once (no queue round trip); when a step ends, its result is fed to the
cached run and the outcome and the run's next requests commit together.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import signal
import socket
import threading
import time
import traceback
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, InvalidStateError, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from tether import config, manifest, registry, serde
from tether.context import StepContext, current_step
from tether.durations import seconds_until
from tether.errors import FatalError, RetryableError, SerializationError, WorkflowNotFoundError
from tether.runtime.instance import ACTIVATION_EVENTS, TERMINAL_EVENTS, RunInstance, error_payload
from tether.worlds.base import World
from tether.worlds.records import (
    Activation,
    EventRecord,
    NewRun,
    RunRecord,
    StepOutcome,
    WorkerInfo,
)

log = logging.getLogger("tether.worker")
T = TypeVar("T")

#: Tasks claimed per round: a worker leaves the rest to its peers.
CLAIM_BATCH = 64
BACKOFF_BASE = 1.0
#: How long a run whose handling failed waits before any worker takes it again.
RETRY_RUN_AFTER = 1.0
#: After claim rounds that found nothing (peers were first), a wake-up claims no sooner
#: than this long after the last round, doubling per empty round up to PACE_MAX (seconds).
PACE_BASE = 0.001
PACE_MAX = 0.05
#: Workflow tasks that fall due within this many seconds are claimed with the round and
#: held here until their time, so that timers falling due close together cost one claim.
#: A hook payload for a run whose timer is held waits for it at most this long.
CLAIM_AHEAD = 0.05
#: How often a step's outcome is offered to a failing World before the step is re-run.
RECORD_ATTEMPTS = 5
BACKOFF_MAX = 60.0


@dataclass(frozen=True, slots=True)
class _StepJob:
    run_id: str
    step_id: str
    step_name: str
    input: str
    attempt: int


class Worker:
    """Runs the workflows and steps this process imported, for one deployment.

    Use it as a context manager for an in-process worker on a background
    thread (``with tether.Worker(): ...``), or call ``run()`` to serve in the
    foreground until SIGINT/SIGTERM, which drain in-flight work and exit.
    """

    def __init__(
        self,
        *,
        world: World | str | None = None,
        deployment_id: str | None = None,
        concurrency: int = 512,
        step_threads: int = 64,
        cache_size: int = 10_000,
        lease_seconds: float = 10.0,
        drain_timeout: float = 30.0,
    ) -> None:
        self.world = config.resolve_world(world)
        self.deployment_id = deployment_id or manifest.current_deployment_id()
        self.environment = manifest.current_environment()
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.concurrency = concurrency
        self.cache_size = cache_size
        self.lease_seconds = lease_seconds
        self.drain_timeout = drain_timeout
        self._cache: OrderedDict[str, RunInstance] = OrderedDict()
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}
        self._inflight: set[asyncio.Task[None]] = set()
        self._step_pool = ThreadPoolExecutor(step_threads, thread_name_prefix="tether-step")
        self._io_pool = ThreadPoolExecutor(32, thread_name_prefix="tether-io")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop the worker serves on, while it runs."""
        return self._loop

    # -- lifecycle -----------------------------------------------------------

    def __enter__(self) -> Worker:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        """Serve on a background thread; returns once the worker is ready."""
        if self._thread is not None:
            raise RuntimeError("this worker is already running")
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self.serve()), name="tether-worker", daemon=True
        )
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        """Drain in-flight work (up to ``drain_timeout``) and stop the background thread."""
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stopping.set)
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def run(self, on_ready: Callable[[], None] | None = None) -> None:
        """Serve in the foreground until SIGINT or SIGTERM, then drain and return.

        ``on_ready`` is called once the worker has registered its deployment.
        """

        async def main() -> None:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self._request_stop)
            await self.serve(on_ready)

        asyncio.run(main())

    async def serve(self, on_ready: Callable[[], None] | None = None) -> None:
        """Claim and run tasks until stopped; the coroutine behind ``start`` and ``run``."""
        try:
            self._loop = asyncio.get_running_loop()
            # World calls that go to a thread (reads of a remote database) may come
            # by the hundred at once: the default executor has only a few threads.
            self._loop.set_default_executor(self._io_pool)
            self._wake = asyncio.Event()
            self._stopping = asyncio.Event()
            info = WorkerInfo(
                self.worker_id,
                self.deployment_id,
                self.environment,
                socket.gethostname(),
                os.getpid(),
            )
            await self._io(self.world.register_worker, info, manifest.build_manifest())
            remove_listener = self.world.add_listener(
                self._wake_threadsafe,
                skip_own_loop=True,
                work_only=True,
                deployment_id=self.deployment_id,
            )
            config.announce_worker(self.world.url, self.deployment_id, self)
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            raise
        self._ready.set()
        if on_ready is not None:
            on_ready()
        heartbeat = asyncio.create_task(self._heartbeat())
        try:
            await self._claim_loop()
        finally:
            config.withdraw_worker(self.world.url, self.deployment_id, self)
            remove_listener()
            await self._drain()
            heartbeat.cancel()
            await self._io(self.world.unregister_worker, self.worker_id)
            for instance in self._cache.values():
                instance.close()
            self._cache.clear()
            self._step_pool.shutdown(wait=False, cancel_futures=True)
            self._io_pool.shutdown(wait=False)

    # -- handing work to this worker from the same process -------------------

    def start_local(self, run: NewRun) -> Future[RunRecord] | None:
        """Create a run and its first activation in one commit, on this worker (thread-safe).

        Returns ``None`` when this worker cannot take it (stopped, or called
        from its own loop, which must not block on itself).
        """
        loop, stopping = self._loop, self._stopping
        if loop is None or loop.is_closed() or stopping is None or stopping.is_set():
            return None
        with contextlib.suppress(RuntimeError):
            if asyncio.get_running_loop() is loop:
                return None
        future: Future[RunRecord] = Future()
        try:
            loop.call_soon_threadsafe(self._spawn, self._start_local(run, future))
        except RuntimeError:
            return None
        return future

    async def _start_local(self, run: NewRun, future: Future[RunRecord]) -> None:
        definition = registry.WORKFLOWS.get(run.workflow_name)
        try:
            if definition is None:
                future.set_result(await self.world.create_run_async(run))
                return
            async with self._run_lock(run.run_id):
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
                    run.created_at or time.time(),
                    None,
                    None,
                    1,
                )
                instance = RunInstance(record, definition)
                instance.last_seq = 1  # run_created
                started = EventRecord(run.run_id, 0, "run_started", created_at=time.time())
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
                self._run_steps(self._after_commit(instance, new_events, True))
        except BaseException as exc:
            with contextlib.suppress(InvalidStateError):  # the commit may have answered
                future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise

    # -- claiming ------------------------------------------------------------

    async def _claim_loop(self) -> None:
        assert self._wake is not None and self._stopping is not None
        failures = 0
        empty = 0  # claim rounds in a row that found nothing
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                claimed, delay = await self._claim_round()
                failures = 0
                empty = 0 if claimed else empty + 1
            except Exception:
                # The World is unreachable or failing: keep the worker, retry with backoff.
                failures += 1
                delay = min(0.25 * 2**failures, 5.0)
                log.exception("claiming work failed; retrying in %.1f s", delay)
            if self._stopping.is_set():
                break
            round_end = time.monotonic()
            if not await self._sleep(delay, wake=True) and empty:
                # Woken, but the last rounds found nothing: peers claimed the work first.
                # Leave them the next too for a moment, so that workers woken by every
                # new task claim in turns, not as a herd: no more than one claim per
                # pause here, which doubles per empty round in a row.
                pause = min(PACE_BASE * 2 ** (empty - 1), PACE_MAX)
                left = round_end + pause - time.monotonic()
                if left > 0:
                    await self._sleep(left, wake=False)

    async def _sleep(self, seconds: float, *, wake: bool) -> bool:
        """Wait ``seconds``, or less if stopping (or, with ``wake``, if woken).

        Returns whether the full time passed.
        """
        assert self._wake is not None and self._stopping is not None
        waits = [asyncio.ensure_future(self._stopping.wait())]
        if wake:
            waits.append(asyncio.ensure_future(self._wake.wait()))
        done, pending = await asyncio.wait(waits, timeout=seconds, return_when="FIRST_COMPLETED")
        for waiter in pending:
            waiter.cancel()
        return not done

    async def _claim_round(self) -> tuple[bool, float]:
        """Claim what is due; return whether anything was, and how long to sleep."""
        free = min(self.concurrency - len(self._inflight), CLAIM_BATCH)
        if free <= 0:
            return True, 0.05  # full: look again when some work has finished
        tasks, due = await self.world.claim_due_async(
            self.deployment_id, self.worker_id, free, self.lease_seconds, CLAIM_AHEAD
        )
        for task in tasks:
            if task.kind == "workflow":
                self._spawn(self._activate(task.run_id, task.due_at), task.run_id)
            else:
                job = _StepJob(task.run_id, task.step_id, task.step_name, task.input, task.attempt)
                self._spawn(self._run_step(job))
        if due is None:
            return bool(tasks), 1.0  # a slow safety net; commits and timers wake us sooner
        return bool(tasks), min(max(due - time.time(), 0.0), 1.0)

    def _spawn(self, coro: Any, run_id: str | None = None) -> None:
        task = asyncio.ensure_future(coro if run_id is None else self._guarded(coro, run_id))
        self._inflight.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        was_full = len(self._inflight) >= self.concurrency
        self._inflight.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            log.error(
                "worker task failed", exc_info=(type(exc), exc, exc.__traceback__) if exc else None
            )
        if was_full:
            self._wake_up()  # room to claim again

    # -- workflow activations --------------------------------------------------

    async def _activate(self, run_id: str, due_at: float = 0.0) -> None:
        """Advance a run: replay or continue it, apply due sleeps, commit what it asks for.

        A task claimed ahead of its time (``due_at`` still to come) is a timer:
        it waits for its time here. A cached run with nothing but sleeps out
        then goes on from memory, without reading its log: only an operator
        (a cancel, a wake-up) can have moved it, and then the commit is
        refused and the run replayed from its log.
        """
        timer = due_at > time.time()
        while (left := due_at - time.time()) > 0:
            await asyncio.sleep(left)  # the loop's clock may wake us a little early
        async with self._run_lock(run_id):
            instance = self._cache.pop(run_id, None)
            events: list[EventRecord] = []
            if not (timer and instance is not None and instance.only_sleeping):
                events = await self.world.list_events_async(
                    run_id, instance.last_seq if instance else 0
                )
            if instance is not None and any(e.type in ACTIVATION_EVENTS for e in events):
                instance.close()  # another worker advanced the run: replay it from the log
                instance = None
                events = await self.world.list_events_async(run_id, 0)
            if any(e.type in TERMINAL_EVENTS for e in events):
                if instance is not None:
                    instance.close()
                return
            if instance is None:
                instance = await self._new_instance(run_id)
                if instance is None:
                    return
            instance.replay(events)
            expected = instance.last_seq
            answers: list[EventRecord] = []
            now = time.time()
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
            self._run_steps(self._after_commit(instance, new_events, committed))
            if not committed:
                self._wake_up()  # the world re-queued the run

    async def _new_instance(self, run_id: str) -> RunInstance | None:
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
    ) -> list[_StepJob]:
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
            _StepJob(instance.run_id, e.correlation_id or "", e.name or "", e.payload or "", 1)
            for e in new_events
            if e.type == "step_created"
        ]

    def _run_steps(self, jobs: list[_StepJob]) -> None:
        # A draining worker starts nothing new: it gives the leases back on exit
        # and another worker runs these steps.
        if self._draining():
            return
        for job in jobs:
            self._spawn(self._run_step(job))

    async def _guarded(self, work: Any, run_id: str) -> None:
        """Run an activation; if it fails unexpectedly, hand the run back to the World.

        Errors of user code never get here (they become step or run
        outcomes): this is for a World that failed mid-way or a bug. The
        run is dropped from the cache and its workflow task given back, due
        a moment later, so that the run is replayed from its log instead of
        its task staying leased (and renewed by heartbeats) forever.
        """
        try:
            await work
        except Exception:
            log.exception("run %s failed in this worker; replaying it from its log", run_id)
            self._evict(run_id)
            await self._give_back(run_id, "")

    def _evict(self, run_id: str) -> None:
        instance = self._cache.pop(run_id, None)
        if instance is not None:
            instance.close()

    async def _give_back(self, run_id: str, step_id: str) -> None:
        try:
            await self._io(
                self.world.release_task, run_id, step_id, self.worker_id, RETRY_RUN_AFTER
            )
        except Exception:
            log.exception("could not give back task %r of run %s", step_id, run_id)
        self._wake_up()

    def _draining(self) -> bool:
        return self._stopping is not None and self._stopping.is_set()

    # -- steps -------------------------------------------------------------------

    async def _run_step(self, first: _StepJob) -> None:
        """Run a step, then (in the same task) the next step its outcome leads to."""
        job: _StepJob | None = first
        while job is not None:
            definition = registry.STEPS.get(job.step_name)
            outcome: StepOutcome
            if definition is None:
                error = WorkflowNotFoundError(
                    f"step {job.step_name!r} is not defined in deployment {self.deployment_id!r}"
                )
                outcome = self._outcome(job, "failed", serde.dumps(error))
            else:
                outcome = await self._attempt(job, definition)
            if outcome.status == "retrying":
                try:
                    await self._record(outcome)  # the retry is a task due later
                except Exception:
                    log.exception("could not record step %s of run %s", job.step_id, job.run_id)
                    await self._give_back(job.run_id, job.step_id)
                return
            try:
                following = await self._deliver(outcome)
            except Exception:
                # The outcome could not be recorded: the step runs again (at least once).
                log.exception("could not record step %s of run %s", job.step_id, job.run_id)
                self._evict(job.run_id)
                await self._give_back(job.run_id, job.step_id)
                return
            job = following[0] if following and not self._draining() else None
            self._run_steps(following[1:])

    async def _attempt(self, job: _StepJob, definition: registry.Step[..., Any]) -> StepOutcome:
        token = current_step.set(
            StepContext(
                job.run_id,
                job.step_id,
                job.step_name,
                job.attempt,
                self.deployment_id,
                self.world.url,
            )
        )
        try:
            with config.step_world(self.world.url):
                args, kwargs = serde.loads(job.input)
                if definition.is_async:
                    result = await definition.fn(*args, **kwargs)
                else:
                    context = contextvars.copy_context()
                    result = await asyncio.get_running_loop().run_in_executor(
                        self._step_pool, lambda: context.run(definition.fn, *args, **kwargs)
                    )
            payload = serde.dumps(result, where=f"return value of {job.step_name}")
            return self._outcome(job, "completed", payload)
        except (FatalError, SerializationError) as exc:
            return self._outcome(job, "failed", _dump_error(exc))
        except Exception as exc:
            if job.attempt > definition.max_retries:
                return self._outcome(job, "failed", _dump_error(exc))
            now = time.time()
            if isinstance(exc, RetryableError) and exc.retry_after is not None:
                retry_at = now + seconds_until(exc.retry_after, now)
            else:
                retry_at = now + min(BACKOFF_BASE * 2 ** (job.attempt - 1), BACKOFF_MAX)
            return self._outcome(job, "retrying", _dump_error(exc), retry_at)
        finally:
            current_step.reset(token)

    def _outcome(
        self, job: _StepJob, status: Any, payload: str, retry_at: float | None = None
    ) -> StepOutcome:
        return StepOutcome(
            job.run_id, job.step_id, self.worker_id, status, payload, job.attempt, retry_at
        )

    async def _deliver(self, outcome: StepOutcome) -> list[_StepJob]:
        """Record a step's end; if the run is cached here, advance it in the same commit."""
        async with self._run_lock(outcome.run_id):
            instance = self._cache.pop(outcome.run_id, None)
            if instance is None:
                await self._record(outcome)
                return []
            kind = "step_completed" if outcome.status == "completed" else "step_failed"
            answer = EventRecord(
                outcome.run_id,
                0,
                kind,
                outcome.step_id,
                payload=outcome.payload,
                attrs={"attempt": outcome.attempt},
                created_at=time.time(),
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
                await self._record(outcome)
                return []
            if not applied:
                self._wake_up()
            return self._after_commit(instance, new_events, applied)

    async def _record(self, outcome: StepOutcome) -> None:
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

    # -- plumbing ------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _run_lock(self, run_id: str) -> AsyncIterator[None]:
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

    async def _io(self, fn: Callable[..., T], *args: Any) -> T:
        """Call a blocking World method (the rare ones: registration, heartbeat) off the loop."""
        return await asyncio.get_running_loop().run_in_executor(self._io_pool, fn, *args)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.lease_seconds / 4)
            try:
                await self._io(self.world.heartbeat, self.worker_id, self.lease_seconds)
            except Exception:
                log.exception("heartbeat of worker %s failed", self.worker_id)

    async def _drain(self) -> None:
        if self._inflight:
            _, pending = await asyncio.wait(set(self._inflight), timeout=self.drain_timeout)
            for task in pending:
                task.cancel()

    def _wake_up(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def _wake_threadsafe(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(wake.set)

    def _request_stop(self) -> None:
        if self._stopping is not None:
            if self._stopping.is_set():
                os._exit(130)  # a second Ctrl-C: stop draining
            log.warning("draining in-flight work; press Ctrl-C again to exit at once")
            self._stopping.set()


def _resolve(future: Future[RunRecord], record: RunRecord) -> None:
    """Answer a waiting ``start()``, unless a failure (a cancelled loop) answered it first."""
    with contextlib.suppress(InvalidStateError):
        future.set_result(record)


def _dump_error(exc: BaseException) -> str:
    """Serialize a step's exception; one that cannot be serialized becomes a plain error."""
    try:
        return serde.dumps(exc, where="step error")
    except SerializationError:
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        return serde.dumps(RuntimeError(f"{type(exc).__qualname__}: {exc}\n{text}"))
