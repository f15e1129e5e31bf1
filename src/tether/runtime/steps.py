"""Running one attempt of a step: its context, its thread, and what its end becomes.

Async steps run on the worker's loop; plain ``def`` steps in a thread pool
(so a blocking step never stalls other runs). The step's code sees its
``StepContext`` (run, step, attempt, deployment, and the World its child
runs and stream chunks go to); its return value or exception becomes a
``StepOutcome``: completed, failed, or retrying at a time the retry policy
chose.
"""

from __future__ import annotations

import asyncio
import contextvars
from concurrent.futures import ThreadPoolExecutor
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

    async def attempt(self, job: StepJob) -> StepOutcome:
        """Run the attempt and return how it ended."""
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
        try:
            with config.step_world(self.world_url):
                result = await self._call(definition, job.input)
            payload = serde.dumps(result, where=f"return value of {job.step_name}")
            return self.outcome(job, "completed", payload)
        except Exception as exc:
            decision = self.policy.decide(
                exc, job.attempt, definition.max_retries, self.clock.time()
            )
            if decision.retries:
                return self.outcome(job, "retrying", dump_error(exc), decision.retry_at)
            return self.outcome(job, "failed", dump_error(exc))
        finally:
            current_step.reset(token)

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

    async def _call(self, definition: registry.Step[..., Any], payload: str) -> Any:
        args, kwargs = serde.loads(payload)
        if definition.is_async:
            return await definition.fn(*args, **kwargs)
        # The copied context carries current_step and the step's World into the thread.
        context = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(
            self._pool, lambda: context.run(definition.fn, *args, **kwargs)
        )
