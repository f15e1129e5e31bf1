"""The two projections of events onto the views agree: SQLite's (Python), PostgreSQL's (SQL).

SQLite derives runs, steps, waits, hooks and tasks from each event in Python
(``worlds/sqlite_projection.py``); PostgreSQL does it in its ``tether_append``
function (migrations 0005, 0006). Hypothesis drives both Worlds through the
same random but valid history, through their public methods, on one clock,
and every row of every view must come out the same.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conformance.backends import admin, fresh_schema
from tether.clock import ManualClock
from tether.errors import HookNotFoundError
from tether.worlds.base import World
from tether.worlds.postgres import PostgresWorld
from tether.worlds.records import (
    Activation,
    EventRecord,
    NewRun,
    RunRecord,
    StepOutcome,
    WorkerInfo,
)
from tether.worlds.sqlite import SqliteWorld

WF = "workflow//tests.projection//flow"
STEP = "step//tests.projection//act"
DEPLOYMENTS = ("dep-a", "dep-b")
#: w1 is registered (on PostgreSQL its commits take the fast path), w2 is not.
WORKERS = ("w1", "w2")
#: Few tokens, so that hooks often conflict.
TOKENS = ("t0", "t1", "t2")
STREAMS = ("s0", "s1")
#: Every table a World derives or keeps, with the columns compared (not ``task_id``:
#: PostgreSQL's identity skips the values its upserts drew, SQLite's does not).
VIEWS = {
    "runs": "run_id, workflow_name, deployment_id, status, input, output, error,"
    " parent_run_id, rerun_of, created_at, started_at, completed_at, last_seq",
    "events": "run_id, seq, type, correlation_id, name, payload, attrs, created_at",
    "steps": "run_id, step_id, step_name, status, attempt, input, output, error,"
    " created_at, started_at, completed_at, retry_at",
    "waits": "run_id, wait_id, status, resume_at, created_at, completed_at",
    "hooks": "run_id, hook_id, token, status, webhook, metadata, created_at, disposed_at",
    "tasks": "kind, run_id, step_id, deployment_id, available_at, lease_owner",
    "streams": "stream_id, run_id, namespace, next_index, closed, created_at, closed_at",
    "stream_chunks": "stream_id, idx, data, created_at",
    "deployments": "deployment_id, environment, manifest, created_at",
    "workers": "worker_id, deployment_id, hostname, pid, started_at, heartbeat_at, stopped_at",
}
#: Columns holding JSON text: each backend spaces it its own way.
JSON_COLUMNS = {("events", 6), ("hooks", 5), ("deployments", 2)}


@dataclasses.dataclass
class Pair:
    """The two Worlds under test on one clock, and a connection to each one's tables."""

    clock: ManualClock
    sqlite: SqliteWorld
    postgres: PostgresWorld
    sqlite_conn: sqlite3.Connection
    postgres_conn: psycopg.Connection[tuple[Any, ...]]

    def reset(self) -> None:
        """Empty every table of both: each example starts from nothing."""
        for table in VIEWS:
            self.sqlite_conn.execute(f"DELETE FROM {table}")
        self.sqlite_conn.commit()
        self.postgres_conn.execute(f"TRUNCATE {', '.join(VIEWS)} RESTART IDENTITY")
        for world in (self.sqlite, self.postgres):
            world.register_worker(WorkerInfo("w1", "dep-a", "production", "host", 1), {})

    def views(self, world: str) -> dict[str, list[tuple[Any, ...]]]:
        """Every row of every view of one World, normalised: ordered, JSON parsed."""
        found: dict[str, list[tuple[Any, ...]]] = {}
        for table, columns in VIEWS.items():
            sql = f"SELECT {columns} FROM {table}"
            if world == "sqlite":
                rows = self.sqlite_conn.execute(sql).fetchall()
            else:
                rows = self.postgres_conn.execute(sql).fetchall()  # type: ignore[call-overload]
            found[table] = sorted((_normalised(table, row) for row in rows), key=repr)
        return found


def _normalised(table: str, row: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(
        json.loads(value)
        if (table, i) in JSON_COLUMNS and value is not None
        # SQLite keeps booleans as 0/1.
        else int(value)
        if isinstance(value, bool)
        else value
        for i, value in enumerate(row)
    )


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    clock = ManualClock()
    with fresh_schema() as url:
        sqlite = SqliteWorld(f"sqlite:///{tmp_path}/projection.db", clock)
        postgres = PostgresWorld(url, clock)
        sqlite_conn = sqlite3.connect(sqlite.path)
        schema = url.rsplit("schema=", 1)[1]
        postgres_conn = admin()
        postgres_conn.execute(f"SET search_path TO {schema}")
        try:
            yield Pair(clock, sqlite, postgres, sqlite_conn, postgres_conn)
        finally:
            sqlite_conn.close()
            postgres_conn.close()
            sqlite.close()
            postgres.close()


# Passing takes about 7 s; a failure's shrinking may take minutes: let it finish.
@pytest.mark.timeout(900)
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_both_projections_derive_the_same_views(pair: Pair, data: st.DataObject) -> None:
    pair.reset()
    history = History(pair, data)
    for _ in range(data.draw(st.integers(5, 30), label="operations")):
        operation = history.step()
        # After every operation: a later one may hide a difference (a claim re-leases).
        sqlite_views, postgres_views = pair.views("sqlite"), pair.views("postgres")
        for table in VIEWS:
            assert sqlite_views[table] == postgres_views[table], f"{table} differ after {operation}"


class History:
    """Draws the next operation from what the World holds, and makes it on both."""

    def __init__(self, pair: Pair, data: st.DataObject) -> None:
        self.pair = pair
        self.data = data
        self.runs: list[str] = []

    def draw(self, strategy: st.SearchStrategy[Any], label: str) -> Any:
        return self.data.draw(strategy, label=label)

    def both(self, operation: Callable[[World], Any]) -> Any:
        """``operation`` on each World: it must answer the same (or raise the same)."""
        answers = [_answer(operation, world) for world in (self.pair.sqlite, self.pair.postgres)]
        assert answers[0] == answers[1], f"the Worlds answered differently: {answers}"
        return answers[0]

    def step(self) -> str:
        """Make the next operation on both Worlds; returns its name."""
        # Weighted towards what moves runs along: activations, outcomes, claims.
        operations = [self.advance, self.claim, self.claim, self.append_chunks]
        if len(self.runs) < 4:
            operations += [self.create_run] * (4 if not self.runs else 1)
        if self.runs:
            operations += [self.commit_activation] * 4 + [self.finish_step] * 4
            operations += [
                self.cancel_runs,
                self.resume_hook,
                self.wake_sleeps,
                self.heartbeat,
                self.release_task,
            ]
        operation = self.draw(st.sampled_from(operations), "operation")
        operation()
        return str(operation.__name__)

    # -- operations ------------------------------------------------------------------

    def create_run(self) -> None:
        run_id = f"r{len(self.runs)}"
        self.runs.append(run_id)
        run = NewRun(run_id, WF, self.draw(st.sampled_from(DEPLOYMENTS), "deployment"), "[]")
        activation = None
        if self.draw(st.booleans(), "with its first activation"):
            events = self.events(run_id, 1, pending=True)
            activation = Activation(run_id, 1, events, "w1", self.lease())
        self.both(lambda world: world.create_run(run, activation))

    def commit_activation(self) -> None:
        run = self.run()
        expected = run.last_seq - self.draw(st.sampled_from([0] * 5 + [1]), "stale by")
        events = self.events(run.run_id, expected, pending=run.status == "pending")
        worker = self.draw(st.sampled_from(WORKERS), "worker")
        activation = Activation(run.run_id, expected, events, worker, self.lease())
        self.both(lambda world: world.commit_activation(activation))

    def finish_step(self) -> None:
        run = self.run()
        steps = self.pair.sqlite.list_steps(run.run_id)
        if not steps:
            return
        running = [step for step in steps if step.status == "running"]
        if running and self.draw(st.integers(0, 4), "a step not running") > 0:
            steps = running
        step = self.draw(st.sampled_from(steps), "step")
        status = self.draw(st.sampled_from(["completed", "failed", "retrying"]), "outcome")
        now = self.pair.clock.time()
        retry_at = now + self.draw(st.sampled_from([0.0, 1.0, 5.0]), "retry in")
        worker = self.draw(st.sampled_from(WORKERS), "worker")
        outcome = StepOutcome(
            run.run_id,
            step.step_id,
            worker,
            status,  # type: ignore[arg-type]
            '"out"',
            max(step.attempt, 1),
            retry_at if status == "retrying" else None,
        )
        activation = None
        if step.status == "running" and self.draw(st.booleans(), "with an activation"):
            # The cached run fed the outcome: it is the activation's first event.
            kind = {"completed": "step_completed", "failed": "step_failed"}.get(
                status, "step_retrying"
            )
            attrs = {"attempt": outcome.attempt}
            seq = run.last_seq + 1
            first = EventRecord(
                run.run_id, seq, kind, step.step_id, payload='"out"', attrs=attrs, created_at=now
            )
            events = [first, *self.events(run.run_id, run.last_seq + 1, pending=False)]
            activation = Activation(run.run_id, run.last_seq, events, worker, self.lease())
        self.both(lambda world: world.finish_step(outcome, activation))

    def claim(self) -> None:
        deployment = self.draw(st.sampled_from(DEPLOYMENTS), "deployment")
        worker = self.draw(st.sampled_from(WORKERS), "worker")
        lease = self.lease()

        def claim_round(world: World) -> list[str]:
            # No limit reached and nothing claimed ahead: what is due is claimed whole,
            # so the answer does not hang on how each database orders equal due times.
            tasks, _ = asyncio.run(world.claim_due_async(deployment, worker, 1000, lease))
            return sorted(repr(dataclasses.replace(task, task_id=0)) for task in tasks)

        self.both(claim_round)

    def cancel_runs(self) -> None:
        run_ids = self.draw(st.lists(st.sampled_from([*self.runs, "nope"]), max_size=3), "runs")
        self.both(lambda world: world.cancel_runs(run_ids))

    def resume_hook(self) -> None:
        token = self.draw(st.sampled_from(TOKENS), "token")
        webhook_only = self.draw(st.booleans(), "webhook only")
        self.both(lambda world: world.resume_hook(token, '"payload"', webhook_only=webhook_only))

    def wake_sleeps(self) -> None:
        run_id = self.run().run_id
        self.both(lambda world: world.wake_sleeps(run_id))

    def heartbeat(self) -> None:
        worker, lease = self.draw(st.sampled_from(WORKERS), "worker"), self.lease()
        self.both(lambda world: world.heartbeat(worker, lease))

    def release_task(self) -> None:
        run_id = self.run().run_id
        step_id = self.draw(st.sampled_from(["", "0", "1", "2"]), "task's step")
        worker = self.draw(st.sampled_from(WORKERS), "worker")
        self.both(lambda world: world.release_task(run_id, step_id, worker, 1.0))

    def append_chunks(self) -> None:
        stream = self.draw(st.sampled_from(STREAMS), "stream")
        chunks = self.draw(st.lists(st.sampled_from(["a", "b"]), max_size=2), "chunks")
        close = self.draw(st.booleans(), "close")
        self.both(lambda world: world.append_chunks(stream, "r0", "default", chunks, close))

    def advance(self) -> None:
        self.pair.clock.advance(self.draw(st.sampled_from([0.5, 1.0, 5.0, 40.0]), "advance"))

    # -- what an activation appends ------------------------------------------------------

    def run(self) -> RunRecord:
        """A run, most likely one still going."""
        runs = [self.pair.sqlite.get_run(run_id) for run_id in self.runs]
        going = [run for run in runs if run is not None and run.status in ("pending", "running")]
        if going and self.draw(st.integers(0, 9), "an ended one") > 0:
            runs = going
        run = self.draw(st.sampled_from(runs), "run")
        assert run is not None
        return run  # type: ignore[no-any-return]

    def lease(self) -> float:
        return float(self.draw(st.sampled_from([1.0, 30.0]), "lease"))

    def events(self, run_id: str, last_seq: int, *, pending: bool) -> list[EventRecord]:
        """What an activation of the run at ``last_seq`` may append: valid, in order."""
        now = self.pair.clock.time()
        steps = self.pair.sqlite.list_steps(run_id)
        waits = self.pair.sqlite.list_waits(run_id)
        hooks = self.pair.sqlite.list_hooks(run_id=run_id)
        # Positions, as the engine numbers a run's commands: one past the last one made.
        taken = [s.step_id for s in steps] + [w.wait_id for w in waits] + [h.hook_id for h in hooks]
        next_id = max((int(cid) + 1 for cid in taken), default=0)
        events: list[EventRecord] = []

        def add(kind: str, cid: str | None = None, **fields: Any) -> None:
            seq = last_seq + len(events) + 1
            events.append(EventRecord(run_id, seq, kind, cid, created_at=now, **fields))

        if pending and self.draw(st.booleans(), "starts"):
            add("run_started")
        for _ in range(self.draw(st.integers(0, 4), "commands")):
            command = self.draw(
                st.sampled_from(["step", "claimed step", "sleep", "hook", "dispose", "wake"]),
                "command",
            )
            cid = str(next_id)
            if command in ("step", "claimed step"):
                add("step_created", cid, name=STEP, payload='["in"]')
                if command == "claimed step":
                    add("step_started", cid, attrs={"attempt": 1})
            elif command == "sleep":
                resume_in = self.draw(st.sampled_from([0.0, 1.0, 10.0]), "sleep for")
                add("wait_created", cid, attrs={"resume_at": now + resume_in})
            elif command == "hook":
                attrs: dict[str, Any] = {
                    "token": self.draw(st.sampled_from(TOKENS), "token"),
                    "webhook": self.draw(st.booleans(), "webhook"),
                }
                if self.draw(st.booleans(), "metadata"):
                    attrs["metadata"] = {"who": run_id}
                add("hook_created", cid, attrs=attrs)
            elif command == "dispose" and hooks:
                add("hook_disposed", self.draw(st.sampled_from(hooks), "hook").hook_id)
            elif command == "wake" and waits:
                add("wait_completed", self.draw(st.sampled_from(waits), "sleep").wait_id)
            next_id += 1
        endings = [None] * 12 + ["run_completed", "run_failed"]
        ending = self.draw(st.sampled_from(endings), "end")
        if ending is not None:
            add(ending, payload='"result"')
        return events


def _answer(operation: Callable[[World], Any], world: World) -> Any:
    """What ``operation`` returned, or what it raised: the World's own errors in full."""
    try:
        return operation(world)
    except (HookNotFoundError, ValueError) as exc:
        return (type(exc).__name__, str(exc))
    except Exception:  # compared between the Worlds, not swallowed: each driver words its own
        return ("database error",)
