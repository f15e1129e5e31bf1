"""``WorkflowLoop``: plain asyncio on a loop with no clock, no threads and no timers.

The loop runs ready callbacks in the order they were scheduled and nothing
else; what would make a run depend on real time or on threads is refused,
directly and from workflow code (where the refusal fails the run, naming the
durable way to do it).
"""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

import pytest

import tether
from tether import serde, workflow
from tether.registry import Workflow
from tether.runtime.instance import RunInstance
from tether.runtime.loop import WorkflowLoop
from tether.worlds.records import EventRecord, RunRecord

T0 = 1_700_000_000.0


def new_loop() -> WorkflowLoop:
    return WorkflowLoop()  # type: ignore[abstract]


def test_callbacks_run_in_the_order_they_were_scheduled() -> None:
    loop = new_loop()
    seen: list[str] = []
    for name in "abc":
        loop.call_soon(seen.append, name)
    cancelled = loop.call_soon(seen.append, "never")
    cancelled.cancel()
    loop.call_soon(lambda: loop.call_soon(seen.append, "scheduled by a callback"))
    assert seen == []  # nothing runs before run_ready
    loop.run_ready()
    assert seen == ["a", "b", "c", "scheduled by a callback"]
    loop.close()


def test_tasks_and_gather_finish_in_a_fixed_order_that_is_the_same_every_time() -> None:
    def once() -> list[str]:
        loop = new_loop()
        order: list[str] = []

        async def worker(name: str, hops: int) -> str:
            for _ in range(hops):
                await asyncio.sleep(0)  # a bare yield: no timer
            order.append(name)
            return name

        async def main() -> list[str]:
            return list(await asyncio.gather(worker("slow", 3), worker("fast", 1)))

        task = loop.create_task(main(), name="main")
        loop.run_ready()
        assert task.done() and task.get_name() == "main"
        assert task.result() == ["slow", "fast"]
        loop.close()
        return order

    assert once() == ["fast", "slow"]
    assert {tuple(once()) for _ in range(20)} == {("fast", "slow")}


def test_the_loop_is_the_running_loop_only_while_it_runs_and_time_is_its_clock() -> None:
    loop = new_loop()
    loop.clock = T0 + 5
    seen: dict[str, Any] = {}

    def inside() -> None:
        seen["running"] = asyncio.get_running_loop()
        seen["is_running"] = loop.is_running()
        seen["time"] = loop.time()

    loop.call_soon(inside)
    assert not loop.is_running()
    loop.run_ready()
    assert seen == {"running": loop, "is_running": True, "time": T0 + 5}
    assert not loop.is_running() and not loop.get_debug()
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()  # restored: no loop outside


def test_callbacks_run_in_the_context_they_were_given() -> None:
    loop = new_loop()
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="outside")
    context = contextvars.copy_context()
    context.run(var.set, "inside")
    seen: list[str] = []
    loop.call_soon(lambda: seen.append(var.get()), context=context)
    loop.call_soon(lambda: seen.append(var.get()))
    loop.run_ready()
    assert seen == ["inside", "outside"]


def test_unhandled_errors_are_collected_not_printed() -> None:
    loop = new_loop()
    loop.call_exception_handler({"message": "one"})
    loop.default_exception_handler({"message": "two"})
    assert [e["message"] for e in loop.errors] == ["one", "two"]


def test_close_drops_what_was_scheduled() -> None:
    loop = new_loop()
    seen: list[int] = []
    loop.call_soon(seen.append, 1)
    loop.close()
    assert loop.is_closed()
    loop.run_ready()
    assert seen == []


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda loop: loop.call_later(1, print), "asyncio timers are not durable"),
        (lambda loop: loop.call_at(T0, print), "asyncio timers are not durable"),
        (lambda loop: loop.call_soon_threadsafe(print), "no threads"),
        (lambda loop: loop.run_in_executor(None, print), "move it into a @step"),
    ],
    ids=["call_later", "call_at", "call_soon_threadsafe", "run_in_executor"],
)
def test_timers_threads_and_executors_are_refused(call: Any, message: str) -> None:
    loop = new_loop()
    with pytest.raises(RuntimeError, match=message):
        call(loop)
    loop.close()


# -- from workflow code: the run fails, naming the durable way ------------------------------


def _blocking_io() -> str:
    return "read"


@workflow
async def asyncio_sleep() -> None:
    await asyncio.sleep(1)


@workflow
async def asyncio_wait_for() -> None:
    await asyncio.wait_for(tether.sleep("1h"), timeout=5)


@workflow
async def to_thread() -> str:
    return await asyncio.to_thread(_blocking_io)


@workflow
async def threadsafe() -> None:
    asyncio.get_running_loop().call_soon_threadsafe(print)


@pytest.mark.parametrize(
    ("flow", "message"),
    [
        (
            asyncio_sleep,
            "asyncio timers are not durable inside a workflow: use `await tether.sleep",
        ),
        (asyncio_wait_for, "asyncio timers are not durable inside a workflow"),
        (to_thread, "workflow code cannot run blocking work: move it into a @step"),
        (threadsafe, "workflow code runs on its own deterministic loop; no threads"),
    ],
    ids=["asyncio.sleep", "asyncio.wait_for", "asyncio.to_thread", "call_soon_threadsafe"],
)
def test_blocking_or_timed_calls_in_workflow_code_fail_the_run(
    flow: Workflow[..., Any], message: str
) -> None:
    run = RunRecord(
        "run_loop", flow.name, "d1", "pending", serde.dumps([[], {}]), None, None, None, None,
        T0, None, None, 1,
    )  # fmt: skip
    instance = RunInstance(run, flow)
    instance.replay([EventRecord("run_loop", 1, "run_created", created_at=T0)])
    events = instance.resume([EventRecord("run_loop", 0, "run_started", created_at=T0 + 1)])
    try:
        assert events[-1].type == "run_failed", events
        error = serde.loads(events[-1].payload or "null")
        assert error["type"] == "tether.errors.ContextError"
        assert message in error["message"]
        assert instance.ended
    finally:
        instance.close()
