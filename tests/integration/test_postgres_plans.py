"""The PostgreSQL World's statements keep finding rows by key as its tables grow.

A connection keeps the plans of its prepared statements and of PL/pgSQL
function bodies, made from the statistics of the moment: on a new database,
those of empty tables. A statement whose plan could go wrong then reads every
active run on each call, for the connection's whole life. These tests start
from an empty schema, grow it, and count the rows the server read.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.conformance.backends import admin, fresh_schema
from tether.worlds.postgres import PostgresWorld
from tether.worlds.records import Activation, EventRecord, NewRun, StepOutcome, WorkerInfo

DEP = "dep-plans"
WF = "workflow//tests.plans//flow"
RUNS = 300


@pytest.fixture
def schema_url() -> Iterator[str]:
    with fresh_schema() as url:
        yield url


def ev(run_id: str, seq: int, kind: str, cid: str | None = None, **fields: object) -> EventRecord:
    return EventRecord(run_id, seq, kind, cid, created_at=time.time(), **fields)  # type: ignore[arg-type]


def runs_rows_read(schema: str, updates_at_least: int) -> int:
    """Rows read from ``runs`` (by scans and through every index), once the stats are in."""
    deadline = time.monotonic() + 15
    with admin() as conn:
        while True:
            row = conn.execute(
                "SELECT t.seq_tup_read, t.n_tup_upd,"
                " (SELECT sum(idx_tup_read) FROM pg_stat_user_indexes i WHERE i.relid = t.relid)"
                " FROM pg_stat_user_tables t WHERE t.schemaname = %s AND t.relname = 'runs'",
                (schema,),
            ).fetchone()
            assert row is not None
            seq_read, updated, index_read = row
            if updated >= updates_at_least or time.monotonic() > deadline:
                assert updated >= updates_at_least, "the server never reported the writes"
                return int(seq_read) + int(index_read or 0)
            time.sleep(0.2)


def test_step_commits_read_one_run_each_however_many_are_active(schema_url: str) -> None:
    schema = schema_url.rsplit("schema=", 1)[1]
    world = PostgresWorld(schema_url)
    try:
        world.register_worker(WorkerInfo("w1", DEP, "production", "host", 1), {})
        for i in range(RUNS):
            run_id = f"r{i:04d}"
            first = [
                ev(run_id, 2, "run_started"),
                ev(run_id, 3, "step_created", "0", name="step//t//s", payload="[]"),
                ev(run_id, 4, "step_started", "0", attrs={"attempt": 1}),
            ]
            world.create_run(
                NewRun(run_id, WF, DEP, "[]"), Activation(run_id, 1, first, "w1", 30.0)
            )
        # Every run is active; each step outcome now takes the writer's fast path,
        # whose check locks the run: it must find it by key, not among the others.
        for i in range(RUNS):
            run_id = f"r{i:04d}"
            done = Activation(
                run_id, 4, [ev(run_id, 5, "step_completed", "0", payload="1")], "w1", 30.0
            )
            outcome = StepOutcome(run_id, "0", "w1", "completed", "1", 1)
            assert world.finish_step(outcome, done)
    finally:
        world.close()  # a closing connection reports its statistics
    # Each run was updated twice (created's activation, the step's outcome).
    read = runs_rows_read(schema, updates_at_least=2 * RUNS)
    # A handful of rows per commit; a scan of the active runs would be ~RUNS / 2 each.
    assert read < 10 * RUNS, f"{read} rows of runs read for {RUNS} step commits"
