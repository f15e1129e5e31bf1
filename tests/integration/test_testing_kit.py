"""``tether_env``: the real engine on a World of the test's own, on a virtual clock.

A two-day sleep and a minute of retry backoff pass in no real time, and the
runs record the virtual times; hooks, streams, cancellation and child runs
work as they do anywhere. On PostgreSQL through ``$TETHER_TEST_WORLD`` (a
fresh schema per test), on SQLite by default.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

import tether
from tests.conformance.backends import POSTGRES_URL, require_postgres
from tether import RetryableError, StreamHandle, step, workflow
from tether.testing import VIRTUAL_START, TetherEnv

_calls: dict[str, int] = {}


@step
async def reserve_inventory(order_id: str) -> dict[str, object]:
    return {"order_id": order_id, "reserved": True}


@step(max_retries=5)
def charge_customer(order_id: str, cents: int) -> dict[str, object]:
    return {"order_id": order_id, "charged": cents, "at": tether.step_info().attempt}


@workflow
async def fulfill_order(order_id: str, cents: int) -> dict[str, object]:
    """The README's order workflow, with a two-day sleep."""
    await reserve_inventory(order_id)
    placed = tether.now().isoformat()
    await tether.sleep("2d")
    charged = await charge_customer(order_id, cents)
    return {**charged, "placed": placed, "charged_at": tether.now().isoformat()}


@step(max_retries=3)
def flaky(key: str) -> str:
    _calls[key] = _calls.get(key, 0) + 1
    if _calls[key] <= 2:
        raise RetryableError("the supplier is busy", retry_after="60s")
    return f"ok after {_calls[key]} attempts"


@workflow
async def retried(key: str) -> list[str]:
    started = tether.now().isoformat()
    done = await flaky(key)
    return [started, done, tether.now().isoformat()]


@step
def write(stream: StreamHandle, text: str, close: bool = False) -> None:
    stream.write(text)
    if close:
        stream.close()


@workflow
async def approval(order_id: str) -> str:
    stream = tether.get_writable()
    await write(stream, f"waiting for {order_id}")
    decision = await tether.create_hook(token=f"approve-{order_id}")
    await write(stream, f"decided {decision}", True)
    return str(decision)


@step
def open_child(order_id: str) -> str:
    return tether.start(fulfill_order, [order_id, 1]).run_id


@workflow
async def parent(order_id: str) -> str:
    return await open_child(order_id)


@pytest.fixture(params=["sqlite", "postgres"])
def env(
    request: pytest.FixtureRequest, tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> Iterator[TetherEnv]:
    """``tether_env`` on each World: PostgreSQL through $TETHER_TEST_WORLD, as a user sets it."""
    if request.param == "postgres":
        require_postgres()
        monkeypatch.setenv("TETHER_TEST_WORLD", f"{POSTGRES_URL}?application_name=tether_tests")
        yield request.getfixturevalue("tether_env")
    else:
        monkeypatch.delenv("TETHER_TEST_WORLD", raising=False)
        yield request.getfixturevalue("tether_env")


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).isoformat()


def test_a_two_day_sleep_passes_at_once_on_the_virtual_clock(env: TetherEnv) -> None:
    run = env.start(fulfill_order, ["o-1", 4599])
    result = env.result(run, timeout=10)
    assert result["charged"] == 4599 and result["order_id"] == "o-1"
    assert result["placed"] == iso(VIRTUAL_START)
    assert result["charged_at"] == iso(VIRTUAL_START + 2 * 86400)  # tether.now() is virtual
    sleep = next(e for e in env.events(run) if e.type == "wait_created")
    assert sleep.attrs == {"resume_at": VIRTUAL_START + 2 * 86400}  # type: ignore[comparison-overlap]
    env.assert_step_ran(run, charge_customer, 1)


def test_a_step_failing_twice_with_backoff_completes_on_its_third_attempt(env: TetherEnv) -> None:
    key = f"k-{os.getpid()}-{id(env)}"
    run = env.start(retried, [key])
    started, done, ended = env.result(run, timeout=10)
    assert done == "ok after 3 attempts" and started == iso(VIRTUAL_START)
    assert ended == iso(VIRTUAL_START + 120)  # two retry_after of 60 s, in virtual time
    env.assert_step_ran(run, flaky, 3)


def test_hooks_streams_cancellation_and_children_in_the_environment(env: TetherEnv) -> None:
    waiting = env.start(approval, ["a-1"])
    wait_for_hook(env, waiting, "approve-a-1")
    env.assert_waiting_on_hook(waiting, "approve-a-1")
    assert env.resume_hook("approve-a-1", "yes") == waiting.run_id
    assert env.result(waiting, timeout=10) == "yes"
    assert env.read_stream(waiting) == ["waiting for a-1", "decided yes"]

    left = env.start(approval, ["a-2"])
    wait_for_hook(env, left, "approve-a-2")
    assert left.cancel() and left.status() == "cancelled"

    family = env.start(parent, ["c-1"])
    child = tether.get_run(env.result(family, timeout=10))
    assert child.parent_run_id == family.run_id
    assert env.result(child, timeout=10)["charged"] == 1  # its two-day sleep skipped too


def test_a_step_replaced_for_one_test(env: TetherEnv) -> None:
    with env.replace_step(charge_customer, lambda order_id, cents: {"fake": order_id}):
        run = env.start(fulfill_order, ["o-fake", 1])
        assert env.result(run, timeout=10)["fake"] == "o-fake"
    run = env.start(fulfill_order, ["o-real", 2])
    assert env.result(run, timeout=10)["charged"] == 2


def test_two_environments_do_not_see_each_others_runs(env: TetherEnv) -> None:
    assert tether.list_runs(limit=None) == []  # nothing from the tests before
    env.start(fulfill_order, ["o-2", 1])
    assert len(tether.list_runs(limit=None)) == 1


def wait_for_hook(env: TetherEnv, run: tether.Run, token: str) -> None:
    with env.world.watch() as changed:
        for _ in range(400):
            if any(h.token == token and h.status == "active" for h in run.hooks()):
                return
            changed(0.05)
    raise AssertionError(f"run {run.run_id} never waited on hook {token!r}")


def test_the_clock_moves_by_hand_when_told_to(tmp_path: Path) -> None:
    with TetherEnv(f"sqlite:///{tmp_path / 'manual.db'}", auto_advance=False) as env:
        run = env.start(fulfill_order, ["o-3", 7])
        with env.world.watch() as changed:
            while not env.world.list_waits(run.run_id):
                changed(0.05)
        assert env.next_deadline() == VIRTUAL_START + 2 * 86400
        assert run.status() == "running"  # no real time passes it; nobody moved the clock
        env.advance("2d")
        assert env.result(run, timeout=10)["charged"] == 7
        assert [s.status for s in env.steps(run)] == ["completed", "completed"]
