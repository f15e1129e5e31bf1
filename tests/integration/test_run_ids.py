"""Named runs: ``start(run_id=...)`` is idempotent, on both Worlds, even when processes race."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import tether
from tests.integration.processes import REPO
from tether import step, workflow

pytestmark = pytest.mark.both_worlds


@step
def charge(order_id: str, cents: int) -> str:
    return f"{order_id}:{cents}"


@workflow
async def order(order_id: str, cents: int) -> str:
    return await charge(order_id, cents)


@workflow
async def refund(order_id: str) -> str:
    return order_id


def test_a_second_start_with_the_same_id_returns_the_first_run(worker: tether.Worker) -> None:
    first = tether.start(order, ["o-1", 500], run_id="order-o-1")
    again = tether.start(order, ["o-1", 500], run_id="order-o-1")
    assert first.run_id == again.run_id == "order-o-1"
    assert again.created_at == first.created_at
    assert first.result(timeout=10) == "o-1:500"
    # Once it has ended, a retried start still answers with it: nothing runs twice.
    late = tether.start(order, ["o-1", 500], run_id="order-o-1")
    assert late.status() == "completed"
    assert [r.run_id for r in tether.list_runs(workflow_name=order.name)] == ["order-o-1"]
    assert [s.step_name for s in late.steps()] == [charge.name]


def test_a_retried_start_finds_its_run_whatever_changed_since(registered: str) -> None:
    first = tether.start(order, ["o-4", 400], run_id="order-o-4")
    assert first.is_new
    # Say a deploy since gave `order` other parameters: the retry, sending what the new
    # code takes, still gets the run its first try made (and its arguments).
    again = tether.start(order, ["o-4"], run_id="order-o-4")
    assert (again.run_id, again.is_new, again.created_at) == ("order-o-4", False, first.created_at)
    assert not tether.get_run("order-o-4").is_new


def test_the_same_id_for_another_workflow_is_refused(registered: str) -> None:
    tether.start(order, ["o-2", 100], run_id="o-2")
    with pytest.raises(tether.RunExistsError, match=r"'o-2' is taken by a run of .*order"):
        tether.start(refund, ["o-2"], run_id="o-2")
    assert tether.get_run("o-2").workflow_name == order.name


def test_start_async_and_rerun_take_a_run_id(worker: tether.Worker) -> None:
    run = asyncio.run(tether.start_async(order, ["o-3", 7], run_id="order-o-3"))
    assert run.run_id == "order-o-3" and run.result(timeout=10) == "o-3:7"
    redo = tether.rerun("order-o-3", new_run_id="order-o-3-redo")
    assert tether.rerun("order-o-3", new_run_id="order-o-3-redo").run_id == redo.run_id
    assert (redo.run_id, redo.rerun_of) == ("order-o-3-redo", "order-o-3")
    assert redo.result(timeout=10) == "o-3:7"


@pytest.mark.parametrize("bad", ["", "x" * 129, "order 1", "o/1", "é", "a\x00b", "r\u2028", 42])
def test_bad_run_ids_are_refused_naming_the_rule(registered: str, bad: object) -> None:
    with pytest.raises(tether.InvalidRunIdError, match="letters, digits and") as info:
        tether.start(order, ["o", 1], run_id=bad)  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)
    assert repr(bad)[:40] in str(info.value)
    assert tether.list_runs() == []


RACER = """
import json, sys, tether
tether.configure(sys.argv[1])
tether.config.resolve_world()  # connected (and migrated) before it says it is ready
print("ready", flush=True)
sys.stdin.readline()
made = [tether.start(sys.argv[2], ["o", 1], run_id=f"race-{i}") for i in range(40)]
print(json.dumps([[r.run_id, r.created_at.isoformat()] for r in made]), flush=True)
"""


def test_racing_starts_with_one_id_make_one_run(registered: str, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "src")])}
    env.pop("TETHER_DEPLOYMENT_ID")  # pure clients: they start on "latest", the tests' deployment
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, registered, order.name],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(3)
    ]
    for racer in racers:
        assert racer.stdout is not None and racer.stdout.readline().strip() == "ready"
    for racer in racers:  # all three are connected and waiting: let them go at once
        assert racer.stdin is not None
        racer.stdin.write("go\n")
        racer.stdin.flush()
    answers = []
    for racer in racers:
        out, _ = racer.communicate(timeout=60)
        assert racer.returncode == 0
        answers.append(json.loads(out))
    # Every racer was answered with the same run for each id: the one that was made.
    assert answers[0] == answers[1] == answers[2]
    runs = tether.list_runs(limit=None)
    assert sorted(r.run_id for r in runs) == sorted(f"race-{i}" for i in range(40))
    for run in runs:
        assert [e.type for e in run.events()] == ["run_created"]
