"""PostgreSQL's claim: leases taken with ``FOR UPDATE SKIP LOCKED``, in two round trips."""

from __future__ import annotations

import dataclasses

from tether.worlds import schema
from tether.worlds.postgres_writer import Cursor, PgTx
from tether.worlds.records import TERMINAL_STATUSES, EventRecord, Task
from tether.worlds.sqlworld import ClaimRound

#: How soon a claim tries again for a task whose run another transaction had locked.
BUSY_RUN_RETRY = 0.005


def claim_due(tx: PgTx, request: ClaimRound) -> tuple[list[Task], float | None]:
    """``World.claim_due_async``'s transaction: the claim, and the next due time read with it.

    No read of what is due first: a claim that finds nothing writes nothing,
    so it costs no log flush.
    """
    next_due = tx.cur.connection.cursor()
    tasks, handed_back = claim(tx, request, next_due)
    now = tx.clock.time()
    if len(tasks) >= request.limit:
        return tasks, now
    row = next_due.fetchone()  # arrived with the claim's rows: no round trip of its own
    due = schema.claim_again_at(row, request.ahead)
    if handed_back:
        due = min(due, now + BUSY_RUN_RETRY) if due is not None else now + BUSY_RUN_RETRY
    return tasks, due


def claim(tx: PgTx, request: ClaimRound, next_due: Cursor | None = None) -> tuple[list[Task], bool]:
    """Lease due tasks; returns them and whether some were handed back (their run was busy).

    ``next_due``, if given, is sent the deployment's first due task query in
    the claim's round trip (it sees the leases just taken).
    """
    deployment_id = request.deployment_id
    now = tx.clock.time()
    tx.cur.execute(
        "WITH due AS (SELECT task_id, available_at FROM tasks"
        " WHERE deployment_id = %s AND available_at <= %s"
        " AND (available_at <= %s OR (kind = 'workflow' AND lease_owner IS NULL))"
        " ORDER BY available_at LIMIT %s FOR UPDATE SKIP LOCKED)"
        " UPDATE tasks t SET lease_owner = %s, available_at = %s FROM due"
        " WHERE t.task_id = due.task_id"
        " RETURNING t.task_id, t.kind, t.run_id, t.step_id, due.available_at",
        (
            deployment_id,
            now + request.ahead,
            now,
            request.limit,
            request.worker_id,
            now + request.lease_seconds,
        ),
    )
    if next_due is not None:
        next_due.execute(tx.sql.first_due, (deployment_id,))  # same round trip as the claim
    rows = sorted(tx.cur.fetchall())
    if not rows:
        return [], False
    due_at = {row[0]: row[4] for row in rows}
    steps = [(run_id, step_id) for _, kind, run_id, step_id, _ in rows if kind == "step"]
    # Lock the runs before appending step_started; the steps are read by a later
    # statement, after the locks are granted. Everyone else locks a run before its
    # tasks, so a claim, holding tasks, must not wait for a run: SKIP LOCKED, and
    # the tasks of a run busy elsewhere are handed back, due again in a moment.
    # Statements that take an array are planned for each execution (prepare=False):
    # a prepared statement's generic plan, made while the table was small, would
    # scan the whole table for ever after.
    run_ids = sorted({row[2] for row in rows})
    tx.cur.execute(
        "SELECT run_id, status, last_seq FROM runs WHERE run_id = ANY(%s) ORDER BY run_id"
        " FOR UPDATE SKIP LOCKED",
        (run_ids,),
        prepare=False,
    )
    tx.aux.execute(
        "SELECT s.run_id, s.step_id, s.step_name, s.status, s.attempt, s.input FROM steps s"
        " JOIN unnest(%s::text[], %s::text[]) AS k(run_id, step_id)"
        " ON s.run_id = k.run_id AND s.step_id = k.step_id",
        ([r for r, _ in steps], [s for _, s in steps]),
        prepare=False,
    )
    runs = {row[0]: (row[1], row[2]) for row in tx.cur.fetchall()}
    step_rows = {(row[0], row[1]): row[2:] for row in tx.aux.fetchall()}
    busy: set[str] = set()
    if len(runs) < len(run_ids):
        # Missing: locked by another transaction, or gone (then the task is dropped).
        tx.cur.execute(
            "SELECT run_id FROM runs WHERE run_id = ANY(%s)",
            ([r for r in run_ids if r not in runs],),
            prepare=False,
        )
        busy = {row[0] for row in tx.cur.fetchall()}
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
            tasks.append(Task(task_id, "workflow", run_id, deployment_id, due_at=due_at[task_id]))
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
    if dropped:
        tx.cur.execute("DELETE FROM tasks WHERE task_id = ANY(%s)", (dropped,), prepare=False)
    if handed_back:
        # Due again in a moment, or at its time if it was taken ahead of it.
        tx.cur.execute(
            "UPDATE tasks t SET lease_owner = NULL, available_at = GREATEST(b.due_at, %s)"
            " FROM unnest(%s::bigint[], %s::double precision[]) AS b(task_id, due_at)"
            " WHERE t.task_id = b.task_id",
            (now + BUSY_RUN_RETRY, handed_back, [due_at[t] for t in handed_back]),
            prepare=False,
        )
    return tasks, bool(handed_back)
