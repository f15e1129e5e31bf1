"""The engine and the Worlds read one clock: a test steps it instead of waiting.

A World opened with a ``ManualClock`` and a worker serving it (which reads the
World's clock) take every timestamp, due time, backoff and lease from it, so a
two-day sleep or a minute of retry backoff pass when the test says so, and the
log records the virtual times exactly.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest

import tether
from tether import RetryableError, step, workflow
from tether.clock import ManualClock
from tether.worlds import open_world
from tether.worlds.base import World
from tether.worlds.records import EventRecord

pytestmark = pytest.mark.both_worlds

START = 1_800_000_000.0
TWO_DAYS = 2 * 86_400.0
_failures: dict[str, int] = {}


@step
def flaky(key: str, fail_times: int) -> str:
    seen = _failures.get(key, 0)
    _failures[key] = seen + 1
    if seen < fail_times:
        raise ValueError(f"attempt {seen + 1} of {key} fails")
    return f"{key} ok after {seen + 1} attempts"


@step
def rate_limited(key: str) -> str:
    seen = _failures.get(key, 0)
    _failures[key] = seen + 1
    if seen == 0:
        raise RetryableError("slow down", retry_after="60s")
    return "served"


@workflow
async def retrying(key: str, fail_times: int) -> str:
    return await flaky(key, fail_times)


@workflow
async def polite(key: str) -> str:
    return await rate_limited(key)


@workflow
async def two_day_order(order_id: str) -> dict[str, str]:
    placed = tether.now().isoformat()
    await tether.sleep("2d")
    return {"order": order_id, "placed": placed, "charged": tether.now().isoformat()}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start=START)


@pytest.fixture
def world(world_url: str, clock: ManualClock) -> Iterator[World]:
    opened = open_world(world_url, clock=clock)
    with tether.Worker(world=opened, lease_seconds=30.0):
        yield opened
    opened.close()


def wait_for_event(world: World, run: tether.Run, kind: str, count: int = 1) -> EventRecord:
    """The ``count``-th event of ``kind`` in the run's log, once it is there (real time <= 10 s)."""
    found: list[EventRecord] = []

    def seen() -> bool:
        found[:] = [e for e in world.list_events(run.run_id) if e.type == kind]
        return len(found) >= count

    wait_until(world, seen)
    return found[count - 1]


def wait_until(world: World, condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    with world.watch() as changed:
        while not condition():
            left = deadline - time.monotonic()
            assert left > 0, "the run did not get there within 10 s of real time"
            changed(min(left, 0.2))


def test_a_two_day_sleep_passes_when_the_clock_is_advanced(
    world: World, clock: ManualClock
) -> None:
    run = tether.start(two_day_order, ["o-1"], world=world)
    wait = wait_for_event(world, run, "wait_created")
    assert wait.attrs == {"resume_at": START + TWO_DAYS}
    assert run.status() == "running"

    clock.advance(TWO_DAYS)
    result = run.result(timeout=10)

    assert result == {
        "order": "o-1",
        "placed": datetime.fromtimestamp(START, tz=UTC).isoformat(),
        "charged": datetime.fromtimestamp(START + TWO_DAYS, tz=UTC).isoformat(),
    }
    record = world.get_run(run.run_id)
    assert record is not None and record.completed_at == START + TWO_DAYS


def test_retry_backoff_waits_on_the_clock(
    world: World, clock: ManualClock, world_kind: str
) -> None:
    key = f"backoff-{world_kind}"
    run = tether.start(retrying, [key, 2], world=world)
    for attempt, delay in ((1, 1.0), (2, 2.0)):
        retrying_event = wait_for_event(world, run, "step_retrying", attempt)
        attrs = retrying_event.attrs or {}
        assert attrs["attempt"] == attempt
        assert attrs["retry_at"] - retrying_event.created_at == delay
        assert run.status() == "running"
        clock.advance(delay)
    assert run.result(timeout=10) == f"{key} ok after 3 attempts"
    (only,) = world.list_steps(run.run_id)
    assert only.attempt == 3


def test_retry_after_is_a_minute_of_clock_time(
    world: World, clock: ManualClock, world_kind: str
) -> None:
    key = f"retry-after-{world_kind}"
    run = tether.start(polite, [key], world=world)
    event = wait_for_event(world, run, "step_retrying")
    assert (event.attrs or {})["retry_at"] == event.created_at + 60.0
    clock.advance(60.0)
    assert run.result(timeout=10) == "served"
    assert _failures[key] == 2
