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

DEP = "dep-wake"
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
    """A wide wake-up after everything committed so far; returns once every World heard it."""
    before = [len(h) for h in heard.lists]
    world.register_worker(WorkerInfo("passing", "dep-other", "production", "host", 0), {})
    world.unregister_worker("passing")  # gives back its leases: work for any deployment
    heard.wait(
        "the barrier",
        lambda lists: all((WORK_CHANNEL, "w") in h[n:] for h, n in zip(lists, before, strict=True)),
    )


def test_a_start_wakes_one_of_the_deployments_workers(
    open_world: Callable[[], PostgresWorld],
) -> None:
    _, heard = workers_of(open_world, 3)
    client = open_world()
    start_runs(client, 12)
    barrier(client, heard)
    woken = heard.by_name()
    # Each start woke one worker, by name (wake-ups that reach a listener together
    # are heard as one), none on the channel every worker hears; the picks spread.
    assert 1 <= sum(woken) <= 12, heard.lists
    assert sum(1 for n in woken if n) >= 2, woken
    for h in heard.lists:
        assert not [s for ch, s in h if ch == WORK_CHANNEL and s != "w"], h


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
        assert (WORK_CHANNEL, f"w:{DEP}") in h, h
