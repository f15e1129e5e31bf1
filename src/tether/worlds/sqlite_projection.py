"""SQLite's projection of events onto the views, in Python, in the writer's transaction.

PostgreSQL does the same on the server (``tether_append``, migrations 0005
to 0007); ``tests/conformance/test_projection.py`` holds the two to the same
result.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from tether.worlds.operations import Tx, queue_workflow
from tether.worlds.records import Activation, EventRecord


def append(
    tx: Tx,
    run_id: str,
    deployment_id: str,
    events: Sequence[EventRecord],
    activation: Activation | None,
) -> bool:
    """Insert events and derive the views from them, in the caller's transaction.

    Returns whether the run must be activated again at once: a hook it
    created lost its token to another hook (``hook_disposed`` was appended).
    The caller queues that after it has scheduled the run's workflow task.
    """
    if not events:
        return False
    _insert_events(tx, run_id, events)
    started_at: float | None = None
    previous: EventRecord | None = None
    conflicts: list[EventRecord] = []
    for index, event in enumerate(events):
        if event.type == "run_started":
            started_at = event.created_at  # folded into the last_seq update below
        elif not (
            # A step claimed in the commit that created it: inserted as running.
            event.type == "step_started"
            and previous is not None
            and previous.type == "step_created"
            and previous.correlation_id == event.correlation_id
        ):
            started = _started_with(event, events[index + 1 : index + 2])
            if _apply(tx, deployment_id, event, activation, started=started):
                conflicts.append(event)
        previous = event
    last_seq = events[-1].seq
    for i, event in enumerate(conflicts, start=1):
        # Answer the request at once: the workflow's hook raises HookConflictError.
        disposed = EventRecord(
            run_id,
            last_seq + i,
            "hook_disposed",
            event.correlation_id,
            attrs={"reason": "conflict", "token": (event.attrs or {}).get("token")},
            created_at=event.created_at,
        )
        _insert_events(tx, run_id, [disposed])
    last_seq += len(conflicts)
    if started_at is None:
        tx.execute("UPDATE runs SET last_seq = ? WHERE run_id = ?", (last_seq, run_id))
    else:
        tx.execute(
            "UPDATE runs SET last_seq = ?, started_at = ?,"
            " status = CASE status WHEN 'pending' THEN 'running' ELSE status END"
            " WHERE run_id = ?",
            (last_seq, started_at, run_id),
        )
    return bool(conflicts)


def schedule_workflow(tx: Tx, run_id: str, deployment_id: str) -> None:
    """After an activation: the run's next workflow task is its earliest pending sleep."""
    tx.execute("DELETE FROM tasks WHERE run_id = ? AND kind = 'workflow'", (run_id,))
    row = tx.query_one(
        "SELECT MIN(resume_at) FROM waits WHERE run_id = ? AND status = 'waiting'", (run_id,)
    )
    if row is not None and row[0] is not None:
        queue_workflow(tx, run_id, deployment_id, float(row[0]))


def _insert_events(tx: Tx, run_id: str, events: Sequence[EventRecord]) -> None:
    tx.executemany(
        "INSERT INTO events (run_id, seq, type, correlation_id, name, payload, attrs, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                run_id,
                e.seq,
                e.type,
                e.correlation_id,
                e.name,
                e.payload,
                json.dumps(e.attrs) if e.attrs else None,
                e.created_at,
            )
            for e in events
        ],
    )


def _started_with(event: EventRecord, following: Sequence[EventRecord]) -> EventRecord | None:
    """The ``step_started`` right after a ``step_created`` in the same commit, if any."""
    if event.type != "step_created" or not following:
        return None
    (after,) = following
    if after.type == "step_started" and after.correlation_id == event.correlation_id:
        return after
    return None


def _apply(
    tx: Tx,
    deployment_id: str,
    e: EventRecord,
    activation: Activation | None,
    *,
    started: EventRecord | None = None,
) -> bool:
    """Update the views for one event (``run_started`` is folded in by ``append``).

    Returns whether a hook it created lost its token to another active hook.
    """
    t, run_id, at = e.type, e.run_id, e.created_at
    attrs = e.attrs or {}
    if t in ("run_completed", "run_failed", "run_cancelled"):
        column = "output" if t == "run_completed" else "error"
        tx.execute(
            f"UPDATE runs SET status = ?, {column} = ?, completed_at = ? WHERE run_id = ?",
            (t.removeprefix("run_"), e.payload, at, run_id),
        )
        tx.execute("DELETE FROM tasks WHERE run_id = ?", (run_id,))
        tx.execute(
            "UPDATE steps SET status = 'cancelled' WHERE run_id = ?"
            " AND status IN ('pending', 'running', 'retrying')",
            (run_id,),
        )
        tx.execute(
            "UPDATE waits SET status = 'cancelled' WHERE run_id = ? AND status = 'waiting'",
            (run_id,),
        )
        tx.execute(
            "UPDATE hooks SET status = 'disposed', disposed_at = ?"
            " WHERE run_id = ? AND status = 'active'",
            (at, run_id),
        )
    elif t == "step_created":
        _create_step(tx, deployment_id, e, activation, started)
    elif t == "step_started":
        tx.execute(
            "UPDATE steps SET status = 'running', attempt = ?, started_at = ?"
            " WHERE run_id = ? AND step_id = ?",
            (attrs.get("attempt", 1), at, run_id, e.correlation_id),
        )
    elif t in ("step_completed", "step_failed"):
        column = "output" if t == "step_completed" else "error"
        tx.execute(
            f"UPDATE steps SET status = ?, {column} = ?, completed_at = ?"
            " WHERE run_id = ? AND step_id = ?",
            (t.removeprefix("step_"), e.payload, at, run_id, e.correlation_id),
        )
        tx.execute(
            "DELETE FROM tasks WHERE run_id = ? AND kind = 'step' AND step_id = ?",
            (run_id, e.correlation_id),
        )
    elif t == "step_retrying":
        retry_at = attrs.get("retry_at", at)
        tx.execute(
            "UPDATE steps SET status = 'retrying', error = ?, retry_at = ?"
            " WHERE run_id = ? AND step_id = ?",
            (e.payload, retry_at, run_id, e.correlation_id),
        )
        tx.execute(
            "UPDATE tasks SET available_at = ?, lease_owner = NULL"
            " WHERE run_id = ? AND kind = 'step' AND step_id = ?",
            (retry_at, run_id, e.correlation_id),
        )
    elif t == "hook_created":
        return _create_hook(tx, e)
    elif t == "hook_disposed":
        tx.execute(
            "UPDATE hooks SET status = CASE status WHEN 'active' THEN 'disposed' ELSE status END,"
            " disposed_at = ? WHERE run_id = ? AND hook_id = ?",
            (at, run_id, e.correlation_id),
        )
    elif t == "wait_created":
        tx.execute(
            "INSERT INTO waits (run_id, wait_id, status, resume_at, created_at)"
            " VALUES (?, ?, 'waiting', ?, ?)",
            (run_id, e.correlation_id, attrs["resume_at"], at),
        )
    elif t == "wait_completed":
        tx.execute(
            "UPDATE waits SET status = 'completed', completed_at = ?"
            " WHERE run_id = ? AND wait_id = ?",
            (at, run_id, e.correlation_id),
        )
    return False


def _create_step(
    tx: Tx,
    deployment_id: str,
    e: EventRecord,
    activation: Activation | None,
    started: EventRecord | None,
) -> None:
    """A new step and its task: leased to the activation's worker, else due at once."""
    tx.execute(
        "INSERT INTO steps (run_id, step_id, step_name, status, attempt, input, created_at,"
        " started_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            e.run_id,
            e.correlation_id,
            e.name,
            "pending" if started is None else "running",
            0 if started is None else (started.attrs or {}).get("attempt", 1),
            e.payload or "",
            e.created_at,
            None if started is None else started.created_at,
        ),
    )
    tx.execute(
        "INSERT INTO tasks (kind, run_id, step_id, deployment_id, available_at, lease_owner)"
        " VALUES ('step', ?, ?, ?, ?, ?)",
        (
            e.run_id,
            e.correlation_id,
            deployment_id,
            e.created_at + (activation.lease_seconds if activation else 0.0),
            activation.worker_id if activation else None,
        ),
    )


def _create_hook(tx: Tx, e: EventRecord) -> bool:
    """A new hook; ``status = 'conflict'`` (returns ``True``) if its token is taken."""
    attrs = e.attrs or {}
    taken = tx.query_one(
        "SELECT 1 FROM hooks WHERE token = ? AND status = 'active'", (attrs["token"],)
    )
    metadata = attrs.get("metadata")
    tx.execute(
        "INSERT INTO hooks (run_id, hook_id, token, status, webhook, metadata, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            e.run_id,
            e.correlation_id,
            attrs["token"],
            "conflict" if taken else "active",
            int(bool(attrs.get("webhook"))),
            json.dumps(metadata) if metadata is not None else None,
            e.created_at,
        ),
    )
    return taken is not None
