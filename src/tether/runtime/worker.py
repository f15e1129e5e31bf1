"""The worker: claims its deployment's tasks, advances runs and runs their steps.

One asyncio loop per worker. Workflow code runs on each run's own
deterministic loop, inside an activation on this loop; async steps run as
tasks here and plain ``def`` steps in a thread pool. Steps a workflow asks
for are leased to this worker in the same commit that records them and run
at once (no queue round trip); when a step ends, its result is fed to the
cached run and the outcome and the run's next requests commit together.

Stopping drains: the steps running finish and are recorded, nothing new
starts, and a step leased here but not begun is handed back (a
``step_retrying`` marked ``handed_back`` ends its ``step_started``) so that
another worker takes it at once. A step that ends while draining is
recorded alone: the run goes on on whichever worker takes its workflow
task, with no step of it leased here. A foreground worker (``run``) that is
signalled again, or whose drain outlasts ``drain_timeout``, exits at once
and names the steps it abandons: they run again once their leases expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from types import FrameType
from typing import Any, NoReturn, TypeVar

from tether import config, manifest
from tether.clock import Clock, SystemClock
from tether.errors import ContextError
from tether.runtime import shutdown
from tether.runtime.activation import Activations
from tether.runtime.answering import CheckAnswerer
from tether.runtime.pacing import ClaimPacer
from tether.runtime.retry import DEFAULT_POLICY, RetryPolicy
from tether.runtime.steps import StepJob, StepRunner
from tether.worlds.base import BUSY_LOAD, World
from tether.worlds.records import (
    NewRun,
    RunRecord,
    StepOutcome,
    Task,
    WorkerInfo,
)

log = logging.getLogger("tether.worker")
T = TypeVar("T")

#: Tasks claimed per round: a worker leaves the rest to its peers.
CLAIM_BATCH = 64
#: How long a run whose handling failed waits before any worker takes it again.
RETRY_RUN_AFTER = 1.0
#: Workflow tasks that fall due within this many seconds are claimed with the round and
#: held here until their time, so that timers falling due close together cost one claim.
#: A hook payload for a run whose timer is held waits for it at most this long.
CLAIM_AHEAD = 0.05
#: The longest a worker waits between claims with nothing due: a safety net only, since
#: commits that make work due wake a worker of its deployment. A busy worker also covers
#: for peers that died while woken by name (until their heartbeats go stale); an idle one
#: looks rarely, so that an idle fleet costs next to nothing.
SAFETY_NET_BUSY = 1.0
SAFETY_NET_IDLE = 5.0
#: A worker is idle once this long has passed since its last claim that found work.
IDLE_AFTER = 3.0
#: A heartbeat two beats late (half a lease) is logged, at most this often (seconds).
LATE_WARN_EVERY = 60.0
#: Beats asked for sooner (the worker filled up, or has room again) come at most this
#: often (seconds): a worker at the edge of full does not beat per task.
SOON_GAP = 0.05
#: A worker busy by its concurrency in use is free again below this share of it.
FREE_AGAIN = 0.6
#: A worker whose event loop has not run for this long (seconds, and at least three
#: leases) stops renewing its leases until it runs again: its work goes to others.
STALLED_AFTER = 60.0


class Worker:
    """Runs the workflows and steps this process imported, for one deployment.

    Use it as a context manager for an in-process worker on a background
    thread (``with tether.Worker(): ...``), or call ``run()`` to serve in the
    foreground until SIGINT/SIGTERM, which drain in-flight work and exit.
    Either way stopping waits up to ``drain_timeout`` seconds for the steps
    running, and hands back those leased here but not begun.
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
        clock: Clock | None = None,
        retry_policy: RetryPolicy = DEFAULT_POLICY,
        replace_deployment: bool = False,
    ) -> None:
        self.world = config.resolve_world(world)
        #: Development only: take over the deployment id even if it was registered
        #: with other code (the default refuses, with ``DeploymentConflictError``).
        self.replace_deployment = replace_deployment
        #: The World's own clock unless told otherwise: due times are the World's.
        self.clock = clock or self.world.clock
        self.deployment_id = manifest.check_deployment_id(
            deployment_id or manifest.current_deployment_id()
        )
        self.environment = manifest.current_environment()
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.concurrency = concurrency
        self.cache_size = cache_size
        self.lease_seconds = lease_seconds
        self.drain_timeout = drain_timeout
        self._runs = Activations(
            world=self.world,
            clock=self.clock,
            worker_id=self.worker_id,
            deployment_id=self.deployment_id,
            lease_seconds=lease_seconds,
            cache_size=cache_size,
            wake_up=self._wake_up,
        )
        self._inflight: set[asyncio.Task[None]] = set()
        self._steps = StepRunner(
            worker_id=self.worker_id,
            deployment_id=self.deployment_id,
            world_url=self.world.url,
            clock=self.clock,
            policy=retry_policy,
            threads=step_threads,
        )
        self._io_pool = ThreadPoolExecutor(32, thread_name_prefix="tether-io")
        #: Set to beat before the next beat's time (the worker filled up, or has room).
        self._beat_soon = threading.Event()
        self._busy = False
        #: The heartbeat thread's last call the loop ran (its time): a held loop lags.
        self._loop_seen = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        #: Serving through ``run``: signals stop it, and it may exit the process at once.
        self._foreground = False
        #: Activations under way, and steps being handed back (what a drain waits for).
        self._activating = 0
        self._handing_back: set[StepJob] = set()
        #: When (monotonic) a claim last found work.
        self._found_at = 0.0

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
            raise ContextError("this worker is already running")
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self.serve()), name="tether-worker", daemon=True
        )
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        """Drain in-flight work (up to ``drain_timeout``) and stop the background thread.

        Steps still running after ``drain_timeout`` are cancelled and their
        leases given back, due now.
        """
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._begin_drain, "stop() was called", logging.INFO)
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def run(self, on_ready: Callable[[], None] | None = None) -> None:
        """Serve in the foreground until SIGINT or SIGTERM, then drain and return.

        ``on_ready`` is called once the worker has registered its deployment.
        A second SIGINT or SIGTERM exits the process at once with code 128
        plus the signal's number (130, 143), and a drain that outlasts
        ``drain_timeout`` with code 1: the steps still running are abandoned
        and run again on another worker once their leases expire.
        """

        async def main() -> None:
            loop = asyncio.get_running_loop()
            for sig in shutdown.STOP_SIGNALS:
                loop.add_signal_handler(sig, self._on_first_signal, sig)
            await self.serve(on_ready)

        self._foreground = True
        previous = {sig: signal.getsignal(sig) for sig in shutdown.STOP_SIGNALS}
        try:
            asyncio.run(main())
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

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
            replaced = await self._io(
                functools.partial(
                    self.world.register_worker,
                    info,
                    manifest.build_manifest(),
                    replace=self.replace_deployment,
                )
            )
            if replaced:
                log.warning(
                    "replaced deployment %r: it was registered with other code for %s;"
                    " runs pinned to it now resume into this code (--replace-deployment)",
                    self.deployment_id,
                    "; ".join(replaced),
                )
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
        beating = threading.Event()
        heartbeat = threading.Thread(
            target=self._beat, args=(beating,), name="tether-heartbeat", daemon=True
        )
        heartbeat.start()
        try:
            await self._serve_until_stopped(beating, heartbeat, remove_listener)
        finally:
            # Also when the drain was cut short: no thread renews a gone worker's leases.
            beating.set()
            self._beat_soon.set()

    async def _serve_until_stopped(
        self,
        beating: threading.Event,
        heartbeat: threading.Thread,
        remove_listener: Callable[[], None],
    ) -> None:
        """Claim until stopped, then drain, stop the heartbeat and unregister."""
        answerer = CheckAnswerer(self.world, self.deployment_id, self.worker_id, self._io)
        checks = asyncio.create_task(answerer.run())
        try:
            await self._claim_loop()
        finally:
            answerer.stop()
            config.withdraw_worker(self.world.url, self.deployment_id, self)
            remove_listener()
            await self._drain()
            log.info("worker %s drained; stopping", self.worker_id)
            beating.set()
            self._beat_soon.set()
            await self._io(heartbeat.join, self.lease_seconds)
            # It ends once the request under way is answered, before the pools go.
            _, late = await asyncio.wait({checks}, timeout=self.drain_timeout)
            for task in late:
                task.cancel()
            await self._io(self.world.unregister_worker, self.worker_id)
            self._runs.close()
            self._steps.close()
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
        self._activating += 1
        try:
            jobs = await self._runs.start(run, future)
        finally:
            self._activating -= 1
        self._run_steps(jobs)

    # -- claiming ------------------------------------------------------------

    async def _claim_loop(self) -> None:
        assert self._wake is not None and self._stopping is not None
        pacer = ClaimPacer()
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                claimed, until = await self._claim_round()
                pacer.found(claimed)
            except Exception:
                # The World is unreachable or failing: keep the worker, retry with backoff.
                delay = pacer.failed()
                until = self.clock.time() + delay
                log.exception("claiming work failed; retrying in %.1f s", delay)
            if self._stopping.is_set():
                break
            round_end = time.monotonic()
            if not await self._sleep_until(until):
                # Woken: if the last rounds found nothing, peers claimed the work first;
                # leave them the next too for a moment (ClaimPacer), in real time.
                left = round_end + pacer.pause_after_wake() - time.monotonic()
                if left > 0:
                    await self._pause(left)

    async def _sleep_until(self, until: float) -> bool:
        """Wait until ``until`` on the worker's clock, less if woken or stopping.

        Returns whether the time came (neither a wake-up nor a stop cut it short).
        """
        assert self._wake is not None and self._stopping is not None
        waits: list[asyncio.Future[Any]] = [
            asyncio.ensure_future(self._stopping.wait()),
            asyncio.ensure_future(self._wake.wait()),
        ]
        if isinstance(self.clock, SystemClock):
            timeout = max(until - self.clock.time(), 0.0)
            done, _ = await asyncio.wait(waits, timeout=timeout, return_when="FIRST_COMPLETED")
            timed_out = not done
        else:
            # A stepped clock: its time coming is one more event to wait for.
            timer = asyncio.ensure_future(self.clock.sleep_until(until))
            waits.append(timer)
            done, _ = await asyncio.wait(waits, return_when="FIRST_COMPLETED")
            timed_out = timer in done
        for waiter in waits:
            waiter.cancel()
        return timed_out and not self._stopping.is_set() and not self._wake.is_set()

    async def _pause(self, seconds: float) -> None:
        """Wait ``seconds`` of real time, less if stopping; wake-ups do not cut it short."""
        assert self._stopping is not None
        stopping = asyncio.ensure_future(self._stopping.wait())
        await asyncio.wait([stopping], timeout=seconds)
        stopping.cancel()

    async def _claim_round(self) -> tuple[bool, float]:
        """Claim what is due; return whether anything was, and when to claim again."""
        now = self.clock.time()
        free = min(self.concurrency - len(self._inflight), CLAIM_BATCH)
        if free <= 0:
            return True, now + 0.05  # full: look again when some work has finished
        tasks, due = await self.world.claim_due_async(
            self.deployment_id, self.worker_id, free, self.lease_seconds, CLAIM_AHEAD
        )
        for task in tasks:
            if task.kind == "workflow" and self._draining():
                # Claimed as the stop came (perhaps ahead of its time): back, due when it was.
                self._spawn(self._give_back(task.run_id, "", max(task.due_at - now, 0.0)))
            elif task.kind == "workflow":
                self._spawn(self._activate(task), task.run_id)
            else:
                # Draining, it is not begun: _run_step hands it back.
                job = StepJob(task.run_id, task.step_id, task.step_name, task.input, task.attempt)
                self._spawn(self._run_step(job))
        # A slow safety net: commits and timers wake us sooner.
        if tasks:
            self._found_at = time.monotonic()
        busy = self._inflight or time.monotonic() - self._found_at < IDLE_AFTER
        latest = now + (SAFETY_NET_BUSY if busy else SAFETY_NET_IDLE)
        return bool(tasks), min(due if due is not None else latest, latest)

    def _spawn(self, coro: Any, run_id: str | None = None) -> None:
        task = asyncio.ensure_future(coro if run_id is None else self._guarded(coro, run_id))
        self._inflight.add(task)
        task.add_done_callback(self._finished)
        self._note_busy()

    def _note_busy(self) -> None:
        """Beat at once when the worker fills up or has room again: new work goes by it.

        Busy from ``BUSY_LOAD`` of its concurrency in use, free again below
        ``FREE_AGAIN``: a worker at the edge does not beat per task.
        """
        share = len(self._inflight) / self.concurrency
        busy = share >= BUSY_LOAD if not self._busy else share >= FREE_AGAIN
        if busy != self._busy:
            self._busy = busy
            self._beat_soon.set()

    def _finished(self, task: asyncio.Task[None]) -> None:
        was_full = len(self._inflight) >= self.concurrency
        self._inflight.discard(task)
        self._note_busy()
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            log.error(
                "worker task failed", exc_info=(type(exc), exc, exc.__traceback__) if exc else None
            )
        if was_full:
            self._wake_up()  # room to claim again

    # -- workflow activations --------------------------------------------------

    async def _activate(self, task: Task) -> None:
        self._activating += 1
        try:
            jobs = await self._runs.activate(task.run_id, task.due_at, task.run, task.events)
        finally:
            self._activating -= 1
        self._run_steps(jobs)

    def _run_steps(self, jobs: list[StepJob]) -> None:
        # A draining worker starts nothing new: the steps a commit leased to it as
        # the stop came go back at once, for another worker.
        for job in jobs:
            self._spawn(self._hand_back(job) if self._draining() else self._run_step(job))

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
            self._runs.evict(run_id)
            await self._give_back(run_id, "")

    async def _give_back(self, run_id: str, step_id: str, delay: float = RETRY_RUN_AFTER) -> None:
        try:
            await self._io(self.world.release_task, run_id, step_id, self.worker_id, delay)
        except Exception:
            log.exception("could not give back task %r of run %s", step_id, run_id)
        self._wake_up()

    async def _hand_back(self, job: StepJob) -> None:
        """Give back a step leased here that will not begin here: any worker may take it now."""
        self._handing_back.add(job)
        try:
            handed = await self._io(
                self.world.hand_back_step, job.run_id, job.step_id, self.worker_id, job.attempt
            )
        except Exception:
            log.exception(
                "could not hand back %s; its lease is given back when this worker exits",
                job.describe(),
            )
            return
        finally:
            self._handing_back.discard(job)
        if handed:
            log.info(
                "handed back %s: leased here but not started; due now for any worker",
                job.describe(),
            )
        else:
            log.info(
                "not handing back %s: no longer leased here (its run ended, or another "
                "worker took it)",
                job.describe(),
            )

    async def _mark_draining(self) -> None:
        """Tell the World this worker takes nothing new, so that no commit wakes it for work."""
        try:
            await self._io(self.world.worker_draining, self.worker_id)
        except Exception:
            log.exception("could not mark worker %s as draining", self.worker_id)

    def _draining(self) -> bool:
        return self._stopping is not None and self._stopping.is_set()

    # -- steps -------------------------------------------------------------------

    async def _run_step(self, first: StepJob) -> None:
        """Run a step, then (in the same task) the next step its outcome leads to."""
        job: StepJob | None = first
        while job is not None:
            outcome = await self._steps.attempt(job)
            if outcome is None:  # the worker stopped before the attempt began
                await self._hand_back(job)
                return
            if outcome.status == "retrying" or self._draining():
                await self._record_alone(job, outcome)
                return
            try:
                following = await self._runs.deliver(outcome)
            except Exception:
                # The outcome could not be recorded: the step runs again (at least once).
                log.exception("could not record step %s of run %s", job.step_id, job.run_id)
                self._runs.evict(job.run_id)
                await self._give_back(job.run_id, job.step_id)
                return
            job = following.pop(0) if following and not self._draining() else None
            self._run_steps(following)

    async def _record_alone(self, job: StepJob, outcome: StepOutcome) -> None:
        """Record a retry (a task due later), or a step that ended while draining.

        Draining, the run is not advanced here: no step of it is leased to a
        worker that is stopping, and whichever worker takes its workflow task
        (due now) replays it from its log.
        """
        ended = outcome.status != "retrying"
        if ended:
            self._runs.evict(job.run_id)
        try:
            await self._runs.record(outcome)
        except Exception:
            log.exception("could not record step %s of run %s", job.step_id, job.run_id)
            await self._give_back(job.run_id, job.step_id)
            return
        if ended:
            log.info(
                "%s %s while draining: recorded; its run goes on on the next worker of %r",
                job.describe(),
                outcome.status,
                self.deployment_id,
            )

    # -- plumbing ------------------------------------------------------------------

    async def _io(self, fn: Callable[..., T], *args: Any) -> T:
        """Call a blocking World method (the rare ones: registration, checks) off the loop."""
        return await asyncio.get_running_loop().run_in_executor(self._io_pool, fn, *args)

    def _beat(self, stop: threading.Event) -> None:
        """The heartbeat thread: beats every quarter lease until ``stop`` is set.

        A thread of its own, in real time: on the event loop a beat waited for
        whatever held the loop (a second and more, on a loaded machine), and a
        late beat lets the worker's leases lapse, so that another worker may
        run its steps again. A held loop is noticed (it did not run the last
        beat's call): the worker reports itself busy, so new work goes to
        others, and after ``STALLED_AFTER`` it stops renewing its leases.
        """
        every = self.lease_seconds / 4
        began = last = since = time.monotonic()  # registration was the first beat
        cpu = time.process_time()
        warned: float | None = None
        asked: float | None = None  # when the loop was last asked to answer
        said_stalled = False
        stalled_after = max(STALLED_AFTER, 3 * self.lease_seconds)
        # A quarter lease after the last one began, however long that one took; sooner
        # when the worker fills up or has room again (not twice within SOON_GAP).
        while True:
            soon = self._beat_soon.wait(max(began + every - time.monotonic(), 0.0))
            if stop.is_set():
                return
            if soon:
                if stop.wait(max(since + SOON_GAP - time.monotonic(), 0.0)):
                    return
                self._beat_soon.clear()
            began, was = time.monotonic(), cpu
            cpu = time.process_time()
            # The share of one core this process used since the last beat (attempted),
            # or of its concurrency in use now, whichever is more.
            load = max((cpu - was) / max(began - since, 1e-3), self._busy_share())
            since = began
            # Whether the loop answered the last beat's call: if not, it is held (blocking
            # code, a wedged task) and takes no new work meanwhile.
            loop = self._loop
            if loop is None or loop.is_closed():
                return
            stalled = 0.0 if asked is None or self._loop_seen >= asked else began - asked
            if not stalled:
                asked = began
                with contextlib.suppress(RuntimeError):  # closing: the next look returns
                    loop.call_soon_threadsafe(self._loop_answers, asked)
            if stalled > stalled_after:
                if not said_stalled:  # once per stall
                    said_stalled = True
                    log.error(
                        "worker %s: its event loop has not run for %.0f s; its leases are"
                        " no longer renewed, so that other workers take its work",
                        self.worker_id,
                        stalled,
                    )
                continue
            said_stalled = False
            if stalled:
                load = 1.0  # held: new work goes to others
            try:
                self.world.heartbeat(self.worker_id, self.lease_seconds, round(load, 3))
            except Exception:
                if stop.is_set():
                    return  # the World closed under a last beat
                log.exception("heartbeat of worker %s failed", self.worker_id)
                continue
            gap, last = began - last, began
            if gap > 2 * every and (warned is None or began - warned > LATE_WARN_EVERY):
                warned = began
                log.warning(
                    "worker %s: a heartbeat came %.1f s after the last one, over half its"
                    " %g s leases; with none for %g s its leases lapse, and other workers"
                    " may run its steps again. A machine this busy needs longer leases"
                    " (--lease-seconds)",
                    self.worker_id,
                    gap,
                    self.lease_seconds,
                    self.lease_seconds,
                )

    def _busy_share(self) -> float:
        return len(self._inflight) / self.concurrency  # read from the heartbeat thread

    def _loop_answers(self, asked: float) -> None:
        self._loop_seen = asked

    async def _drain(self) -> None:
        """Wait for what is in flight, up to ``drain_timeout``; then abandon or cancel the rest."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.drain_timeout
        # Work in flight spawns more (a hand-back, a record): wait until none is left.
        while self._inflight and loop.time() < deadline:
            await asyncio.wait(set(self._inflight), timeout=deadline - loop.time())
        if not self._inflight:
            return
        why = f"the drain timeout ({self.drain_timeout:g} s) ran out"
        if self._foreground:
            self._abandon(why, shutdown.EXIT_DRAIN_TIMEOUT)
        log.warning(
            "%s: cancelling %s; their leases are given back, due now",
            why,
            shutdown.steps_text(self._steps.running()) or "the work in flight",
        )
        for task in list(self._inflight):
            task.cancel()

    def _wake_up(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def _wake_threadsafe(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(wake.set)

    # -- stopping --------------------------------------------------------------------

    def _on_first_signal(self, signum: int) -> None:
        # From now on a stop signal exits at once, even while a step blocks the
        # loop: a plain handler runs between any two bytecodes of the main thread.
        loop = asyncio.get_running_loop()
        for sig in shutdown.STOP_SIGNALS:
            loop.remove_signal_handler(sig)
            signal.signal(sig, self._on_second_signal)
        self._begin_drain(signal.Signals(signum).name, logging.WARNING)

    def _on_second_signal(self, signum: int, frame: FrameType | None) -> None:
        self._abandon(f"{signal.Signals(signum).name} while draining", shutdown.exit_code(signum))

    def _begin_drain(self, why: str, level: int) -> None:
        """Stop claiming and starting work, and say what the drain waits for."""
        if self._stopping is None or self._stopping.is_set():
            return
        self._stopping.set()
        self._spawn(self._mark_draining())
        running = self._steps.stop_starting()
        message = shutdown.draining(
            why, running, self._activating, self.drain_timeout, self._foreground
        )
        log.log(level, "%s", message)

    def _abandon(self, why: str, code: int) -> NoReturn:
        """Exit the process at once, naming the steps whose leases it leaves to expire."""
        shutdown.abandon(
            why, code, self._steps.running(), list(self._handing_back), self.lease_seconds
        )
