"""What workflow code uses besides steps: durable sleep and deterministic values.

Inside a workflow these are answered from the run's event log, so a replay
sees the same values; outside one they fall back to the real thing.
"""

from __future__ import annotations

import asyncio
import random as _random
import time
import uuid as _uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tether.context import current_instance, current_step
from tether.durations import Duration, seconds_until
from tether.errors import ContextError


@dataclass(frozen=True, slots=True)
class StepInfo:
    """The step attempt running now: what an idempotency key is built from."""

    run_id: str
    #: The step's id in its run: the same on every attempt and replay.
    step_id: str
    step_name: str
    #: 1 for the first attempt, 2 for the first retry, ...
    attempt: int
    deployment_id: str

    @property
    def idempotency_key(self) -> str:
        """``run_id:step_id``: one value for every attempt of this step, unique otherwise."""
        return f"{self.run_id}:{self.step_id}"


def step_info() -> StepInfo:
    """Which run, step and attempt the calling code runs in; only inside a ``@step`` on a worker.

    Pass ``step_info().idempotency_key`` to a payment or email API so that a
    retried attempt is not charged or sent twice.
    """
    step = current_step.get()
    if step is None:
        raise ContextError(
            "step_info() works only inside a @step that a worker runs: a step called as a"
            " plain function, or a workflow's own code, has no step attempt"
        )
    return StepInfo(step.run_id, step.step_id, step.step_name, step.attempt, step.deployment_id)


def sleep(duration: Duration) -> asyncio.Future[Any]:
    """Sleep durably: ``"10s"``, ``"2d"``, a ``timedelta``, or until an aware ``datetime``.

    The run is suspended and survives restarts; a worker wakes it on time.
    Outside a workflow it is a plain ``asyncio.sleep``. A malformed duration
    raises ``ValueError`` naming it.
    """
    instance = current_instance.get()
    if instance is not None:
        return instance.schedule_sleep(duration)
    return asyncio.ensure_future(asyncio.sleep(seconds_until(duration, time.time())))


def now() -> datetime:
    """The current time as an aware UTC datetime; deterministic inside a workflow."""
    instance = current_instance.get()
    return instance.now() if instance is not None else datetime.now(UTC)


def random() -> float:
    """A random float in [0, 1); deterministic (seeded by the run) inside a workflow."""
    instance = current_instance.get()
    return instance.random() if instance is not None else _random.random()


def uuid4() -> _uuid.UUID:
    """A random UUID; deterministic inside a workflow."""
    instance = current_instance.get()
    return instance.uuid4() if instance is not None else _uuid.uuid4()
