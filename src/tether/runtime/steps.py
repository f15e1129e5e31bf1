"""Running one attempt of a step: its context, its thread, and what its end becomes.

Async steps run on the worker's loop; plain ``def`` steps in a thread pool
(so a blocking step never stalls other runs). The step's code sees its
``StepContext`` (run, step, attempt, deployment, and the World its child
runs and stream chunks go to); its return value or exception becomes a
``StepOutcome``: completed, failed, or retrying at a time the retry policy
chose.

The runner knows which attempts have begun: a ``def`` step's attempt begins
when a thread takes it, not when it is queued for one. Once a stopping
worker calls ``stop_starting``, no attempt begins any more, and those still
waiting for a thread end as never begun, so the worker can hand them back.
"""

from __future__ import annotations

import asyncio
import contextvars
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

from tether import config, registry, serde
from tether.clock import Clock
from tether.context import StepContext, current_step
from tether.errors import WorkflowNotFoundError
from tether.runtime.retry import RetryPolicy, dump_error
from tether.worlds.records import StepOutcome


@dataclass(frozen=True, slots=True)
class StepJob:
    """One attempt of a step this worker holds the lease of."""

    run_id: str
    step_id: str
    step_name: str
    input: str
    attempt: int

    def describe(self) -> str:
        """The step as a log line names it: name, id, run and attempt."""
        where = f"step {self.step_id} of run {self.run_id}, attempt {self.attempt}"
        return f"{self.step_name} ({where})"


class StepRunner:
    """Runs step attempts for one worker; ``attempt`` never raises for the step's own errors."""

    def __init__(
        self,
        *,
        worker_id: str,
        deployment_id: str,
        world_url: str,
        clock: Clock,
        policy: RetryPolicy,
        threads: int,
    ) -> None:
        self.worker_id = worker_id
        self.deployment_id = deployment_id
        self.world_url = world_url
        self.clock = clock
        self.policy = policy
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="tether-step")
        #: The attempts under way: begun, or queued for a thread.
        self._attempts: set[_Attempt] = set()
        self._starting = True

    async def attempt(self, job: StepJob) -> StepOutcome | None:
        """Run the attempt and return how it ended; ``None`` if it never began.

        An attempt does not begin once ``stop_starting`` was called, and one
        queued for a thread then never gets one.
        """
        if not self._starting:
            return None
        definition = registry.STEPS.get(job.step_name)
        if definition is None:
            error = WorkflowNotFoundError(
                f"step {job.step_name!r} is not defined in deployment {self.deployment_id!r}"
            )
            return self.outcome(job, "failed", serde.dumps(error))
        context = StepContext(
            job.run_id,
            job.step_id,
            job.step_name,
            job.attempt,
            self.deployment_id,
            self.world_url,
        )
        token = current_step.set(context)
        under_way = _Attempt(job, definition.is_async)
        self._attempts.add(under_way)
        try:
            with config.step_world(self.world_url):
                result = await self._call(definition, job.input, under_way)
            payload = serde.dumps(result, where=f"return value of {job.step_name}")
            return self.outcome(job, "completed", payload)
        except _NotBegun:
            return None
        except Exception as exc:
            decision = self.policy.decide(
                exc, job.attempt, definition.max_retries, self.clock.time()
            )
            if decision.retries:
                return self.outcome(job, "retrying", dump_error(exc), decision.retry_at)
            return self.outcome(job, "failed", dump_error(exc))
        finally:
            self._attempts.discard(under_way)
            current_step.reset(token)

    def stop_starting(self) -> list[StepJob]:
        """Begin no attempt from now on; returns the attempts that have begun and not ended.

        Attempts queued for a thread are taken back: their ``attempt`` returns ``None``.
        """
        self._starting = False
        for under_way in list(self._attempts):
            if under_way.thread is not None:
                under_way.thread.cancel()  # refused by a future a thread already runs
        return self.running()

    def running(self) -> list[StepJob]:
        """The attempts that have begun and not ended (safe to call from a signal handler)."""
        return [under_way.job for under_way in list(self._attempts) if under_way.began]

    def outcome(
        self,
        job: StepJob,
        status: Literal["completed", "failed", "retrying"],
        payload: str,
        retry_at: float | None = None,
    ) -> StepOutcome:
        """The outcome record of ``job`` ending with ``status``."""
        return StepOutcome(
            job.run_id, job.step_id, self.worker_id, status, payload, job.attempt, retry_at
        )

    def close(self) -> None:
        """Stop the thread pool; attempts still running in it are abandoned."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def _call(
        self, definition: registry.Step[..., Any], payload: str, under_way: _Attempt
    ) -> Any:
        args, kwargs = serde.loads(payload)
        if definition.is_async:
            return await definition.fn(*args, **kwargs)
        # The copied context carries current_step and the step's World into the thread.
        context = contextvars.copy_context()
        thread = self._pool.submit(lambda: context.run(definition.fn, *args, **kwargs))
        under_way.thread = thread
        try:
            return await asyncio.wrap_future(thread)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if thread.cancelled() and task is not None and not task.cancelling():
                raise _NotBegun from None  # stop_starting took it back, not a task cancel
            raise


@dataclass(eq=False, slots=True)
class _Attempt:
    """An attempt under way; a ``def`` step's has begun once a thread runs its future."""

    job: StepJob
    is_async: bool
    thread: Future[Any] | None = None

    @property
    def began(self) -> bool:
        """Whether the step's code was called (an async step's as soon as it is under way)."""
        thread = self.thread
        if self.is_async or thread is None:
            return self.is_async
        return thread.running() or (thread.done() and not thread.cancelled())


class _NotBegun(Exception):
    """A ``def`` step's attempt was taken back before any thread ran it."""
