"""What workflow code uses besides steps: durable sleep and deterministic values.

Inside a workflow these are answered from the run's event log, so a replay
sees the same values; outside one they fall back to the real thing.
"""

from __future__ import annotations

import asyncio
import random as _random
import time
import uuid as _uuid
from datetime import UTC, datetime
from typing import Any

from tether.context import current_instance
from tether.durations import Duration, seconds_until


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
