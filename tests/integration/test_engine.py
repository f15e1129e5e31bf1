"""The engine through the public API, with an in-process worker on a real SQLite file."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import datetime, timedelta
from typing import Any

import pytest

import tether
from tether import FatalError, RetryableError, step, workflow

CALLS: dict[str, int] = {}
INTERVALS: list[tuple[float, float]] = []
_lock = threading.Lock()


def _count(key: str) -> int:
    with _lock:
        CALLS[key] = CALLS.get(key, 0) + 1
        return CALLS[key]


@step
async def add_one(x: int) -> int:
    return x + 1


@step
def double(x: int) -> int:
    return x * 2


@workflow
async def three_steps(x: int) -> dict[str, int]:
    a = await add_one(x)
    b = await double(a)
    c = await add_one(b)
    return {"a": a, "b": b, "c": c}


def test_three_step_workflow_returns_its_result(worker: tether.Worker) -> None:
    run = tether.start(three_steps, [1])
    assert run.result(timeout=10) == {"a": 2, "b": 4, "c": 5}
    assert run.status() == "completed"
    assert run.workflow_name == "workflow//tests.integration.test_engine//three_steps"
    steps = run.steps()
    assert [s.step_name.rsplit("//", 1)[-1] for s in steps] == ["add_one", "double", "add_one"]
    assert all(s.status == "completed" and s.attempt == 1 for s in steps)
    types = [e.type for e in run.events()]
    assert types[:2] == ["run_created", "run_started"]
    assert types[-1] == "run_completed"
    assert [e.seq for e in run.events()] == list(range(1, len(types) + 1))


def test_start_by_name_and_get_run(worker: tether.Worker) -> None:
    run = tether.start(three_steps.name, [10])
    same = tether.get_run(run.run_id)
    assert same.workflow_name == three_steps.name
    assert same.result(timeout=10)["c"] == 23


@step
async def overlapping(i: int) -> int:
    start = time.monotonic()
    await asyncio.sleep(0.3)
    with _lock:
        INTERVALS.append((start, time.monotonic()))
    return i


@workflow
async def fan_out() -> list[int]:
    return list(await asyncio.gather(*(overlapping(i) for i in range(5))))


def test_gather_runs_steps_at_the_same_time(worker: tether.Worker) -> None:
    INTERVALS.clear()
    assert tether.start(fan_out).result(timeout=10) == [0, 1, 2, 3, 4]
    assert len(INTERVALS) == 5
    latest_start = max(s for s, _ in INTERVALS)
    earliest_end = min(e for _, e in INTERVALS)
    assert latest_start < earliest_end, "the five steps did not all run at once"


@step(max_retries=3)
def flaky(key: str, failures: int) -> str:
    attempt = _count(key)
    if attempt <= failures:
        raise RetryableError(f"attempt {attempt} failed", retry_after="10ms")
    return f"ok after {attempt}"


@workflow
async def retrying(key: str, failures: int) -> str:
    return str(await flaky(key, failures))


def test_step_retries_then_succeeds(worker: tether.Worker) -> None:
    run = tether.start(retrying, ["retry-ok", 2])
    assert run.result(timeout=10) == "ok after 3"
    (only,) = run.steps()
    assert only.attempt == 3 and only.status == "completed"
    types = [e.type for e in run.events()]
    assert types.count("step_retrying") == 2
    assert all(delay < 0.5 for delay in retry_delays(run)), "10 ms, not the default backoff"
    assert_attempts_waited(run)


def test_step_fails_after_max_retries(worker: tether.Worker) -> None:
    run = tether.start(retrying, ["retry-never", 99])
    with pytest.raises(tether.RunFailedError) as info:
        run.result(timeout=10)
    assert "attempt 4 failed" in str(info.value)
    assert CALLS["retry-never"] == 4  # default: 3 retries = 4 attempts


@step
def plain_failure(key: str) -> str:
    _count(key)
    raise ValueError("boom")


@workflow
async def backoff(key: str) -> str:
    return str(await plain_failure(key))


def retry_delays(run: tether.Run) -> list[float]:
    """Per ``step_retrying`` event: how long after it the step was due again."""
    return [
        (e.attrs or {})["retry_at"] - e.created_at
        for e in run.events()
        if e.type == "step_retrying"
    ]


def within(delay: float, policy: float) -> bool:
    """Whether a recorded delay is the policy's: the event is written a moment after the
    worker computed ``retry_at`` (never before), so the delay is at most the policy's."""
    return policy - 0.4 < delay <= policy + 0.01


def wait_for_events(run: tether.Run, kind: str, count: int, timeout: float = 10) -> None:
    """Wait (on the World's change notifications) until ``run`` logged ``count`` ``kind`` events."""
    deadline = time.monotonic() + timeout
    with tether.config.resolve_world().watch() as changed:
        while sum(e.type == kind for e in run.events()) < count:
            assert time.monotonic() < deadline, f"timed out waiting for {count} {kind} events"
            changed(0.1)


def assert_attempts_waited(run: tether.Run) -> None:
    """Each attempt after a retry started no earlier than the retry was due."""
    events = run.events()
    due = [(e.attrs or {})["retry_at"] for e in events if e.type == "step_retrying"]
    starts = [e.created_at for e in events if e.type == "step_started"][1:]
    assert starts, "no attempt after a retry"
    for retry_at, started in zip(due, starts, strict=False):
        assert started >= retry_at - 0.01  # the worker's clock and the World's: the same host


def test_plain_exception_retries_with_backoff(worker: tether.Worker) -> None:
    run = tether.start(backoff, ["backoff"])
    wait_for_events(run, "step_retrying", 2)  # the first retry comes after 1 s
    (only,) = run.steps()
    assert CALLS["backoff"] == 2
    assert only.retry_at is not None and only.status == "retrying"
    # The default policy: 1 s after the first failure, then 2 s (BACKOFF_BASE * 2**n).
    first, second = retry_delays(run)
    assert within(first, 1.0) and within(second, 2.0), (first, second)
    assert only.retry_at == (run.events()[-1].attrs or {})["retry_at"]
    assert_attempts_waited(run)
    run.cancel()


@step
def busy_once(key: str) -> str:
    if _count(key) == 1:
        raise RetryableError("busy", retry_after="1500ms")
    return "done"


@workflow
async def retries_after(key: str) -> str:
    return str(await busy_once(key))


def test_retryable_error_retries_after_the_delay_it_names(worker: tether.Worker) -> None:
    run = tether.start(retries_after, ["retry-after"])
    assert run.result(timeout=10) == "done"
    assert CALLS["retry-after"] == 2
    # 1.5 s, as the error said, not the default backoff's 1 s.
    (delay,) = retry_delays(run)
    assert within(delay, 1.5), delay
    assert_attempts_waited(run)


@step
def refuse(key: str) -> str:
    _count(key)
    raise FatalError(f"card declined for {key}")


@workflow
async def catches_fatal(key: str) -> str:
    try:
        await refuse(key)
    except FatalError as exc:
        return f"caught: {exc}"
    return "not reached"


@workflow
async def fails_fatal(key: str) -> str:
    return str(await refuse(key))


def test_fatal_error_is_not_retried_and_can_be_caught(worker: tether.Worker) -> None:
    run = tether.start(catches_fatal, ["fatal-caught"])
    assert run.result(timeout=10) == "caught: card declined for fatal-caught"
    assert CALLS["fatal-caught"] == 1


def test_uncaught_fatal_error_fails_the_run_with_message_and_traceback(
    worker: tether.Worker,
) -> None:
    run = tether.start(fails_fatal, ["fatal-uncaught"])
    with pytest.raises(tether.RunFailedError) as info:
        run.result(timeout=10)
    assert info.value.error["type"] == "tether.errors.FatalError"
    assert info.value.error["message"] == "card declined for fatal-uncaught"
    assert "refuse" in info.value.error["traceback"]
    assert run.status() == "failed"
    assert CALLS["fatal-uncaught"] == 1


@workflow
async def naps(seconds: float) -> list[float]:
    before = tether.now()
    await tether.sleep(timedelta(seconds=seconds))
    after = tether.now()
    await tether.sleep(f"{int(seconds * 1000)}ms")
    await tether.sleep(tether.now() + timedelta(seconds=seconds))
    return [before.timestamp(), after.timestamp()]


def test_sleep_takes_durations_and_datetimes(worker: tether.Worker) -> None:
    run = tether.start(naps, [0.2])
    before, after = run.result(timeout=10)
    assert after - before >= 0.2
    waits = tether.get_run(run.run_id)._world.list_waits(run.run_id)
    assert [w.status for w in waits] == ["completed"] * 3
    for wait in waits:
        assert wait.completed_at is not None and wait.completed_at >= wait.resume_at


@workflow
async def bad_sleep(value: str) -> None:
    await tether.sleep(value)


def test_malformed_duration_fails_the_run_naming_the_value(worker: tether.Worker) -> None:
    run = tether.start(bad_sleep, ["ten seconds"])
    with pytest.raises(tether.RunFailedError, match="ten seconds"):
        run.result(timeout=10)


#: Set by a test once it has its result: a step still holding then ends, and the worker
#: fixture need not drain it for seconds.
RELEASE = threading.Event()


@step
async def hold(seconds: float) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not RELEASE.is_set():
        await asyncio.sleep(0.01)
    return "held"


@workflow
async def race(step_seconds: float, sleep_seconds: float) -> str:
    work = asyncio.ensure_future(hold(step_seconds))
    timer = tether.sleep(sleep_seconds)
    done, _ = await asyncio.wait({work, timer}, return_when=asyncio.FIRST_COMPLETED)
    return "step" if work in done else "timeout"


def test_race_between_step_and_sleep_takes_either_branch(worker: tether.Worker) -> None:
    RELEASE.clear()
    assert tether.start(race, [0.05, 5]).result(timeout=10) == "step"
    assert tether.start(race, [5, 0.05]).result(timeout=10) == "timeout"
    RELEASE.set()


@step
def echo(values: list[Any]) -> list[Any]:
    return values


@workflow
async def deterministic_values() -> list[Any]:
    values = [tether.random(), str(tether.uuid4()), tether.now().isoformat()]
    logged = await echo(values)  # the values the first activation drew, as the log holds them
    return [values, logged]


def test_random_uuid_and_now_are_recorded_by_the_run(world_url: str) -> None:
    with tether.Worker(cache_size=0):  # every activation replays the run from its log
        run = tether.start(deterministic_values)
        values, logged = run.result(timeout=10)
        other, _ = tether.start(deterministic_values).result(timeout=10)
    assert values == logged, "the replay drew other values than the first activation"
    rnd, uid, when = values
    assert 0 <= rnd < 1
    assert len(uid) == 36 and uid[14] == "4"
    started = next(e for e in run.events() if e.type == "run_started")
    assert datetime.fromisoformat(when).timestamp() == pytest.approx(started.created_at, abs=1e-5)
    assert other[:2] != values[:2], "each run draws its own values"


class Opaque:
    pass


def test_unserializable_argument_raises_at_start(registered: str) -> None:
    with pytest.raises(tether.SerializationError, match="Opaque") as info:
        tether.start(three_steps, [Opaque()])
    assert isinstance(info.value, TypeError)
    assert "arguments of workflow//tests.integration.test_engine//three_steps" in str(info.value)


@workflow
async def passes_unserializable() -> int:
    return int(await add_one(Opaque()))  # type: ignore[arg-type]


def test_unserializable_step_argument_raises_inside_the_workflow(worker: tether.Worker) -> None:
    run = tether.start(passes_unserializable)
    with pytest.raises(tether.RunFailedError) as info:
        run.result(timeout=10)
    assert info.value.error["type"] == "tether.errors.SerializationError"
    assert "Opaque" in info.value.error["message"]


def test_cancel_stops_a_sleeping_run(worker: tether.Worker) -> None:
    run = tether.start(naps, [30])
    deadline = time.monotonic() + 5
    while run.status() != "running" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert tether.cancel_run(run.run_id) is True
    with pytest.raises(tether.RunCancelledError):
        run.result(timeout=5)
    assert tether.cancel_run(run.run_id) is False


def test_result_times_out_naming_the_run(registered: str) -> None:
    run = tether.start(three_steps, [1])  # no worker: it stays pending
    with pytest.raises(TimeoutError, match=run.run_id):
        run.result(timeout=0.2)


def test_steps_outside_a_workflow_are_plain_functions() -> None:
    assert double(21) == 42
    assert asyncio.run(add_one(1)) == 2


def test_unknown_run_id_is_a_clear_error(world_url: str) -> None:
    with pytest.raises(tether.RunNotFoundError, match="run_nope"):
        tether.get_run("run_nope")


@step
async def count_step(i: int) -> int:
    return i


@workflow
async def long_chain(n: int) -> int:
    total = 0
    for i in range(n):
        total += await count_step(i)
    return total


def test_long_sequential_workflow_keeps_a_dense_log(worker: tether.Worker) -> None:
    run = tether.start(long_chain, [200])
    assert run.result(timeout=30) == sum(range(200))
    events = run.events()
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert sum(e.type == "step_completed" for e in events) == 200


def test_runs_replay_from_the_log_when_nothing_is_cached(world_url: str) -> None:
    """With no cache every activation is a full replay; results must not change."""
    with tether.Worker(cache_size=0):
        assert tether.start(three_steps, [1]).result(timeout=10) == {"a": 2, "b": 4, "c": 5}
        assert tether.start(fan_out).result(timeout=10) == [0, 1, 2, 3, 4]
        RELEASE.clear()
        assert tether.start(race, [5, 0.05]).result(timeout=10) == "timeout"
        RELEASE.set()
        assert tether.start(retrying, ["replayed-retry", 1]).result(timeout=10) == "ok after 2"
        assert len(tether.start(naps, [0.05]).result(timeout=10)) == 2


def test_waking_a_sleep_ends_it_early(worker: tether.Worker) -> None:
    run = tether.start(naps, [3600])
    wait_for_event = time.monotonic() + 5
    while not any(e.type == "wait_created" for e in run.events()):
        assert time.monotonic() < wait_for_event
        time.sleep(0.01)
    world = tether.config.resolve_world()
    for _ in range(3):  # naps sleeps three times
        deadline = time.monotonic() + 5
        while not [w for w in world.list_waits(run.run_id) if w.status == "waiting"]:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert world.wake_sleeps(run.run_id) == 1
    assert len(run.result(timeout=10)) == 2
    assert world.wake_sleeps(run.run_id) == 0
