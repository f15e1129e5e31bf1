"""Workers' load, from their heartbeats: the column a migration adds, reached from the schema
before it (PostgreSQL 0009, SQLite 0007)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conformance.older import older_world
from tests.conformance.probe import query
from tether.clock import ManualClock
from tether.worlds.records import WorkerInfo

#: The last migration of each backend before the workers' load.
BEFORE = {"sqlite": 6, "postgres": 8}


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_heartbeat_records_the_load_in_a_world_an_older_tether_made(
    backend: str, tmp_path: Path
) -> None:
    clock = ManualClock()
    with older_world(backend, tmp_path, clock, BEFORE[backend]) as world:
        old = world.get_run("old-1")
        assert old is not None and old.status == "pending"
        world.register_worker(WorkerInfo("w1", "dep", "default", "host", 1), {})
        assert query(world, "SELECT cpu_load FROM workers WHERE worker_id = 'w1'") == [(0.0,)]
        world.heartbeat("w1", 10.0, 0.42)
        assert query(world, "SELECT cpu_load FROM workers WHERE worker_id = 'w1'") == [(0.42,)]
        (status,) = world.list_deployments(None, live_within=60)
        assert status.live_workers == 1
