"""A PostgreSQL worker's leases stay its own while its writer or its event loop is busy.

A heartbeat queued behind the writer's batches, or behind whatever held the
worker's event loop, came late on a loaded machine: the worker's leases
lapsed, and another worker started its running steps again. The heartbeat
now has a thread and a pooled connection of its own.

This module is also the app its worker processes serve.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import tether
from tests.apps.basic import mark
from tests.conformance.backends import fresh_schema, postgres_world_url
from tests.conformance.probe import claim, query
from tests.integration.busy import held_writer
from tests.integration.processes import WorkerProcess, read_marks, wait_for
from tether import config, step, workflow
from tether.clock import ManualClock
from tether.worlds.postgres import PostgresWorld
from tether.worlds.records import Activation, EventRecord, NewRun, WorkerInfo

DEP = "dep-leases"
WF = "workflow//tests.leases//flow"
STEP = "step//tests.leases//act"
APP = "tests.integration.test_postgres_leases"


@step
def long_step(path: str, seconds: float) -> int:
    time.sleep(seconds)
    mark(path, "long")
    return 1


@workflow
async def with_long_step(path: str, seconds: float) -> int:
    return await long_step(path, seconds)


@workflow
async def holds_the_loop(seconds: float) -> int:
    time.sleep(seconds)  # blocking code in a workflow: the worker's loop waits for it
    return 2


@pytest.fixture
def worlds() -> Iterator[tuple[PostgresWorld, PostgresWorld, ManualClock]]:
    """The worker's World and a peer's, on a fresh schema, reading one manual clock."""
    clock = ManualClock()
    with fresh_schema() as url:
        mine, peer = PostgresWorld(url, clock), PostgresWorld(url, clock)
        try:
            yield mine, peer, clock
        finally:
            mine.close()
            peer.close()


def running_step(world: PostgresWorld, clock: ManualClock, lease: float) -> None:
    """A run whose step "0" runs on worker w1, leased for ``lease`` seconds."""
    world.register_worker(WorkerInfo("w1", DEP, "default", "host", 1), {})
    world.create_run(NewRun("r1", WF, DEP, '"input"'))
    now = clock.time()
    events = [
        EventRecord("r1", 2, "run_started", created_at=now),
        EventRecord("r1", 3, "step_created", "0", name=STEP, payload='"in"', created_at=now),
        EventRecord("r1", 4, "step_started", "0", attrs={"attempt": 1}, created_at=now),
    ]
    assert world.commit_activation(Activation("r1", 1, events, "w1", lease))


def test_a_heartbeat_is_not_held_up_by_a_busy_writer(
    worlds: tuple[PostgresWorld, PostgresWorld, ManualClock],
) -> None:
    mine, peer, clock = worlds
    running_step(mine, clock, lease=2.0)
    with held_writer(mine):
        beat = threading.Thread(target=mine.heartbeat, args=("w1", 60.0))
        beat.start()
        beat.join(10)
        assert not beat.is_alive(), "the heartbeat waited for the writer's batch"
        clock.advance(30)  # the first lease ran out; the heartbeat's has not
        assert claim(peer, DEP, "w2", 10, 60.0) == []
    clock.advance(31)  # no beat since: the step is free for the peer to take
    (task,) = claim(peer, DEP, "w2", 10, 60.0)
    assert (task.kind, task.step_id) == ("step", "0")


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL schema, configured as this process's World."""
    yield from postgres_world_url()


def test_a_worker_whose_event_loop_is_held_keeps_its_leases(pg_url: str, tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    first = WorkerProcess(pg_url, [APP], tmp_path / "first.log", env={"TETHER_DEPLOYMENT_ID": DEP})
    long = tether.start(with_long_step, [str(marks), 9.0], deployment_id=DEP)
    world = config.resolve_world()
    wait_for(
        lambda: any(s.status == "running" for s in world.list_steps(long.run_id)),
        20,
        "the long step to start",
    )
    # The first worker takes the loop-holding run too, while it is alone.
    held = tether.start(holds_the_loop, [7.0], deployment_id=DEP)
    wait_for(
        lambda: bool(
            query(
                world,
                "SELECT 1 FROM tasks WHERE run_id = ? AND lease_owner IS NOT NULL",
                (held.run_id,),
            )
        ),
        20,
        "the first worker to take the run that holds its loop",
    )
    # A peer comes while the first worker's loop is held, for longer than a lease
    # (2 s): had its heartbeats stopped, the peer would run the long step again.
    second = WorkerProcess(
        pg_url, [APP], tmp_path / "second.log", env={"TETHER_DEPLOYMENT_ID": DEP}
    )
    try:
        status = world.get_run(held.run_id)
        assert status is not None and status.status != "completed", "the peer came too late"
        assert held.result(timeout=60) == 2
        assert long.result(timeout=60) == 1
    finally:
        second.stop()
        first.stop()
    assert [pid for label, pid in read_marks(marks)] == [first.pid]
    (only,) = world.list_steps(long.run_id)
    assert only.attempt == 1
