"""Replays asked of live workers: the ``check_requests`` table, reached from the schema before it.

Each World is built as the tether before the table did it (its migrations
up to then, a run of that time in it), then opened by this tether: the
migration adds the table, the old run reads back as it was, and a request
goes the whole way (asked, taken once, answered once, dropped).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.conformance.older import older_world
from tether.clock import ManualClock
from tether.worlds.operations import CHECK_KEPT_SECONDS, CHECK_LEASE_SECONDS
from tether.worlds.records import CheckRequest, RunFilter

#: The last migration of each backend before ``check_requests``.
BEFORE = {"sqlite": 4, "postgres": 7}


def test_sqlite_migration_0006_indexes_a_deployments_runs(tmp_path: Path) -> None:
    """From the schema of the tether before it: the old run reads, the index serves."""
    with older_world("sqlite", tmp_path, ManualClock(), last=5) as world:
        assert world.count_runs(RunFilter(deployment_id="dep")) == {"pending": 1}
        path = world.url.split("sqlite:///", 1)[1]
    with sqlite3.connect(path) as conn:
        plan = conn.execute(
            "EXPLAIN QUERY PLAN SELECT status, COUNT(*) FROM runs WHERE deployment_id = 'dep'"
            " GROUP BY status"
        ).fetchall()
    assert any("runs_by_deployment" in str(row) for row in plan), plan


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_check_request_goes_the_whole_way_in_a_world_an_older_tether_made(
    backend: str, tmp_path: Path
) -> None:
    clock = ManualClock()
    with older_world(backend, tmp_path, clock, BEFORE[backend]) as world:
        old = world.get_run("old-1")
        assert old is not None and (old.status, old.input) == ("pending", "[[],{}]")

        assert world.take_check("dep", "w1") is None  # nothing asked
        world.ask_check(CheckRequest("q1", "dep", '{"runs": [["old-1", null]]}', clock.time()))
        world.ask_check(CheckRequest("q2", "dep", '{"runs": []}', clock.time() + 1))
        assert world.take_check("other", "w1") is None  # asked of another deployment
        first = world.take_check("dep", "w1")
        assert first is not None and (first.request_id, first.taken_by) == ("q1", "w1")
        assert first.body == '{"runs": [["old-1", null]]}' and first.answer is None
        second = world.take_check("dep", "w2")
        assert second is not None and second.request_id == "q2"  # q1 is w1's
        assert world.take_check("dep", "w3") is None

        # w1 died: once its hold passes, another live worker takes q1 over.
        clock.advance(CHECK_LEASE_SECONDS + 1)
        again = world.take_check("dep", "w3")
        assert again is not None and (again.request_id, again.taken_by) == ("q1", "w3")

        world.answer_check("q1", '[{"late": false}]')
        world.answer_check("q1", '[{"late": true}]')  # w1 woke up: the first answer stays
        answered = world.get_check("q1")
        assert answered is not None and answered.answer == '[{"late": false}]'
        clock.advance(CHECK_LEASE_SECONDS + 1)
        assert world.take_check("dep", "w4") is not None  # q2, never answered
        assert world.take_check("dep", "w4") is None  # an answered request is not taken

        world.drop_check("q1")
        assert world.get_check("q1") is None
        # A request its asker left behind is dropped with the next one dropped, in time.
        clock.advance(CHECK_KEPT_SECONDS)
        world.drop_check("none")
        assert world.get_check("q2") is None
