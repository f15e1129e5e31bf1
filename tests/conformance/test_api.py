"""The public API end to end, with an in-process worker, on every World."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import pytest

import tether
from tether import FatalError, RetryableError, step, workflow
from tether.worlds.records import NewRun, RunFilter

ATTEMPTS: dict[str, int] = {}
_lock = threading.Lock()


@step
async def add_one(x: int) -> int:
    return x + 1


@step
def double(x: int) -> int:
    return x * 2


@workflow
async def three_steps(x: int) -> int:
    return int(await add_one(await double(await add_one(x))))


@step(max_retries=3)
def flaky(key: str, failures: int) -> int:
    with _lock:
        ATTEMPTS[key] = ATTEMPTS.get(key, 0) + 1
        attempt = ATTEMPTS[key]
    if attempt <= failures:
        raise RetryableError(f"attempt {attempt}", retry_after="10ms")
    return attempt


@workflow
async def retrying(key: str, failures: int) -> int:
    return int(await flaky(key, failures))


@step
def refuse() -> None:
    raise FatalError("no")


@workflow
async def failing() -> None:
    await refuse()


@workflow
async def sleeper(seconds: float) -> str:
    await tether.sleep(seconds)
    return "awake"


def test_start_and_result(worker: tether.Worker) -> None:
    runs = [tether.start(three_steps, [i]) for i in range(20)]
    assert [r.result(timeout=20) for r in runs] == [(i + 1) * 2 + 1 for i in range(20)]
    run = runs[0]
    assert run.status() == "completed"
    events = run.events()
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert [s.status for s in run.steps()] == ["completed"] * 3


def test_result_async(worker: tether.Worker) -> None:
    async def main() -> int:
        run = await tether.start_async(three_steps, [5])
        return int(await run.result_async(timeout=20))

    assert asyncio.run(main()) == 13


def test_retries_then_success(worker: tether.Worker, world_url: str) -> None:
    key = f"retry-{world_url}"
    run = tether.start(retrying, [key, 2])
    assert run.result(timeout=20) == 3
    (only,) = run.steps()
    assert (only.status, only.attempt) == ("completed", 3)
    assert [e.type for e in run.events()].count("step_retrying") == 2


def test_failure_raises_run_failed(worker: tether.Worker) -> None:
    run = tether.start(failing, [])
    with pytest.raises(tether.RunFailedError, match="no"):
        run.result(timeout=20)
    assert run.status() == "failed"


def wait_until(predicate: Callable[[], object], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    with tether.config.resolve_world().watch() as changed:
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            changed(0.05)


def test_cancel_a_sleeping_run_and_rerun_it(worker: tether.Worker) -> None:
    world = tether.config.resolve_world()
    run = tether.start(sleeper, [60.0])
    wait_until(lambda: world.list_waits(run.run_id), "the run to sleep")
    assert tether.cancel_run(run.run_id) is True
    with pytest.raises(tether.RunCancelledError):
        run.result(timeout=10)
    assert tether.cancel_run(run.run_id) is False
    assert run.status() == "cancelled"
    assert [w.status for w in world.list_waits(run.run_id)] == ["cancelled"]
    again = tether.rerun(run.run_id)
    assert again.rerun_of == run.run_id and again.run_id != run.run_id
    assert again.deployment_id == run.deployment_id
    wait_until(lambda: world.wake_sleeps(again.run_id) == 1, "the rerun to sleep")
    assert again.result(timeout=20) == "awake"


def test_short_sleep_ends_on_time(worker: tether.Worker) -> None:
    run = tether.start(sleeper, [0.3])
    assert run.result(timeout=10) == "awake"
    (wait,) = tether.config.resolve_world().list_waits(run.run_id)
    assert wait.status == "completed"
    assert wait.completed_at is not None and wait.completed_at >= wait.resume_at


@pytest.mark.parametrize("not_a_workflow", [print, len, 42, None])
def test_start_of_something_that_is_not_a_workflow_says_what_it_takes(
    world_url: str, not_a_workflow: object
) -> None:
    with pytest.raises(TypeError, match=r"takes a @workflow function or a workflow name") as info:
        tether.start(not_a_workflow, [])  # type: ignore[arg-type]
    assert "@tether.workflow" in str(info.value)
    assert tether.config.resolve_world().list_runs(RunFilter()) == []  # nothing was written


@workflow
async def order(order_id: str, cents: int, note: str = "") -> str:
    return f"{order_id}:{cents}{note}"


def _runs_of(name: str) -> list[str]:
    world = tether.config.resolve_world()
    return [r.run_id for r in world.list_runs(RunFilter(workflow_name=name))]


@pytest.mark.parametrize("args", [["only-one"], ["o-1", 100, "x", "too many"], []])
def test_arguments_that_do_not_fit_are_refused_at_start(
    worker: tether.Worker, args: list[object]
) -> None:
    with pytest.raises(TypeError) as info:
        tether.start(order, args)
    message = str(info.value)
    assert order.name in message and repr(args) in message
    assert "(order_id, cents, note=...)" in message
    assert _runs_of(order.name) == []  # nothing was written
    assert tether.start(order, ["o-1", 100]).result(timeout=10) == "o-1:100"


def test_a_client_on_latest_checks_the_recorded_parameters(
    worker: tether.Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A pure client: it has not imported the workflow, so only the manifest knows it.
    monkeypatch.setattr(tether.manifest, "defines_workflows", lambda: False)
    with pytest.raises(TypeError, match=r"on deployment 'tests'.*\(order_id, cents, note=\.\.\.\)"):
        tether.start(order.name, ["only-one"], deployment_id="latest")
    assert _runs_of(order.name) == []
    assert tether.start(order.name, ["o-2", 5, "!"]).result(timeout=10) == "o-2:5!"


def test_a_run_whose_arguments_do_not_fit_fails_once_instead_of_looping(
    worker: tether.Worker,
) -> None:
    # Written past start()'s check (another tool, an older client): the worker fails it.
    world = tether.config.resolve_world()
    bad = tether.serde.dumps([["only-one"], {}])
    world.create_run(NewRun("run_bad_args", order.name, "tests", bad))
    run = tether.get_run("run_bad_args")
    with pytest.raises(tether.RunFailedError) as info:
        run.result(timeout=10)
    assert info.value.error["type"].endswith("TypeError")
    assert "cents" in info.value.error["message"]
    assert [e.type for e in run.events()].count("run_failed") == 1
