"""The World protocol, asserted once and run against every backend.

Each test talks to a World directly, playing the worker's part by hand:
it creates runs, claims tasks and commits activations with the events a
worker would compute.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from psycopg.errors import UniqueViolation

from tests.conformance.probe import claim, get_hook, has_due, next_due
from tether.clock import ManualClock
from tether.errors import HookNotFoundError, StreamClosedError, TetherError
from tether.worlds import open_world
from tether.worlds.base import World
from tether.worlds.records import (
    Activation,
    EventRecord,
    NewRun,
    RunFilter,
    StepOutcome,
    WorkerInfo,
)
from tether.worlds.schema import encode_cursor

WF = "workflow//tests.conformance//flow"
STEP = "step//tests.conformance//act"
DEP = "dep-a"


#: The test's clock: its Worlds read it, ``ev`` stamps events with it (``manual_clock``).
CLOCK = ManualClock()


@pytest.fixture(autouse=True)
def manual_clock() -> ManualClock:
    """A clock of the test's own, stepped instead of waited for."""
    global CLOCK
    CLOCK = ManualClock()
    return CLOCK


@pytest.fixture
def world(world_url: str, manual_clock: ManualClock) -> Iterator[World]:
    """A World on the test's database that reads the test's clock."""
    opened = open_world(world_url, manual_clock)
    yield opened
    opened.close()


@pytest.fixture
def other_world(world_url: str, manual_clock: ManualClock) -> Iterator[World]:
    """A second instance on the same database and clock: it stands in for another process."""
    opened = open_world(world_url, manual_clock)
    yield opened
    opened.close()


def ev(run_id: str, seq: int, kind: str, cid: str | None = None, **fields: Any) -> EventRecord:
    return EventRecord(run_id, seq, kind, cid, created_at=CLOCK.time(), **fields)


def new_run(run_id: str, deployment: str = DEP, **fields: Any) -> NewRun:
    return NewRun(run_id, fields.pop("workflow_name", WF), deployment, '"input"', **fields)


def started_with_step(
    world: World, run_id: str, *, worker: str = "w1", lease: float = 30.0, deployment: str = DEP
) -> None:
    """A run whose first activation started step "0", leased to ``worker`` (seq 1..4)."""
    world.create_run(new_run(run_id, deployment))
    events = [
        ev(run_id, 2, "run_started"),
        ev(run_id, 3, "step_created", "0", name=STEP, payload='"step-input"'),
        ev(run_id, 4, "step_started", "0", attrs={"attempt": 1}),
    ]
    assert world.commit_activation(Activation(run_id, 1, events, worker, lease))


def outcome(run_id: str, status: str = "completed", **fields: Any) -> StepOutcome:
    return StepOutcome(run_id, "0", "w1", status, '"out"', fields.pop("attempt", 1), **fields)  # type: ignore[arg-type]


def types(world: World, run_id: str) -> list[str]:
    return [e.type for e in world.list_events(run_id)]


def assert_dense(world: World, run_id: str) -> None:
    seqs = [e.seq for e in world.list_events(run_id)]
    assert seqs == list(range(1, len(seqs) + 1))
    record = world.get_run(run_id)
    assert record is not None and record.last_seq == len(seqs)


# -- runs and events ----------------------------------------------------------


def test_create_and_get_a_run(world: World) -> None:
    created = world.create_run(new_run("r1", parent_run_id="p1", rerun_of="r0", created_at=1000.5))
    got = world.get_run("r1")
    assert got == created
    assert (got.status, got.deployment_id, got.input) == ("pending", DEP, '"input"')
    assert got.last_seq == 1
    assert (got.parent_run_id, got.rerun_of, got.created_at) == ("p1", "r0", 1000.5)
    assert got.started_at is None and got.output is None
    (first,) = world.list_events("r1")
    assert (first.seq, first.type, first.name, first.payload) == (1, "run_created", WF, '"input"')
    assert first.attrs == {"deployment_id": DEP, "parent_run_id": "p1", "rerun_of": "r0"}
    assert world.get_run("nope") is None
    assert world.list_events("nope") == []


def test_a_duplicate_run_id_is_refused(world: World, world_url: str) -> None:
    world.create_run(new_run("r1"))
    # Each backend raises its driver's integrity error.
    refused = sqlite3.IntegrityError if world_url.startswith("sqlite") else UniqueViolation
    with pytest.raises(refused, match="run"):
        world.create_run(new_run("r1"))
    assert world.get_run("r1") is not None


def test_list_runs_filters_and_pages(world: World) -> None:
    for i in range(7):
        world.create_run(
            new_run(
                f"r{i}",
                "dep-b" if i % 2 else DEP,
                workflow_name=WF + ("2" if i >= 5 else ""),
                parent_run_id="p" if i in (1, 2) else None,
                created_at=100.0 + (i // 2),  # pairs share a created_at: run_id breaks ties
            )
        )
    world.cancel_runs(["r3"])

    def ids(**filters: Any) -> list[str]:
        return [r.run_id for r in world.list_runs(RunFilter(**filters))]

    assert ids() == ["r6", "r5", "r4", "r3", "r2", "r1", "r0"]
    assert ids(descending=False) == ["r0", "r1", "r2", "r3", "r4", "r5", "r6"]
    assert ids(status="cancelled") == ["r3"]
    assert ids(status="pending", deployment_id="dep-b") == ["r5", "r1"]
    assert ids(workflow_name=WF + "2") == ["r6", "r5"]
    assert ids(parent_run_id="p") == ["r2", "r1"]
    assert ids(limit=2) == ["r6", "r5"]
    for descending in (True, False):
        seen: list[str] = []
        cursor = None
        while True:
            page = world.list_runs(RunFilter(limit=3, cursor=cursor, descending=descending))
            seen += [r.run_id for r in page]
            if len(page) < 3:
                break
            cursor = encode_cursor(page[-1].created_at, page[-1].run_id)
        assert seen == ids(descending=descending)
    with pytest.raises(ValueError, match="invalid cursor"):
        world.list_runs(RunFilter(cursor="garbage"))


def test_events_are_dense_and_listed_after_a_seq(world: World) -> None:
    started_with_step(world, "r1")
    world.finish_step(outcome("r1"))
    assert types(world, "r1") == [
        "run_created",
        "run_started",
        "step_created",
        "step_started",
        "step_completed",
    ]
    assert_dense(world, "r1")
    assert [e.seq for e in world.list_events("r1", after_seq=3)] == [4, 5]
    created = world.list_events("r1")[2]
    assert (created.correlation_id, created.name, created.payload) == ("0", STEP, '"step-input"')
    assert world.list_events("r1")[3].attrs == {"attempt": 1}


# -- activations ----------------------------------------------------------------


def test_commit_activation_appends_and_derives_the_views(world: World, other_world: World) -> None:
    started_with_step(world, "r1", worker="w1")
    run = world.get_run("r1")
    assert run is not None and run.status == "running" and run.started_at is not None
    (step,) = world.list_steps("r1")
    assert (step.step_id, step.step_name, step.status, step.attempt) == ("0", STEP, "running", 1)
    assert step.input == '"step-input"' and step.started_at is not None
    # The new step is leased to the worker that asked for it: nobody else may claim it.
    assert claim(other_world, DEP, "w2", 10, 30.0) == []
    assert not has_due(world, DEP, CLOCK.time())


def test_commit_activation_refuses_a_stale_log_and_requeues_the_run(world: World) -> None:
    started_with_step(world, "r1")
    stale = Activation("r1", 2, [ev("r1", 3, "run_completed", payload="1")], "w1", 30.0)
    assert world.commit_activation(stale) is False
    assert types(world, "r1")[-1] == "step_started"
    assert world.get_run("r1").status == "running"  # type: ignore[union-attr]
    (task,) = claim(world, DEP, "w2", 10, 30.0)
    assert (task.kind, task.run_id) == ("workflow", "r1")


def test_an_activation_with_nothing_to_append_still_gives_back_its_task(world: World) -> None:
    # A registered worker: on PostgreSQL its commits take the fast path.
    world.register_worker(WorkerInfo("w1", DEP, "production", "host", 1), {})
    with_hook(world, "r1", "tok-1")
    world.resume_hook("tok-1", '"a"')  # seq 4; the run's workflow task is due
    (task,) = claim(world, DEP, "w1", 10, 30.0)
    assert (task.kind, task.run_id) == ("workflow", "r1")
    # The workflow read the payload and waits for the next: nothing new to append.
    assert world.commit_activation(Activation("r1", 4, [], "w1", 30.0))
    assert next_due(world, DEP) is None  # the task is not left leased to w1
    world.resume_hook("tok-1", '"b"')
    (again,) = claim(world, DEP, "w2", 10, 30.0)
    assert again.run_id == "r1"


def test_commit_activation_on_an_ended_run_is_refused_without_requeue(world: World) -> None:
    world.create_run(new_run("r1"))
    world.cancel_runs(["r1"])
    late = Activation("r1", 2, [ev("r1", 3, "run_started")], "w1", 30.0)
    assert world.commit_activation(late) is False
    assert world.commit_activation(Activation("nope", 1, [], "w1", 30.0)) is False
    assert claim(world, DEP, "w1", 10, 30.0) == []


def test_run_completion_ends_the_run(world: World) -> None:
    world.create_run(new_run("r1"))
    (task,) = claim(world, DEP, "w1", 10, 30.0)
    assert (task.kind, task.run_id) == ("workflow", "r1")
    end = [ev("r1", 2, "run_started"), ev("r1", 3, "run_completed", payload='"done"')]
    assert world.commit_activation(Activation("r1", 1, end, "w1", 30.0))
    run = world.get_run("r1")
    assert run is not None
    assert (run.status, run.output, run.last_seq) == ("completed", '"done"', 3)
    assert run.completed_at is not None and run.started_at is not None
    assert next_due(world, DEP) is None
    world.create_run(new_run("r2"))
    claim(world, DEP, "w1", 10, 30.0)
    failed = [ev("r2", 2, "run_started"), ev("r2", 3, "run_failed", payload='"boom"')]
    assert world.commit_activation(Activation("r2", 1, failed, "w1", 30.0))
    assert (world.get_run("r2").status, world.get_run("r2").error) == ("failed", '"boom"')  # type: ignore[union-attr]


def test_create_run_with_its_first_activation(world: World, other_world: World) -> None:
    events = [
        ev("r1", 2, "run_started"),
        ev("r1", 3, "step_created", "0", name=STEP, payload="[]"),
        ev("r1", 4, "step_started", "0", attrs={"attempt": 1}),
    ]
    record = world.create_run(new_run("r1"), Activation("r1", 1, events, "w1", 30.0))
    assert record.run_id == "r1"
    assert types(world, "r1") == ["run_created", "run_started", "step_created", "step_started"]
    assert world.get_run("r1").status == "running"  # type: ignore[union-attr]
    assert world.list_steps("r1")[0].status == "running"
    assert claim(other_world, DEP, "w2", 10, 30.0) == []  # no workflow task, step leased
    assert_dense(world, "r1")


# -- step outcomes ----------------------------------------------------------------


def test_finish_step_without_activation_queues_the_run(world: World) -> None:
    started_with_step(world, "r1")
    assert world.finish_step(outcome("r1")) is False
    (step,) = world.list_steps("r1")
    assert (step.status, step.output) == ("completed", '"out"')
    assert step.completed_at is not None
    last = world.list_events("r1")[-1]
    assert (last.type, last.correlation_id, last.payload) == ("step_completed", "0", '"out"')
    assert last.attrs == {"attempt": 1}
    (task,) = claim(world, DEP, "w2", 10, 30.0)
    assert (task.kind, task.run_id) == ("workflow", "r1")


def test_finish_step_with_activation_commits_both(world: World) -> None:
    started_with_step(world, "r1")
    activation = Activation(
        "r1",
        4,
        [
            ev("r1", 5, "step_completed", "0", payload='"out"', attrs={"attempt": 1}),
            ev("r1", 6, "step_created", "1", name=STEP, payload="[]"),
            ev("r1", 7, "step_started", "1", attrs={"attempt": 1}),
        ],
        "w1",
        30.0,
    )
    assert world.finish_step(outcome("r1"), activation) is True
    assert [s.status for s in world.list_steps("r1")] == ["completed", "running"]
    assert claim(world, DEP, "w2", 10, 30.0) == []  # nothing queued: w1 runs step 1
    assert_dense(world, "r1")


def test_finish_step_with_a_stale_activation_records_only_the_outcome(world: World) -> None:
    started_with_step(world, "r1")
    stale = Activation("r1", 3, [ev("r1", 4, "run_completed", payload="1")], "w1", 30.0)
    assert world.finish_step(outcome("r1"), stale) is False
    assert types(world, "r1")[-1] == "step_completed"
    assert world.get_run("r1").status == "running"  # type: ignore[union-attr]
    (task,) = claim(world, DEP, "w2", 10, 30.0)
    assert task.kind == "workflow"


def test_finish_step_is_dropped_for_recorded_steps_and_ended_runs(world: World) -> None:
    started_with_step(world, "r1")
    world.finish_step(outcome("r1"))
    before = types(world, "r1")
    assert world.finish_step(outcome("r1", attempt=2)) is False  # another attempt, too late
    assert world.finish_step(outcome("r1", "failed")) is False
    assert types(world, "r1") == before
    started_with_step(world, "r2")
    world.cancel_runs(["r2"])
    assert world.finish_step(outcome("r2")) is False
    assert types(world, "r2")[-1] == "run_cancelled"
    assert world.list_steps("r2")[0].status == "cancelled"
    assert world.finish_step(outcome("nope")) is False


def test_failed_step(world: World) -> None:
    started_with_step(world, "r1")
    world.finish_step(outcome("r1", "failed"))
    (step,) = world.list_steps("r1")
    assert (step.status, step.error) == ("failed", '"out"')
    assert types(world, "r1")[-1] == "step_failed"


def test_retry_is_due_at_retry_at_and_claimed_as_the_next_attempt(world: World) -> None:
    started_with_step(world, "r1")
    retry_at = CLOCK.time() + 0.4
    world.finish_step(outcome("r1", "retrying", retry_at=retry_at))
    (step,) = world.list_steps("r1")
    assert (step.status, step.error, step.retry_at) == ("retrying", '"out"', retry_at)
    last = world.list_events("r1")[-1]
    assert last.type == "step_retrying" and last.attrs == {"attempt": 1, "retry_at": retry_at}
    assert claim(world, DEP, "w2", 10, 30.0) == []  # not due yet
    assert next_due(world, DEP) == retry_at
    CLOCK.advance(retry_at - CLOCK.time() + 0.05)
    (task,) = claim(world, DEP, "w2", 10, 30.0)
    assert (task.kind, task.step_id, task.step_name) == ("step", "0", STEP)
    assert task.input == '"step-input"'
    assert task.attempt == 2
    last = world.list_events("r1")[-1]
    assert (last.type, last.correlation_id, last.attrs) == ("step_started", "0", {"attempt": 2})
    assert world.list_steps("r1")[0].status == "running"
    assert_dense(world, "r1")


# -- claims and leases --------------------------------------------------------------


def test_claims_take_due_tasks_of_their_deployment_only(world: World) -> None:
    world.create_run(new_run("a1"))
    world.create_run(new_run("b1", "dep-b"))
    assert has_due(world, DEP, CLOCK.time()) and has_due(world, "dep-b", CLOCK.time())
    assert not has_due(world, "dep-c", CLOCK.time()) and next_due(world, "dep-c") is None
    (task,) = claim(world, DEP, "w1", 10, 30.0)
    assert (task.kind, task.run_id, task.deployment_id) == ("workflow", "a1", DEP)
    assert claim(world, DEP, "w1", 10, 30.0) == []  # leased now
    assert [t.run_id for t in claim(world, "dep-b", "w2", 10, 30.0)] == ["b1"]
    # A leased task's due time is its lease expiry.
    assert next_due(world, DEP) == CLOCK.time() + 30.0


def test_a_claim_round_claims_and_says_when_to_look_again(world: World) -> None:
    async def claim_round(limit: int) -> tuple[list[str], float | None]:
        tasks, due = await world.claim_due_async(DEP, "w1", limit, 30.0)
        return [t.run_id for t in tasks], due

    assert asyncio.run(claim_round(10)) == ([], None)  # nothing at all: no due time
    for i in range(3):
        world.create_run(new_run(f"r{i}", created_at=CLOCK.time() - 10 + i))
    got, due = asyncio.run(claim_round(2))
    assert got == ["r0", "r1"] and due == CLOCK.time()  # more is due
    got, due = asyncio.run(claim_round(10))
    assert got == ["r2"]
    # All leased now: the next due time is the first lease's expiry.
    assert due == CLOCK.time() + 30.0
    assert asyncio.run(claim_round(10))[0] == []


def test_claims_respect_the_limit_and_go_oldest_first(world: World) -> None:
    for i in range(5):
        world.create_run(new_run(f"r{i}", created_at=CLOCK.time() - 10 + i))
    first = claim(world, DEP, "w1", 2, 30.0)
    assert [t.run_id for t in first] == ["r0", "r1"]
    rest = claim(world, DEP, "w1", 10, 30.0)
    assert sorted(t.run_id for t in rest) == ["r2", "r3", "r4"]


def test_an_expired_lease_is_taken_over(world: World, other_world: World) -> None:
    started_with_step(world, "r1", worker="dead", lease=0.3)
    assert claim(other_world, DEP, "w2", 10, 30.0) == []
    CLOCK.advance(0.4)
    assert has_due(other_world, DEP, CLOCK.time())
    (task,) = claim(other_world, DEP, "w2", 10, 30.0)
    assert (task.kind, task.step_id, task.attempt) == ("step", "0", 2)
    assert types(world, "r1")[-1] == "step_started"
    assert_dense(world, "r1")


def test_a_workers_own_lapsed_step_is_renewed_not_started_again(world: World) -> None:
    # Its heartbeat came late: the step runs in that worker still, or its outcome is
    # on its way. Started again by the same worker, it would run twice.
    started_with_step(world, "r1", worker="w1", lease=0.3)
    CLOCK.advance(0.4)
    assert claim(world, DEP, "w1", 10, 30.0) == []
    assert types(world, "r1")[-1] == "step_started"
    assert next_due(world, DEP) == CLOCK.time() + 30.0  # renewed: no claim loop spins on it
    CLOCK.advance(31.0)  # the worker died after all: a peer takes the step over
    (task,) = claim(world, DEP, "w2", 10, 30.0)
    assert (task.step_id, task.attempt) == ("0", 2)


def test_claims_drop_the_tasks_of_ended_runs(world: World) -> None:
    started_with_step(world, "r1", lease=0.2)
    world.create_run(new_run("r2"))
    world.cancel_runs(["r1", "r2"])
    CLOCK.advance(0.3)
    assert claim(world, DEP, "w1", 10, 30.0) == []
    assert next_due(world, DEP) is None


def test_two_concurrent_claimers_never_get_the_same_task(world: World, other_world: World) -> None:
    for i in range(120):
        world.create_run(new_run(f"r{i:03}"))
    got: dict[str, list[str]] = {"a": [], "b": []}
    barrier = threading.Barrier(2)

    def claim_all(name: str, target: World) -> None:
        barrier.wait()
        while True:
            tasks = claim(target, DEP, name, 7, 30.0)
            if not tasks:
                return
            got[name] += [t.run_id for t in tasks]

    threads = [
        threading.Thread(target=claim_all, args=("a", world)),
        threading.Thread(target=claim_all, args=("b", other_world)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    claimed = got["a"] + got["b"]
    assert len(claimed) == len(set(claimed)) == 120


def test_heartbeat_extends_leases_and_release_gives_them_back(world: World) -> None:
    started_with_step(world, "r1", worker="w1", lease=0.3)
    world.register_worker(WorkerInfo("w1", DEP, "default", "host", 1), {})
    world.heartbeat("w1", 30.0)
    CLOCK.advance(0.4)
    assert claim(world, DEP, "w2", 10, 30.0) == []
    world.unregister_worker("w1")
    (task,) = claim(world, DEP, "w2", 10, 30.0)
    assert task.step_id == "0"


def test_unregister_marks_the_worker_stopped_and_releases_its_leases(world: World) -> None:
    world.register_worker(WorkerInfo("w1", DEP, "default", "host", 1), {})
    started_with_step(world, "r1", worker="w1")
    (status,) = world.list_deployments(None, live_within=60)
    assert status.live_workers == 1
    world.unregister_worker("w1")
    (status,) = world.list_deployments(None, live_within=60)
    assert status.live_workers == 0 and status.stranded
    assert [t.step_id for t in claim(world, DEP, "w2", 10, 30.0)] == ["0"]


def test_a_step_leased_but_not_begun_is_handed_back_due_now(world: World) -> None:
    started_with_step(world, "r1", worker="w1", lease=30.0)
    assert world.hand_back_step("r1", "0", "w2", 1) is False  # not w2's lease
    assert world.hand_back_step("r1", "0", "w1", 2) is False  # not the attempt it holds
    assert types(world, "r1")[-1] == "step_started"
    assert world.hand_back_step("r1", "0", "w1", 1) is True
    last = world.list_events("r1")[-1]
    assert (last.type, last.correlation_id, last.payload) == ("step_retrying", "0", None)
    assert last.attrs == {"attempt": 1, "retry_at": CLOCK.time(), "handed_back": True}
    (step,) = world.list_steps("r1")
    assert (step.status, step.attempt, step.retry_at) == ("retrying", 0, CLOCK.time())
    # At once (no lease left to run out), and as attempt 1 again: it never began, so
    # handing it back spends none of its retries.
    (task,) = claim(world, DEP, "w2", 10, 30.0)
    assert (task.step_id, task.attempt) == ("0", 1)
    assert world.hand_back_step("r1", "0", "w1", 1) is False  # w2 holds it now
    assert_dense(world, "r1")


def test_a_recorded_step_or_an_ended_run_is_not_handed_back(world: World) -> None:
    started_with_step(world, "r1")
    world.finish_step(outcome("r1"))
    assert world.hand_back_step("r1", "0", "w1", 1) is False
    started_with_step(world, "r2")
    world.cancel_runs(["r2"])
    assert world.hand_back_step("r2", "0", "w1", 1) is False
    assert world.hand_back_step("nope", "0", "w1", 1) is False
    assert types(world, "r1")[-1] == "step_completed"
    assert types(world, "r2")[-1] == "run_cancelled"


# -- sleeps ------------------------------------------------------------------------


def sleeping(world: World, run_id: str, seconds: float) -> float:
    """A started run waiting on one sleep; returns when the sleep ends."""
    world.create_run(new_run(run_id))
    resume_at = CLOCK.time() + seconds
    events = [
        ev(run_id, 2, "run_started"),
        ev(run_id, 3, "wait_created", "0", attrs={"resume_at": resume_at}),
    ]
    assert world.commit_activation(Activation(run_id, 1, events, "w1", 30.0))
    return resume_at


def test_a_sleep_schedules_the_workflow_task_at_its_end(world: World) -> None:
    resume_at = sleeping(world, "r1", 0.3)
    (wait,) = world.list_waits("r1")
    assert (wait.wait_id, wait.status, wait.resume_at) == ("0", "waiting", resume_at)
    assert next_due(world, DEP) == resume_at
    assert not has_due(world, DEP, CLOCK.time())
    assert claim(world, DEP, "w1", 10, 30.0) == []
    CLOCK.advance(resume_at - CLOCK.time() + 0.05)
    assert has_due(world, DEP, CLOCK.time())
    (task,) = claim(world, DEP, "w1", 10, 30.0)
    assert (task.kind, task.run_id) == ("workflow", "r1")
    done = [ev("r1", 4, "wait_completed", "0")]
    assert world.commit_activation(Activation("r1", 3, done, "w1", 30.0))
    (wait,) = world.list_waits("r1")
    assert wait.status == "completed" and wait.completed_at is not None
    assert next_due(world, DEP) is None


def test_a_claim_may_take_a_sleep_ahead_of_its_end_but_never_a_step(
    world: World, other_world: World
) -> None:
    resume_at = sleeping(world, "r1", 0.5)
    started_with_step(world, "r2")
    retry_at = CLOCK.time() + 0.5
    world.finish_step(outcome("r2", "retrying", retry_at=retry_at))
    assert claim(world, DEP, "w1", 10, 30.0, ahead=0.1) == []  # neither is that close
    (task,) = claim(world, DEP, "w1", 10, 30.0, ahead=2.0)
    assert (task.kind, task.run_id) == ("workflow", "r1")
    assert task.due_at == pytest.approx(resume_at, abs=0.001)  # the worker holds it till then
    # Leased now: nobody else takes it, ahead or not.
    assert claim(other_world, DEP, "w2", 10, 30.0, ahead=2.0) == []
    CLOCK.advance(retry_at - CLOCK.time() + 0.05)
    (step,) = claim(other_world, DEP, "w2", 10, 30.0, ahead=2.0)
    assert (step.kind, step.run_id, step.attempt) == ("step", "r2", 2)
    assert step.due_at == pytest.approx(retry_at, abs=0.001)


def test_a_claim_round_looks_again_half_a_window_before_a_sleep_ends(world: World) -> None:
    async def claim_round(ahead: float) -> tuple[list[str], float | None]:
        tasks, due = await world.claim_due_async(DEP, "w1", 10, 30.0, ahead)
        return [t.run_id for t in tasks], due

    resume_at = sleeping(world, "r1", 60)
    assert asyncio.run(claim_round(0.0)) == ([], pytest.approx(resume_at, abs=0.001))
    assert asyncio.run(claim_round(2.0)) == ([], pytest.approx(resume_at - 1.0, abs=0.001))
    started_with_step(world, "r2")
    retry_at = CLOCK.time() + 30
    world.finish_step(outcome("r2", "retrying", retry_at=retry_at))
    # A step is never claimed ahead: the round looks again when it falls due.
    assert asyncio.run(claim_round(2.0)) == ([], pytest.approx(retry_at, abs=0.001))


def test_a_step_outcome_that_starts_a_sleep_reschedules_the_run(world: World) -> None:
    started_with_step(world, "r1")
    resume_at = CLOCK.time() + 60
    activation = Activation(
        "r1",
        4,
        [
            ev("r1", 5, "step_completed", "0", payload='"out"'),
            ev("r1", 6, "wait_created", "1", attrs={"resume_at": resume_at}),
        ],
        "w1",
        30.0,
    )
    assert world.finish_step(outcome("r1"), activation)
    assert next_due(world, DEP) == resume_at


def test_wake_sleeps_ends_pending_sleeps_now(world: World) -> None:
    sleeping(world, "r1", 60)
    assert world.wake_sleeps("r1") == 1
    last = world.list_events("r1")[-1]
    assert (last.type, last.correlation_id, last.attrs) == ("wait_completed", "0", {"woken": True})
    assert world.list_waits("r1")[0].status == "completed"
    (task,) = claim(world, DEP, "w1", 10, 30.0)
    assert (task.kind, task.run_id) == ("workflow", "r1")
    assert world.wake_sleeps("r1") == 0
    assert world.wake_sleeps("nope") == 0
    sleeping(world, "r2", 60)
    world.cancel_runs(["r2"])
    assert world.wake_sleeps("r2") == 0
    assert_dense(world, "r1")


# -- cancel ------------------------------------------------------------------------


def test_cancel_ends_unfinished_runs_and_drops_their_work(world: World) -> None:
    started_with_step(world, "r1", lease=0.1)
    sleeping(world, "r2", 60)
    world.create_run(new_run("r3"))
    claim(world, DEP, "w1", 10, 30.0)
    world.cancel_runs(["r3"])
    result = world.cancel_runs(["r1", "r2", "r3", "nope", "r1"])
    assert result.cancelled == ["r1", "r2"]
    for run_id in ("r1", "r2", "r3"):
        run = world.get_run(run_id)
        assert run is not None and run.status == "cancelled" and run.completed_at is not None
        assert types(world, run_id).count("run_cancelled") == 1
        assert_dense(world, run_id)
    assert world.list_steps("r1")[0].status == "cancelled"
    assert world.list_waits("r2")[0].status == "cancelled"
    CLOCK.advance(0.2)
    assert claim(world, DEP, "w1", 10, 30.0) == []
    assert next_due(world, DEP) is None
    assert world.cancel_runs([]).cancelled == []


# -- deployments ----------------------------------------------------------------------


def test_register_worker_merges_manifests_and_keeps_first_sight(world: World) -> None:
    assert world.get_deployment(DEP) is None and world.latest_deployment("default") is None
    world.register_worker(
        WorkerInfo("w1", DEP, "default", "h", 1), {"workflows": {WF: {"x": 1}}, "steps": {}}
    )
    first = world.get_deployment(DEP)
    assert first is not None and first.environment == "default"
    CLOCK.advance(0.01)
    world.register_worker(
        WorkerInfo("w2", DEP, "default", "h", 2), {"workflows": {WF + "2": {}}, "steps": {STEP: {}}}
    )
    merged = world.get_deployment(DEP)
    assert merged is not None and merged.created_at == first.created_at
    assert merged.manifest == {"workflows": {WF: {"x": 1}, WF + "2": {}}, "steps": {STEP: {}}}


def test_latest_deployment_is_per_environment(world: World) -> None:
    world.register_worker(WorkerInfo("w1", "old", "prod", "h", 1), {})
    CLOCK.advance(0.01)
    world.register_worker(WorkerInfo("w2", "new", "prod", "h", 1), {})
    CLOCK.advance(0.01)
    world.register_worker(WorkerInfo("w3", "other", "staging", "h", 1), {})
    assert world.latest_deployment("prod").deployment_id == "new"  # type: ignore[union-attr]
    assert world.latest_deployment("staging").deployment_id == "other"  # type: ignore[union-attr]
    assert world.latest_deployment("nowhere") is None


def test_list_deployments_counts_in_flight_runs_and_live_workers(world: World) -> None:
    world.register_worker(WorkerInfo("w-old", "old", "prod", "h", 1), {})
    CLOCK.advance(0.01)
    world.register_worker(WorkerInfo("w-new", "new", "prod", "h", 1), {})
    world.register_worker(WorkerInfo("w-new2", "new", "prod", "h", 2), {})
    world.register_worker(WorkerInfo("w-stg", "stg", "staging", "h", 1), {})
    world.unregister_worker("w-old")
    world.create_run(new_run("r1", "old"))
    world.create_run(new_run("r2", "old"))
    world.create_run(new_run("r3", "new"))
    world.create_run(new_run("r4", "new"))
    world.cancel_runs(["r4"])
    world.create_run(new_run("r5", "ghost", created_at=5.0))  # no worker ever registered it
    by_id = {d.deployment_id: d for d in world.list_deployments(None, live_within=60)}
    assert set(by_id) == {"old", "new", "stg", "ghost"}
    old = by_id["old"]
    assert (old.in_flight, old.live_workers, old.stranded) == (2, 0, True)
    assert (by_id["new"].in_flight, by_id["new"].live_workers, by_id["new"].stranded) == (
        1,
        2,
        False,
    )
    assert by_id["new"].last_heartbeat_at is not None
    assert (by_id["stg"].in_flight, by_id["stg"].stranded) == (0, False)
    ghost = by_id["ghost"]
    assert (ghost.environment, ghost.in_flight, ghost.live_workers, ghost.created_at) == (
        "",
        1,
        0,
        5.0,
    )
    assert ghost.stranded and ghost.last_heartbeat_at is None
    prod = world.list_deployments("prod", live_within=60)
    assert [d.deployment_id for d in prod] == ["new", "old", "ghost"]  # newest first
    # A worker whose heartbeat is older than live_within is not live.
    CLOCK.advance(0.3)
    stale = {d.deployment_id: d for d in world.list_deployments(None, live_within=0.2)}
    assert stale["new"].live_workers == 0 and stale["new"].stranded
    world.heartbeat("w-new", 10.0)
    fresh = {d.deployment_id: d for d in world.list_deployments(None, live_within=0.2)}
    assert fresh["new"].live_workers == 1


# -- wake-ups -------------------------------------------------------------------------


def seconds_to_wake(world: World, other: World, change: Callable[[], object]) -> float:
    """How long ``world.watch()``'s wait blocked while ``other`` made ``change``.

    The watch listens first: ``other`` commits until the watch has heard one
    (PostgreSQL's LISTEN and SQLite's first look at the file take a moment,
    longer under load); once the watch has been quiet for 0.3 s, the change.
    """
    woke: list[float] = []
    heard, ready = threading.Event(), threading.Event()

    def wait() -> None:
        with world.watch() as changed:
            while not heard.is_set():
                began = time.monotonic()
                changed(0.1)
                if time.monotonic() - began < 0.09:  # woken by a warm-up commit
                    heard.set()
            while True:  # until no warm-up commit is left to hear
                began = time.monotonic()
                changed(0.3)
                if time.monotonic() - began >= 0.29:
                    break
            ready.set()
            start = time.monotonic()
            changed(10.0)
            woke.append(time.monotonic() - start)

    waiter = threading.Thread(target=wait, daemon=True)
    waiter.start()
    for i in range(300):
        if heard.wait(0.05):
            break
        other.create_run(new_run(f"warm-up-{i}"))
    assert ready.wait(30), "the watch never heard the other instance"
    change()
    waiter.join(timeout=15)
    assert woke, "the watch did not return"
    return woke[0]


def test_watch_wakes_on_another_instances_commit(world: World, other_world: World) -> None:
    assert seconds_to_wake(world, other_world, lambda: other_world.create_run(new_run("r1"))) < 2.0


def test_watch_does_not_miss_a_change_made_between_two_waits(
    world: World, other_world: World
) -> None:
    with world.watch() as changed:
        changed(0.2)  # let the listener connect, and forget what that saw
        other_world.create_run(new_run("r1"))  # before the next wait begins
        start = time.monotonic()
        changed(10.0)
        assert time.monotonic() - start < 2.0


def test_work_only_listener_hears_work_made_due_elsewhere(world: World, other_world: World) -> None:
    heard = threading.Event()
    remove = world.add_listener(heard.set, work_only=True)
    try:
        time.sleep(0.2)  # let the listener connect
        heard.clear()
        other_world.create_run(new_run("r1"))  # queues a workflow task: work for any worker
        assert heard.wait(5.0)
    finally:
        remove()


def test_a_deployments_listener_hears_its_work_and_may_skip_others(
    world: World, other_world: World, world_url: str
) -> None:
    heard = threading.Event()
    remove = world.add_listener(heard.set, work_only=True, deployment_id=DEP)
    try:
        # Commit work for its deployment until it hears some: then it is connected.
        for i in range(100):
            other_world.create_run(new_run(f"a0-{i}"))
            if heard.wait(0.1):
                break
        assert heard.is_set()
        if world_url.startswith("postgresql"):
            # PostgreSQL's notifications name the deployments: work for another one wakes
            # nobody. A wake-up still on its way from the commits above may land in a
            # window, but not in all three.
            quiet = []
            for i in range(3):
                heard.clear()
                other_world.create_run(new_run(f"b{i}", "dep-b"))
                quiet.append(not heard.wait(1.0))
            assert any(quiet), "work for dep-b woke a listener of dep-a"
        heard.clear()
        other_world.create_run(new_run("a1"))
        assert heard.wait(10.0)
    finally:
        remove()


def test_listeners_hear_other_instances_and_skip_their_own_loop(
    world: World, other_world: World, world_url: str
) -> None:

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        heard = {"own": asyncio.Event(), "all": asyncio.Event()}
        counts = {"own": 0, "all": 0}

        def listener(name: str) -> Callable[[], None]:
            def hear() -> None:
                counts[name] += 1
                loop.call_soon_threadsafe(heard[name].set)

            return hear

        async def until(name: str, holds: Callable[[], bool], what: str) -> None:
            deadline = loop.time() + 10.0
            while not holds():
                heard[name].clear()
                if holds():
                    return
                try:
                    await asyncio.wait_for(heard[name].wait(), deadline - loop.time())
                except TimeoutError:
                    raise AssertionError(f"no {what} within 10 s: {counts}") from None

        remove_own = world.add_listener(listener("own"), skip_own_loop=True)
        remove_all = world.add_listener(listener("all"))
        # Another instance's commit wakes both (and shows they are connected).
        await asyncio.to_thread(other_world.create_run, new_run("r0"))
        await until("own", lambda: counts["own"] >= 1, "wake-up of `own` by another instance")
        # A commit made from this loop wakes `all` but not `own`. Other wake-ups (a
        # listener's reconnect, a late one of r0) wake both, so some wake-up of `all`
        # without `own` shows the skip.
        own, every = counts["own"], counts["all"]
        await world.create_run_async(new_run("r1"))
        await until(
            "all",
            lambda: (counts["all"] - every) - (counts["own"] - own) >= 1,
            "wake-up of `all` alone by this loop's commit",
        )
        # Another instance's commit wakes `own` again.
        own = counts["own"]
        await asyncio.to_thread(other_world.create_run, new_run("r2"))
        await until("own", lambda: counts["own"] > own, "wake-up of `own` by another instance")
        remove_own()
        remove_all()

    asyncio.run(scenario())


def test_async_hot_path_methods_match_the_blocking_ones(world: World) -> None:
    async def scenario() -> None:
        events = [
            ev("r1", 2, "run_started"),
            ev("r1", 3, "step_created", "0", name=STEP, payload="[]"),
            ev("r1", 4, "step_started", "0", attrs={"attempt": 1}),
        ]
        await world.create_run_async(new_run("r1"), Activation("r1", 1, events, "w1", 30.0))
        done = Activation("r1", 4, [ev("r1", 5, "step_completed", "0", payload='"out"')], "w1", 1)
        assert await world.finish_step_async(outcome("r1"), done)
        await world.create_run_async(new_run("r2"))
        (task,), _ = await world.claim_due_async(DEP, "w1", 10, 30.0)
        end = [ev("r2", 2, "run_started"), ev("r2", 3, "run_completed", payload="1")]
        assert await world.commit_activation_async(Activation("r2", 1, end, "w1", 30.0))
        assert task.run_id == "r2"

    asyncio.run(scenario())
    assert types(world, "r1")[-1] == "step_completed"
    assert world.get_run("r2").status == "completed"  # type: ignore[union-attr]


def test_create_run_async_answers_once_committed_and_survives_a_cancelled_caller(
    world: World,
) -> None:
    async def scenario() -> list[str]:
        created: list[str] = []
        record = await world.create_run_async(
            new_run("r1"), None, lambda made: created.append(made.run_id)
        )
        assert record.run_id == "r1"
        # A caller that stops waiting (its task cancelled, a worker's drain timing out)
        # leaves the write to commit, and the World able to take the next ones.
        abandoned = asyncio.ensure_future(
            world.create_run_async(new_run("r2"), None, lambda made: created.append(made.run_id))
        )
        await asyncio.sleep(0)
        abandoned.cancel()
        await asyncio.gather(abandoned, return_exceptions=True)
        await world.create_run_async(new_run("r3"))
        return created

    assert asyncio.run(asyncio.wait_for(scenario(), 30)) == ["r1", "r2"]
    assert [r.run_id for r in world.list_runs(RunFilter())] == ["r3", "r2", "r1"]


# -- hooks -------------------------------------------------------------------------


def with_hook(world: World, run_id: str, token: str, *, webhook: bool = False) -> None:
    """A started run waiting on one hook ("0") with ``token``."""
    world.create_run(new_run(run_id))
    attrs = {"token": token, "webhook": webhook, "metadata": {"who": run_id}}
    events = [ev(run_id, 2, "run_started"), ev(run_id, 3, "hook_created", "0", attrs=attrs)]
    assert world.commit_activation(Activation(run_id, 1, events, "w1", 30.0))


def test_a_hook_is_resumed_by_its_token(world: World) -> None:
    with_hook(world, "r1", "tok-1")
    hook = get_hook(world, "tok-1")
    assert hook is not None
    assert (hook.run_id, hook.hook_id, hook.status, hook.webhook) == ("r1", "0", "active", False)
    assert hook.metadata == {"who": "r1"} and hook.disposed_at is None
    assert claim(world, DEP, "w1", 10, 30.0) == []  # waiting: nothing to do
    assert world.resume_hook("tok-1", '"payload"') == "r1"
    last = world.list_events("r1")[-1]
    assert (last.type, last.correlation_id, last.payload) == ("hook_received", "0", '"payload"')
    (task,) = claim(world, DEP, "w1", 10, 30.0)
    assert (task.kind, task.run_id) == ("workflow", "r1")
    assert world.resume_hook("tok-1", '"again"') == "r1"  # a hook takes many payloads
    assert_dense(world, "r1")


def test_unknown_disposed_and_non_webhook_tokens_are_not_found(world: World) -> None:
    with pytest.raises(HookNotFoundError):
        world.resume_hook("nope", "1")
    with_hook(world, "r1", "tok-plain")
    with pytest.raises(HookNotFoundError):
        world.resume_hook("tok-plain", "1", webhook_only=True)
    with_hook(world, "r2", "tok-web", webhook=True)
    assert world.resume_hook("tok-web", "1", webhook_only=True) == "r2"
    world.cancel_runs(["r1"])
    assert types(world, "r1")[-2:] == ["hook_disposed", "run_cancelled"]
    assert world.list_events("r1")[-2].attrs == {"reason": "run cancelled"}
    hook = get_hook(world, "tok-plain")
    assert hook is not None and hook.status == "disposed" and hook.disposed_at is not None
    with pytest.raises(HookNotFoundError):
        world.resume_hook("tok-plain", "1")
    assert_dense(world, "r1")


def test_a_token_held_by_an_active_hook_is_a_conflict(world: World) -> None:
    with_hook(world, "r1", "shared")
    with_hook(world, "r2", "shared")
    assert [(h.run_id, h.status) for h in world.list_hooks()] == [
        ("r1", "active"),
        ("r2", "conflict"),
    ]
    last = world.list_events("r2")[-1]
    assert (last.type, last.correlation_id) == ("hook_disposed", "0")
    assert last.attrs == {"reason": "conflict", "token": "shared"}
    assert_dense(world, "r2")
    assert world.resume_hook("shared", "1") == "r1"
    assert [h.run_id for h in world.list_hooks(run_id="r2")] == ["r2"]
    assert [h.run_id for h in world.list_hooks(status="active")] == ["r1"]
    # Once the holder's run ends, the token is free for a new hook.
    world.cancel_runs(["r1"])
    with_hook(world, "r3", "shared")
    assert get_hook(world, "shared").run_id == "r3"  # type: ignore[union-attr]
    assert world.resume_hook("shared", "1") == "r3"


def test_a_hook_conflict_makes_the_run_due_at_once(world: World, world_url: str) -> None:
    with_hook(world, "r1", "shared")
    with_hook(world, "r2", "shared")
    assert [t.run_id for t in claim(world, DEP, "w1", 10, 30.0)] == ["r2"]


# -- streams -------------------------------------------------------------------------


def test_streams_append_read_and_close(world: World) -> None:
    assert world.read_chunks("s1", 0, 10) == ([], None)
    assert world.append_chunks("s1", "r1", "default", ["a", "b"], False) == 2
    assert world.append_chunks("s1", "r1", "default", ["c"], False) == 3
    chunks, stream = world.read_chunks("s1", 0, 10)
    assert [(c.index, c.data) for c in chunks] == [(0, "a"), (1, "b"), (2, "c")]
    assert stream is not None and (stream.next_index, stream.closed) == (3, False)
    assert [c.data for c in world.read_chunks("s1", 1, 1)[0]] == ["b"]
    assert [c.data for c in world.read_chunks("s1", -2, 10)[0]] == ["b", "c"]
    assert [c.data for c in world.read_chunks("s1", -9, 10)[0]] == ["a", "b", "c"]
    assert world.append_chunks("s1", "r1", "default", [], True) == 3
    chunks, stream = world.read_chunks("s1", 3, 10)
    assert chunks == [] and stream is not None and stream.closed and stream.closed_at
    with pytest.raises(StreamClosedError, match="s1") as closed:
        world.append_chunks("s1", "r1", "default", ["d"], False)
    assert isinstance(closed.value, TetherError) and isinstance(closed.value, ValueError)
    world.append_chunks("s2", "r2", "logs", ["x"], True)
    assert [s.stream_id for s in world.list_streams()] == ["s1", "s2"]
    (only,) = world.list_streams(run_id="r2")
    assert (only.namespace, only.run_id, only.closed) == ("logs", "r2", True)


def test_concurrent_writers_of_one_stream_lose_no_chunk(world: World, other_world: World) -> None:
    def write(target: World, name: str) -> None:
        for i in range(20):
            target.append_chunks("s1", "r1", "default", [f"{name}{i}"], False)

    threads = [
        threading.Thread(target=write, args=(world, "a")),
        threading.Thread(target=write, args=(other_world, "b")),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    chunks, stream = world.read_chunks("s1", 0, 100)
    assert [c.index for c in chunks] == list(range(40))
    assert sorted(c.data for c in chunks) == sorted(
        [f"a{i}" for i in range(20)] + [f"b{i}" for i in range(20)]
    )
    assert stream is not None and stream.next_index == 40


def test_a_chunk_from_another_instance_wakes_readers(world: World, other_world: World) -> None:
    def write() -> None:
        other_world.append_chunks("s1", "r1", "default", ["hello"], False)

    assert seconds_to_wake(world, other_world, write) < 2.0


def test_a_fork_starts_with_its_history_and_derives_its_views_from_it(world: World) -> None:
    history = [
        ev("f1", 2, "run_started"),
        ev("f1", 3, "step_created", "0", name=STEP, payload="[[1], {}]"),
        ev("f1", 4, "step_started", "0", attrs={"attempt": 1}),
        ev("f1", 5, "step_completed", "0", payload='"one"'),
        ev("f1", 6, "wait_created", "1", attrs={"resume_at": CLOCK.time() + 3600}),
        ev("f1", 7, "step_created", "2", name=STEP, payload="[[2], {}]"),
    ]
    made = world.fork_run(new_run("f1", forked_from="r0", fork_point=3, seed="r0"), history)
    assert (made.run_id, made.status, made.last_seq) == ("f1", "running", 7)
    events = world.list_events("f1")
    assert [e.type for e in events] == ["run_created", *[e.type for e in history]]
    assert events[0].attrs == {
        "deployment_id": DEP,
        "forked_from": "r0",
        "fork_point": 3,
        "seed": "r0",
    }
    steps = {s.step_id: (s.status, s.output) for s in world.list_steps("f1")}
    assert steps == {"0": ("completed", '"one"'), "2": ("pending", None)}
    (wait,) = world.list_waits("f1")
    assert (wait.status, wait.resume_at) == ("waiting", CLOCK.time() + 3600)
    # Due now: the step asked for and not answered, and the run's first activation.
    due = {(t.kind, t.step_id) for t in claim(world, DEP, "w1", 10, 30.0)}
    assert due == {("step", "2"), ("workflow", "")}
    assert_dense(world, "f1")
    count = len(world.list_events("f1"))
    # A named fork that exists already is returned, and nothing more is written.
    again = world.fork_run(new_run("f1", if_absent=True, forked_from="r0", fork_point=3), [])
    assert again.created_at == made.created_at and len(world.list_events("f1")) == count
