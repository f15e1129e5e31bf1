"""``check_run``, the core of moving a run onto new code: a log replayed, no step run.

Logs are made by driving a real run by hand (``Driven``, as in test_instance),
then checked against the code of a would-be new deployment.
"""

from __future__ import annotations

import asyncio

import tether
from tests.unit.test_instance import Driven, pick, record
from tether import step, workflow
from tether.runtime.check import check_run


@step
def label(order: str, copies: int) -> str:
    return f"{copies} labels for {order}"


@workflow
async def ship(order: str) -> list[str]:
    first = await pick(order)
    await tether.sleep("2d")
    return [first, await label(order, 1)]


@workflow
async def ship_two_labels(order: str) -> list[str]:
    """``ship`` after a change that prints two labels (other arguments, after the sleep)."""
    first = await pick(order)
    await tether.sleep("2d")
    return [first, await label(order, 2)]


@workflow
async def ship_labels_first(order: str) -> list[str]:
    """``ship`` after a change that labels before it picks."""
    labelled = await label(order, 1)
    await tether.sleep("2d")
    return [await pick(order), labelled]


@workflow
async def ship_for(order: str, carrier: str) -> list[str]:
    """``ship`` after a change that added a parameter without a default."""
    return [await pick(order), carrier]


@workflow
async def ship_quietly(order: str) -> list[str]:
    """``ship`` after a change that only edited what follows the steps."""
    first = await pick(order)
    await tether.sleep("2d")
    second = await label(order, 1)
    return [second, first]


def sleeping_ship() -> Driven:
    """A run of ``ship`` that picked, and sleeps: its log so far."""
    run = Driven(ship, ("o-1",))
    run.start()
    run.complete("0", "picked o-1")
    return run


def test_the_same_code_replays_keeping_every_step() -> None:
    run = sleeping_ship()
    result = check_run(record(ship, ("o-1",), run.run_id), run.log, ship)
    assert (result.verdict, result.fork_point) == ("replays", 2)  # the pick and the sleep


def test_code_that_changed_after_the_runs_position_replays() -> None:
    # The run sleeps after its first step: a changed second step is not in its log yet.
    run = sleeping_ship()
    result = check_run(record(ship, ("o-1",), run.run_id), run.log, ship_two_labels)
    assert (result.verdict, result.fork_point) == ("replays", 2)


def test_a_step_with_other_arguments_diverges_at_it() -> None:
    run = sleeping_ship()
    run.wake("1")  # the sleep ended: it asked for label(o-1, 1)
    result = check_run(record(ship, ("o-1",), run.run_id), run.log, ship_two_labels)
    assert (result.verdict, result.fork_point) == ("diverges", 2)  # keeps the pick and the sleep
    assert "request #3" in result.reason
    assert "label" in result.reason and "('o-1', 1)" in result.reason
    assert "('o-1', 2)" in result.reason


def test_reordered_steps_diverge_at_the_first_one() -> None:
    run = sleeping_ship()
    result = check_run(record(ship, ("o-1",), run.run_id), run.log, ship_labels_first)
    assert (result.verdict, result.fork_point) == ("diverges", 0)
    assert "request #1" in result.reason and "pick" in result.reason


def test_a_workflow_the_new_code_lacks_or_whose_arguments_do_not_fit_is_incompatible() -> None:
    run = sleeping_ship()
    missing = check_run(record(ship, ("o-1",), run.run_id), run.log, None)
    assert (missing.verdict, missing.fork_point) == ("incompatible", None)
    assert "does not define" in missing.reason
    unfit = check_run(record(ship, ("o-1",), run.run_id), run.log, ship_for)
    assert unfit.verdict == "incompatible" and "'carrier'" in unfit.reason


@workflow
async def ship_by_keyword(order: str) -> list[str]:
    """``ship`` after a change that passes the label's arguments by keyword (same values)."""
    first = await pick(order)
    await tether.sleep("2d")
    return [first, await label(order=order, copies=1)]


def test_the_same_values_passed_another_way_are_the_same_call() -> None:
    run = sleeping_ship()
    run.wake("1")
    result = check_run(record(ship, ("o-1",), run.run_id), run.log, ship_by_keyword)
    assert (result.verdict, result.fork_point) == ("replays", 3)


@workflow
async def both(order: str) -> list[str]:
    return list(await asyncio.gather(pick(order), label(order, 1)))


@workflow
async def one_then_the_other(order: str) -> list[str]:
    """``both`` after a change that awaits its steps in turn."""
    return [await pick(order), await label(order, 1)]


def test_parallel_steps_answered_out_of_order_diverge_where_the_code_first_disagrees() -> None:
    run = Driven(both, ("o-4",))
    run.start()
    run.complete("1", "1 labels for o-4")  # the second step answered first
    run.complete("0", "picked o-4")
    result = check_run(record(both, ("o-4",), run.run_id), run.log, one_then_the_other)
    # The sequential code asks only for the pick until it is answered; the log answers the
    # label first, which it never asked for: it keeps the pick, and no more.
    assert (result.verdict, result.fork_point) == ("diverges", 1)


@workflow
async def ship_and_fail(order: str) -> list[str]:
    """``ship`` after a change that raises once the pick is done."""
    await pick(order)
    raise RuntimeError(f"no carrier for {order}")


def test_new_code_that_raises_before_the_runs_position_diverges_there() -> None:
    run = Driven(ship, ("o-5",))
    run.start()
    run.complete("0", "picked o-5")
    result = check_run(record(ship, ("o-5",), run.run_id), run.log, ship_and_fail)
    assert (result.verdict, result.fork_point) == ("diverges", 1)
    assert "request #2" in result.reason


def test_a_run_that_has_not_started_replays_from_nothing() -> None:
    run = Driven(ship, ("o-3",))
    result = check_run(record(ship, ("o-3",), run.run_id), run.log, ship_labels_first)
    assert (result.verdict, result.fork_point) == ("replays", 0)


def test_a_change_only_after_the_logged_requests_replays_them_all() -> None:
    run = sleeping_ship()
    run.wake("1")
    run.complete("2", "1 labels for o-1")  # the run completed
    result = check_run(record(ship, ("o-1",), run.run_id), run.log, ship_quietly)
    assert (result.verdict, result.fork_point) == ("replays", 3)


@workflow
async def spins(order: str) -> list[str]:
    """``ship`` after a change that busy-waits after its first step: it never suspends."""
    first = await pick(order)
    while True:
        await asyncio.sleep(0)
    return [first]


@workflow
async def hogs(order: str) -> list[str]:
    """``ship`` after a change that spins without ever yielding, and swallows errors."""
    first = await pick(order)
    while True:
        try:
            first = first.strip()
        except Exception:  # what it catches cannot stop the watchdog
            first = ""
    return [first]


def test_code_that_never_yields_is_interrupted_by_the_watchdog() -> None:
    run = sleeping_ship()
    result = check_run(record(ship, ("o-1",), run.run_id), run.log, hogs, budget=0.2)
    assert (result.verdict, result.fork_point) == ("incompatible", None)
    assert "took over 0.2 s" in result.reason
    # The thread is free again, and no late interruption is left pending in it.
    again = check_run(record(ship, ("o-1",), run.run_id), run.log, ship)
    assert again.verdict == "replays"


def test_code_that_never_suspends_is_stopped_at_the_budget() -> None:
    run = sleeping_ship()
    result = check_run(record(ship, ("o-1",), run.run_id), run.log, spins, budget=0.2)
    assert (result.verdict, result.fork_point) == ("incompatible", None)
    assert "took over 0.2 s" in result.reason and "without suspending" in result.reason
