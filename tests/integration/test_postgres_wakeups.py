"""Whom a PostgreSQL commit wakes: one live worker of the deployment, not each of them.

Each World's listener connection hears NOTIFYs in commit order, so a wide
wake-up committed after the starts is a barrier: once every World heard it,
every World has heard whatever the starts sent it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from tests.conformance.backends import fresh_schema
from tether.worlds.postgres import PostgresWorld
from tether.worlds.postgres_listener import WORK_CHANNEL, WORKER_PREFIX
from tether.worlds.records import NewRun, WorkerInfo
from tether.worlds.signals import is_work_for

DEP = "dep-wake"
#: The barrier's deployment: no worker serves it.
BARRIER_DEP = "dep-barrier"
WF = "workflow//tests.wakeups//flow"


class Heard:
    """The (channel, signal) pairs each World's listener heard, in order."""

    def __init__(self, worlds: list[PostgresWorld]) -> None:
        self.lists: list[list[tuple[str, str]]] = [[] for _ in worlds]
        self.changed = threading.Condition()
        for i, world in enumerate(worlds):
            world._listener._heard = self._recorder(i, world._listener._heard)

    def _recorder(self, i: int, heard: Callable[[str, str], None]) -> Callable[[str, str], None]:
        def record(channel: str, signal: str) -> None:
            with self.changed:
                self.lists[i].append((channel, signal))
                self.changed.notify_all()
            heard(channel, signal)

        return record

    def wait(self, what: str, done: Callable[[list[list[tuple[str, str]]]], bool]) -> None:
        deadline = time.monotonic() + 20
        with self.changed:
            while not done(self.lists):
                left = deadline - time.monotonic()
                assert left > 0, f"{what}: heard only {self.lists}"
                self.changed.wait(left)

    def by_name(self) -> list[int]:
        """How many wake-ups by name (a worker's own channel) each World heard."""
        return [sum(ch.startswith(WORKER_PREFIX) for ch, _ in heard) for heard in self.lists]


@pytest.fixture
def open_world() -> Iterator[Callable[[], PostgresWorld]]:
    """Opens Worlds on a fresh schema; each is closed after the test."""
    opened: list[PostgresWorld] = []
    with fresh_schema() as url:

        def open_one() -> PostgresWorld:
            opened.append(PostgresWorld(url))
            return opened[-1]

        try:
            yield open_one
        finally:
            for world in opened:
                world.close()


def workers_of(
    open_world: Callable[[], PostgresWorld], count: int
) -> tuple[list[PostgresWorld], Heard]:
    """``count`` Worlds, each with a worker of DEP and a work listener, listening."""
    worlds = [open_world() for _ in range(count)]
    heard = Heard(worlds)
    for i, world in enumerate(worlds):
        world.register_worker(WorkerInfo(f"w{i}", DEP, "production", "host", i), {})
        world.add_listener(lambda: None, work_only=True, deployment_id=DEP)
    # Each listener reports once it listens (commits before then went unheard).
    heard.wait("listening", lambda lists: all(lists))
    return worlds, heard


def start_runs(world: PostgresWorld, count: int) -> None:
    for i in range(count):
        world.create_run(NewRun(f"run-{i}-{time.monotonic_ns()}", WF, DEP, "[]"))


def barrier(world: PostgresWorld, heard: Heard) -> None:
    """A wide wake-up after everything committed so far; returns once every World heard it.

    It is work for a deployment no worker serves, so it goes to WORK_CHANNEL and
    names that deployment: a signal heard together with it is merged into it
    (``merge_signals``), and what it said is still there.
    """
    before = [len(h) for h in heard.lists]
    world.create_run(NewRun(f"barrier-{time.monotonic_ns()}", WF, BARRIER_DEP, "[]"))
    heard.wait(
        "the barrier",
        lambda lists: all(
            any(ch == WORK_CHANNEL and is_work_for(s, BARRIER_DEP) and s != "w" for ch, s in h[n:])
            for h, n in zip(lists, before, strict=True)
        ),
    )


def work_for_dep_on_the_shared_channel(heard: list[tuple[str, str]]) -> list[str]:
    """The signals on WORK_CHANNEL that name DEP (not a listener's own "w")."""
    return [s for ch, s in heard if ch == WORK_CHANNEL and s != "w" and is_work_for(s, DEP)]


def test_a_start_wakes_one_of_the_deployments_workers(
    open_world: Callable[[], PostgresWorld],
) -> None:
    _, heard = workers_of(open_world, 3)
    client = open_world()
    start_runs(client, 12)
    barrier(client, heard)
    woken = heard.by_name()
    # Each start woke one worker, by name (wake-ups that reach a listener together
    # are heard as one), none on the channel every worker hears; all equally idle, the
    # same one each time: work packs onto one process.
    assert 1 <= sum(woken) <= 12, heard.lists
    assert sum(1 for n in woken if n) == 1, woken
    for h in heard.lists:
        assert not work_for_dep_on_the_shared_channel(h), h


def test_work_goes_to_the_busiest_worker_with_room_then_spills(
    open_world: Callable[[], PostgresWorld],
) -> None:
    worlds, heard = workers_of(open_world, 3)
    client = open_world()

    def beat(*loads: float) -> None:
        """Each worker's load, in a beat just now (all three stay live meanwhile)."""
        for i, load in enumerate(loads):
            worlds[i].heartbeat(f"w{i}", 10.0, load)

    beat(0.95, 0.5, 0.1)  # w0 is busy (BUSY_LOAD is 0.8)
    start_runs(client, 6)
    barrier(client, heard)
    first = heard.by_name()
    assert first[1] >= 1 and first[0] == first[2] == 0, heard.lists
    beat(0.95, 0.9, 0.1)  # w1 fills up too: w2 is the one with room
    start_runs(client, 6)
    barrier(client, heard)
    second = [n - m for n, m in zip(heard.by_name(), first, strict=True)]
    assert second[2] >= 1 and second[0] == second[1] == 0, heard.lists
    beat(0.95, 0.9, 1.0)  # all busy: the least busy of them
    start_runs(client, 6)
    barrier(client, heard)
    third = [n - m - k for n, m, k in zip(heard.by_name(), first, second, strict=True)]
    assert third[1] >= 1 and third[0] == third[2] == 0, heard.lists


def test_a_draining_worker_is_not_woken_for_new_work(
    open_world: Callable[[], PostgresWorld],
) -> None:
    worlds, heard = workers_of(open_world, 2)
    client = open_world()
    worlds[0].worker_draining("w0")
    start_runs(client, 8)
    barrier(client, heard)
    named = heard.by_name()
    assert named[0] == 0 and named[1] >= 1, heard.lists


def test_work_with_no_live_worker_to_name_wakes_them_all(
    open_world: Callable[[], PostgresWorld],
) -> None:
    worlds, heard = workers_of(open_world, 2)
    client = open_world()
    for i, world in enumerate(worlds):
        world.worker_draining(f"w{i}")
    start_runs(client, 1)
    barrier(client, heard)
    assert heard.by_name() == [0, 0]
    for h in heard.lists:
        assert work_for_dep_on_the_shared_channel(h), h
