"""PostgreSQL's claim: leases taken with ``FOR UPDATE SKIP LOCKED``, in two round trips."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from tether.worlds import schema
from tether.worlds.postgres_writer import PgTx
from tether.worlds.records import TERMINAL_STATUSES, EventRecord, Task
from tether.worlds.sql import RUN_COLUMNS, Row, event_record, run_record
from tether.worlds.sqlworld import ClaimRound

#: How soon a claim tries again for a task whose run another transaction had locked.
BUSY_RUN_RETRY = 0.005
#: A claimed workflow task whose run has at most this many events comes with its run
#: and log, read in the claim's round trip (``Task.run``, ``Task.events``): a run
#: started by a client is activated without a read of its own.
PRELOAD_EVENTS = 8
#: The runs' rows, read once the claim holds the runs' locks.
_LOCK_RUNS = (
    f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ANY(%s) ORDER BY run_id FOR UPDATE SKIP LOCKED"
)
#: The first events of each run (an index range each): a run whose last_seq is within
#: them came whole.
_SHORT_LOGS = (
    "SELECT run_id, seq, type, correlation_id, name, payload, attrs, created_at"
    " FROM events WHERE run_id = ANY(%s) AND seq <= %s ORDER BY run_id, seq"
)


def claim_due(tx: PgTx, request: ClaimRound) -> tuple[list[Task], float | None]:
    """``World.claim_due_async``'s transaction: the claim, and the next due time read with it.

    No read of what is due first: a claim that finds nothing writes nothing,
    so it costs no log flush.
    """
    tasks, handed_back, first = claim(tx, request)
    now = tx.clock.time()
    if len(tasks) >= request.limit:
        return tasks, now
    due = schema.claim_again_at(first, request.ahead)
    if handed_back:
        due = min(due, now + BUSY_RUN_RETRY) if due is not None else now + BUSY_RUN_RETRY
    return tasks, due


def claim(tx: PgTx, request: ClaimRound) -> tuple[list[Task], bool, Row | None]:
    """Lease due tasks; returns them, whether some were handed back (their run was busy),
    and the deployment's first due task after the claim (read in the claim's round trip).
    """
    deployment_id = request.deployment_id
    now = tx.clock.time()
    claimed, first = tx.send(
        (
            "WITH due AS (SELECT task_id, available_at, lease_owner FROM tasks"
            " WHERE deployment_id = %s AND available_at <= %s"
            " AND (available_at <= %s OR (kind = 'workflow' AND lease_owner IS NULL))"
            " ORDER BY available_at LIMIT %s FOR UPDATE SKIP LOCKED)"
            " UPDATE tasks t SET lease_owner = %s, available_at = %s FROM due"
            " WHERE t.task_id = due.task_id"
            " RETURNING t.task_id, t.kind, t.run_id, t.step_id, due.available_at,"
            " due.lease_owner",
            (
                deployment_id,
                now + request.ahead,
                now,
                request.limit,
                request.worker_id,
                now + request.lease_seconds,
            ),
        ),
        (tx.sql.first_due, (deployment_id,)),  # sees the leases just taken
        writes=False,
    )
    # A step leased to this worker whose lease ran out (its heartbeat came late, on a
    # busy machine) runs here still, or its outcome is on its way: the claim renewed
    # its lease, and it must not start a second time.
    rows = sorted(r[:5] for r in claimed if not (r[1] == "step" and r[5] == request.worker_id))
    first_due = first[0] if first else None
    tx.wrote = tx.wrote or bool(claimed)  # leases taken (own steps' renewed too)
    if not rows:
        return [], False, first_due
    due_at = {row[0]: row[4] for row in rows}
    steps = [(run_id, step_id) for _, kind, run_id, step_id, _ in rows if kind == "step"]
    # Lock the runs before appending step_started; the steps are read by a later
    # statement, after the locks are granted. Everyone else locks a run before its
    # tasks, so a claim, holding tasks, must not wait for a run: SKIP LOCKED, and
    # the tasks of a run busy elsewhere are handed back, due again in a moment.
    run_ids = sorted({row[2] for row in rows})
    # Timers claimed ahead of their time wait here: their logs may move meanwhile.
    fresh = sorted({row[2] for row in rows if row[1] == "workflow" and row[4] <= now})
    queries: list[tuple[str, Sequence[Any]]] = [
        (_LOCK_RUNS, (run_ids,)),
        (
            "SELECT s.run_id, s.step_id, s.step_name, s.status, s.attempt, s.input FROM steps s"
            " JOIN unnest(%s::text[], %s::text[]) AS k(run_id, step_id)"
            " ON s.run_id = k.run_id AND s.step_id = k.step_id",
            ([r for r, _ in steps], [s for _, s in steps]),
        ),
    ]
    if fresh:
        queries.append((_SHORT_LOGS, (fresh, PRELOAD_EVENTS)))
    answers = tx.send(*queries)
    records = {row[0]: run_record(row) for row in answers[0]}
    runs = {run_id: (r.status, r.last_seq) for run_id, r in records.items()}
    step_rows = {(row[0], row[1]): row[2:] for row in answers[1]}
    short: dict[str, list[EventRecord]] = {}
    for row in answers[2] if fresh else []:
        short.setdefault(row[0], []).append(event_record(row))
    busy: set[str] = set()
    if len(runs) < len(run_ids):
        # Missing: locked by another transaction, or gone (then the task is dropped).
        missing = [r for r in run_ids if r not in runs]
        busy = {
            row[0] for row in tx.query("SELECT run_id FROM runs WHERE run_id = ANY(%s)", (missing,))
        }
    tasks: list[Task] = []
    dropped: list[int] = []
    handed_back: list[int] = []
    for task_id, kind, run_id, step_id, _ in rows:
        state = runs.get(run_id)
        if run_id in busy:
            handed_back.append(task_id)
            continue
        if state is None or state[0] in TERMINAL_STATUSES:
            dropped.append(task_id)
            continue
        if kind == "workflow":
            log = short.get(run_id)
            task = Task(task_id, "workflow", run_id, deployment_id, due_at=due_at[task_id])
            if log is not None and len(log) == state[1]:  # the whole log, as the row says
                task = dataclasses.replace(task, run=records[run_id], events=tuple(log))
            tasks.append(task)
            continue
        step = step_rows.get((run_id, step_id))
        if step is None or step[1] in ("completed", "failed"):
            dropped.append(task_id)
            continue
        step_name, _, attempt, step_input = step
        last_seq = state[1] + 1
        runs[run_id] = (state[0], last_seq)
        started = EventRecord(
            run_id,
            last_seq,
            "step_started",
            step_id,
            attrs={"attempt": attempt + 1},
            created_at=now,
        )
        tx.append(run_id, deployment_id, [started], None)
        task = Task(task_id, "step", run_id, deployment_id, step_id, step_name, step_input)
        tasks.append(dataclasses.replace(task, attempt=attempt + 1, due_at=due_at[task_id]))
    # A step of the same run claimed in this round moved its log on: no preload then.
    tasks = [
        t if t.events is None or runs[t.run_id][1] == len(t.events) else _unloaded(t) for t in tasks
    ]
    if dropped:
        tx.execute("DELETE FROM tasks WHERE task_id = ANY(%s)", (dropped,))
    if handed_back:
        # Due again in a moment, or at its time if it was taken ahead of it.
        tx.execute(
            "UPDATE tasks t SET lease_owner = NULL, available_at = GREATEST(b.due_at, %s)"
            " FROM unnest(%s::bigint[], %s::double precision[]) AS b(task_id, due_at)"
            " WHERE t.task_id = b.task_id",
            (now + BUSY_RUN_RETRY, handed_back, [due_at[t] for t in handed_back]),
        )
    return tasks, bool(handed_back), first_due


def _unloaded(task: Task) -> Task:
    return dataclasses.replace(task, run=None, events=None)
