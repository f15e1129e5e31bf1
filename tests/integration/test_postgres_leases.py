"""A PostgreSQL worker's leases stay its own while its World's writer is busy.

A heartbeat queued behind the writer's batches came late on a loaded
machine: the worker's leases lapsed, and another worker started its running
steps again. The heartbeat now takes a pooled connection of its own.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from tests.conformance.backends import fresh_schema
from tests.conformance.probe import claim
from tether.clock import ManualClock
from tether.worlds.operations import Tx
from tether.worlds.postgres import PostgresWorld
from tether.worlds.records import Activation, EventRecord, NewRun, WorkerInfo

DEP = "dep-leases"
WF = "workflow//tests.leases//flow"
STEP = "step//tests.leases//act"


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
    # The writer stuck in a batch (a slow commit, a long queue).
    in_batch, release = threading.Event(), threading.Event()

    def stuck(_: Tx) -> None:
        in_batch.set()
        release.wait(30)

    held = mine._writer.submit(stuck, None)
    try:
        assert in_batch.wait(10)
        beat = threading.Thread(target=mine.heartbeat, args=("w1", 60.0))
        beat.start()
        beat.join(10)
        assert not beat.is_alive(), "the heartbeat waited for the writer's batch"
        clock.advance(30)  # the first lease ran out; the heartbeat's has not
        assert claim(peer, DEP, "w2", 10, 60.0) == []
    finally:
        release.set()
        held.result(10)
    clock.advance(31)  # no beat since: the step is free for the peer to take
    (task,) = claim(peer, DEP, "w2", 10, 60.0)
    assert (task.kind, task.step_id) == ("step", "0")
