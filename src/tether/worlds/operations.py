"""The writes both Worlds make, written once against a small transaction adapter (``Tx``).

Each function runs inside the caller's transaction: a backend's writer opens
it, hands every queued operation a ``Tx``, and commits them together. What
only one backend does sits behind the adapter: how a run's row is locked,
how events are appended and projected onto the views (Python for SQLite,
the server-side ``tether_append`` for PostgreSQL), and whom a commit must
wake.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any, Protocol

from tether.clock import Clock
from tether.errors import DeploymentConflictError
from tether.worlds import manifests
from tether.worlds.records import (
    TERMINAL_STATUSES,
    Activation,
    CancelResult,
    CheckRequest,
    EventRecord,
    NewRun,
    RunRecord,
    StepOutcome,
    WorkerInfo,
)
from tether.worlds.sql import Row, Statements, run_record

#: A run's status, last sequence number and deployment.
RunState = tuple[str, int, str]


class Reader(Protocol):
    """A connection to read from: the statements of ``sql``, run one by one."""

    sql: Statements

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Run ``sql`` and return all its rows."""
        ...

    def query_one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        """Run ``sql`` and return its first row, or ``None``."""
        ...


class Tx(Reader, Protocol):
    """One open write transaction, as the shared operations see it."""

    clock: Clock

    @property
    def fast(self) -> bool:
        """Whether checks may travel with the writes (``append``'s ``expected_seq``)."""
        ...

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        """Run a statement whose rows nobody reads (the backend may send it later)."""
        ...

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run a statement once per parameter row."""
        ...

    def query_together(self, *queries: tuple[str, Sequence[Any]]) -> list[list[Row]]:
        """Run the queries in order, in one round trip where the backend can."""
        ...

    def lock_runs(self, run_ids: Sequence[str]) -> dict[str, RunState]:
        """The state of each existing run of ``run_ids``, its row held until the commit."""
        ...

    def lock_run_and_step(self, run_id: str, step_id: str) -> tuple[RunState, str] | None:
        """The run's state (its row held until the commit) and its step's status, if both exist.

        The step is read after the run's lock is granted, so it is what the lock's
        previous holder committed.
        """
        ...

    def append(
        self,
        run_id: str,
        deployment_id: str,
        events: Sequence[EventRecord],
        activation: Activation | None,
        *,
        expected_seq: int | None = None,
        schedule: bool = False,
    ) -> None:
        """Insert events and derive the views from them.

        Steps created with an ``activation`` are leased to its worker. A hook
        created on a token another active hook holds is answered at once
        (``hook_disposed``) and the run queued. With ``schedule`` the run's
        workflow task becomes its earliest pending sleep. ``expected_seq``
        (only when ``fast``): fail the batch, to be run again on the careful
        path, unless the run is active and at that seq.
        """
        ...

    def work_due(self, deployment_id: str) -> None:
        """Note that the commit makes work due for the deployment (``"*"``: any)."""
        ...

    def readers_wait(self) -> None:
        """Note that readers elsewhere may wait for this commit (a chunk was written)."""
        ...


# -- runs ----------------------------------------------------------------------


def create_run(tx: Tx, run: NewRun, activation: Activation | None) -> RunRecord:
    """Insert the run, its ``run_created`` event, and its first activation or workflow task.

    With ``run.if_absent``, a run that already has the id is returned as it is
    and nothing is written: of two racing starts with one id, one creates it.
    """
    now = run.created_at or tx.clock.time()
    row = (
        run.run_id,
        run.workflow_name,
        run.deployment_id,
        run.input,
        run.parent_run_id,
        run.rerun_of,
        now,
    )
    if not run.if_absent:
        tx.execute(tx.sql.insert_run, row)
    elif tx.query_one(tx.sql.insert_run_if_absent, row) is None:
        existing = tx.query_one(tx.sql.get_run, (run.run_id,))
        assert existing is not None  # the conflict was with this row, and runs are never deleted
        return run_record(existing)
    attrs: dict[str, Any] = {"deployment_id": run.deployment_id}
    if run.parent_run_id:
        attrs["parent_run_id"] = run.parent_run_id
    if run.rerun_of:
        attrs["rerun_of"] = run.rerun_of
    if run.forked_from:
        attrs.update(forked_from=run.forked_from, fork_point=run.fork_point)
        if run.kept_until is not None:
            attrs["kept_until"] = run.kept_until
    if run.seed:
        attrs["seed"] = run.seed
    tx.execute(
        tx.sql.insert_run_created,
        (run.run_id, run.workflow_name, run.input, json.dumps(attrs), now),
    )
    if activation is not None:
        schedule = any(e.type == "wait_created" for e in activation.events)
        tx.append(run.run_id, run.deployment_id, activation.events, activation, schedule=schedule)
    else:
        queue_workflow(tx, run.run_id, run.deployment_id, now)
    return RunRecord(
        run_id=run.run_id,
        workflow_name=run.workflow_name,
        deployment_id=run.deployment_id,
        status="pending",
        input=run.input,
        output=None,
        error=None,
        parent_run_id=run.parent_run_id,
        rerun_of=run.rerun_of,
        created_at=now,
        started_at=None,
        completed_at=None,
        last_seq=1,
    )


def commit_activation(tx: Tx, activation: Activation, deployment_id: str | None) -> bool:
    """Append an activation's events if the run is still where it was computed from.

    ``deployment_id`` is the deployment of the activation's worker, when this
    World registered it: then the fast path sends the check with the writes
    instead of reading first.
    """
    run_id = activation.run_id
    if tx.fast and deployment_id is not None:
        tx.append(
            run_id,
            deployment_id,
            activation.events,
            activation,
            expected_seq=activation.expected_seq,
            schedule=True,
        )
        return True
    state = tx.query_one(tx.sql.lock_run, (run_id,))
    if state is None:
        return False
    status, last_seq, deployment_id = state
    if status in TERMINAL_STATUSES or last_seq != activation.expected_seq:
        if status not in TERMINAL_STATUSES:
            queue_workflow(tx, run_id, deployment_id, tx.clock.time(), force=True)
        return False
    tx.append(run_id, deployment_id, activation.events, activation, schedule=True)
    return True


def finish_step(
    tx: Tx, outcome: StepOutcome, activation: Activation | None, deployment_id: str | None
) -> bool:
    """Record a step attempt's end, with the activation it led to when there is one.

    ``deployment_id`` as for ``commit_activation``: it allows the fast path.
    """
    # The run's workflow task only changes if a sleep began or ended.
    schedule = activation is not None and any(
        e.type in ("wait_created", "wait_completed") for e in activation.events
    )
    run_id = outcome.run_id
    if (
        activation is not None
        and outcome.status != "retrying"
        and tx.fast
        and deployment_id is not None
    ):
        # The step's outcome is the activation's first event (see below). The run
        # being at the expected seq also means no other attempt recorded the step.
        expected = activation.expected_seq
        tx.append(
            run_id,
            deployment_id,
            activation.events,
            activation,
            expected_seq=expected,
            schedule=schedule,
        )
        return True
    found = tx.lock_run_and_step(run_id, outcome.step_id)
    if found is None:
        return False
    (status, last_seq, deployment_id), step_status = found
    if status in TERMINAL_STATUSES or step_status in ("completed", "failed"):
        return False  # the run ended or another attempt already recorded the step
    if (
        activation is not None
        and outcome.status != "retrying"
        and activation.expected_seq == last_seq
    ):
        # The activation's first event is this outcome, fed to the cached run.
        tx.append(run_id, deployment_id, activation.events, activation, schedule=schedule)
        return True
    now = tx.clock.time()
    event_type = {"completed": "step_completed", "failed": "step_failed"}.get(
        outcome.status, "step_retrying"
    )
    attrs: dict[str, Any] = {"attempt": outcome.attempt}
    if outcome.retry_at is not None:
        attrs["retry_at"] = outcome.retry_at
    event = EventRecord(
        run_id=run_id,
        seq=last_seq + 1,
        type=event_type,
        correlation_id=outcome.step_id,
        payload=outcome.payload,
        attrs=attrs,
        created_at=now,
    )
    tx.append(run_id, deployment_id, [event], None)
    if outcome.status != "retrying":
        queue_workflow(tx, run_id, deployment_id, now)
    return False


def fork_run(tx: Tx, run: NewRun, history: Sequence[EventRecord]) -> RunRecord:
    """Create ``run`` with ``history`` (events from seq 2) as its log, and its workflow task.

    The views follow from the history as from any append: recorded steps are
    done, a step asked for and not finished is queued, sleeps wait for their
    deadlines, hooks hold their tokens. The task is due now: the run's first
    activation replays the history and goes on from there.
    """
    if run.if_absent:
        existing = tx.query_one(tx.sql.get_run, (run.run_id,))
        if existing is not None:
            return run_record(existing)  # a named fork made already: nothing more is written
    # Of two forks racing with one id, the second meets the driver's integrity error.
    record = create_run(tx, dataclasses.replace(run, if_absent=False), None)
    if run.forked_from:
        _copy_streams(tx, run.forked_from, run.run_id, run.kept_until)
    if not history:
        return record
    tx.append(run.run_id, run.deployment_id, history, None)
    after = tx.query_one(tx.sql.get_run, (run.run_id,))  # as its history left it
    return record if after is None else run_record(after)


def _copy_streams(tx: Tx, original: str, run_id: str, before: float | None) -> None:
    """Start the fork's streams as the original's were at ``before`` (``None``: now).

    Each keeps the leading chunks written before then, at the same indexes, so
    a reader that follows the original onto the fork goes on where it was.
    """
    now = tx.clock.time()
    for stream_id, namespace, closed, closed_at in tx.query(tx.sql.run_streams, (original,)):
        kept: list[tuple[Any, ...]] = []
        for index, data, created_at in tx.query(tx.sql.stream_chunks, (stream_id,)):
            if before is not None and created_at >= before:
                break
            kept.append((f"{run_id}/{namespace}", index, data, created_at))
        still_closed = bool(closed) and (before is None or closed_at < before)
        tx.execute(
            tx.sql.insert_stream,
            (
                f"{run_id}/{namespace}",
                run_id,
                namespace,
                len(kept),
                still_closed,
                now,
                closed_at if still_closed else None,
            ),
        )
        if kept:
            tx.executemany(tx.sql.insert_chunk, kept)


def cancel_runs(tx: Tx, run_ids: Sequence[str]) -> CancelResult:
    """Append ``run_cancelled`` (after disposing active hooks) to each unfinished run."""
    result = CancelResult()
    if not run_ids:
        return result
    states = tx.lock_runs(run_ids)
    now = tx.clock.time()
    for run_id in run_ids:
        state = states.get(run_id)
        if state is None or state[0] in TERMINAL_STATUSES:
            continue
        _, last_seq, deployment_id = state
        states[run_id] = ("cancelled", last_seq, deployment_id)  # a repeated id: cancelled once
        _cancel(tx, run_id, last_seq, deployment_id, now, None)
        result.cancelled.append(run_id)
    return result


def upgrade_run(
    tx: Tx, original: str, expected_seq: int, run: NewRun, history: Sequence[EventRecord]
) -> RunRecord | None:
    """Cancel ``original`` pointing to ``run`` and fork ``run`` from it, in one commit.

    ``None`` (nothing written) when the original has ended or its log moved
    past ``expected_seq`` since ``history`` was read from it: then it is
    checked again, or left.
    """
    state = tx.lock_runs([original]).get(original)
    if state is None or state[0] in TERMINAL_STATUSES or state[1] != expected_seq:
        return None
    _, last_seq, deployment_id = state
    # Cancelled first: its hooks are released, and the fork takes their tokens over.
    _cancel(tx, original, last_seq, deployment_id, tx.clock.time(), {"upgraded_to": run.run_id})
    return fork_run(tx, run, history)


def _cancel(
    tx: Tx,
    run_id: str,
    last_seq: int,
    deployment_id: str,
    now: float,
    attrs: dict[str, Any] | None,
) -> None:
    """Dispose the run's active hooks, then append ``run_cancelled`` (with ``attrs``)."""
    hooks = tx.query(tx.sql.run_hooks, (run_id,))
    active = [hook_id for hook_id, hook_status in hooks if hook_status == "active"]
    events = [
        EventRecord(
            run_id,
            last_seq + i,
            "hook_disposed",
            hook_id,
            attrs={"reason": "run cancelled"},
            created_at=now,
        )
        for i, hook_id in enumerate(active, start=1)
    ]
    events.append(
        EventRecord(
            run_id, last_seq + len(events) + 1, "run_cancelled", attrs=attrs, created_at=now
        )
    )
    tx.append(run_id, deployment_id, events, None)


def wake_sleeps(tx: Tx, run_id: str) -> int:
    """End the run's pending sleeps now and queue it; returns how many ended."""
    runs, waits = tx.query_together((tx.sql.lock_run, (run_id,)), (tx.sql.waiting, (run_id,)))
    if not runs or runs[0][0] in TERMINAL_STATUSES or not waits:
        return 0
    _, last_seq, deployment_id = runs[0]
    now = tx.clock.time()
    events = [
        EventRecord(
            run_id, last_seq + i, "wait_completed", wait_id, attrs={"woken": True}, created_at=now
        )
        for i, (wait_id,) in enumerate(waits, start=1)
    ]
    tx.append(run_id, deployment_id, events, None)
    queue_workflow(tx, run_id, deployment_id, now)
    return len(waits)


# -- hooks and streams ---------------------------------------------------------


def resume_hook(tx: Tx, token: str, payload: str, webhook_only: bool) -> str | None:
    """Append ``hook_received`` and queue the run; ``None`` when no active hook matches."""
    for _ in range(3):
        hook = tx.query_one(tx.sql.active_hook, (token,))
        if hook is None or (webhook_only and not hook[2]):
            return None
        run_id, hook_id = str(hook[0]), hook[1]
        state = tx.query_one(tx.sql.lock_run, (run_id,))
        if state is None:
            return None
        if state[0] not in TERMINAL_STATUSES:
            break
        # The run ended while its lock was awaited. An upgrade that moved it handed the
        # token to its replacement in the same commit: look again, now that it is seen.
    else:
        return None
    now = tx.clock.time()
    event = EventRecord(
        run_id, state[1] + 1, "hook_received", hook_id, payload=payload, created_at=now
    )
    tx.append(run_id, state[2], [event], None)
    queue_workflow(tx, run_id, state[2], now)
    return run_id


def append_chunks(
    tx: Tx, stream_id: str, run_id: str, namespace: str, chunks: Sequence[str], close: bool
) -> int | None:
    """Append to the stream (created if new); its next index, or ``None`` if it is closed."""
    now = tx.clock.time()
    tx.execute(tx.sql.create_stream, (stream_id, run_id, namespace, now))
    row = tx.query_one(tx.sql.lock_stream, (stream_id,))
    if row is None or row[1]:
        return None
    start = int(row[0])
    if chunks:
        tx.executemany(
            tx.sql.insert_chunk,
            [(stream_id, start + i, chunk, now) for i, chunk in enumerate(chunks)],
        )
    next_index = start + len(chunks)
    tx.execute(tx.sql.update_stream, (next_index, close, now if close else None, stream_id))
    tx.readers_wait()
    return next_index


# -- the queue -------------------------------------------------------------------


def queue_workflow(
    tx: Tx, run_id: str, deployment_id: str, at: float, *, force: bool = False
) -> None:
    """Make sure a workflow task for the run is due no later than ``at``.

    A task leased to a worker is left alone (that worker's activation will
    find the log moved and re-queue it) unless ``force`` takes the lease back.
    """
    sql = tx.sql.queue_workflow_force if force else tx.sql.queue_workflow
    tx.execute(sql, (run_id, deployment_id, at))
    tx.work_due(deployment_id)


def release_task(tx: Tx, run_id: str, step_id: str, worker_id: str, delay: float) -> None:
    """Give back one task the worker holds, due in ``delay`` seconds."""
    tx.execute(tx.sql.release_task, (tx.clock.time() + delay, run_id, step_id, worker_id))
    tx.work_due("*")


def hand_back_step(tx: Tx, run_id: str, step_id: str, worker_id: str, attempt: int) -> bool:
    """End a step attempt the worker leased but never began (``World.hand_back_step``)."""
    # The step is read by a statement of its own, after the run's lock is granted.
    runs, steps = tx.query_together(
        (tx.sql.lock_run, (run_id,)), (tx.sql.step_lease, (run_id, step_id))
    )
    if not runs or not steps or runs[0][0] in TERMINAL_STATUSES:
        return False
    (_, last_seq, deployment_id), (status, leased_attempt, owner) = runs[0], steps[0]
    if status != "running" or leased_attempt != attempt or owner != worker_id:
        return False  # recorded meanwhile, or the lease ran out and another worker took it
    now = tx.clock.time()
    attrs = {"attempt": attempt, "retry_at": now, "handed_back": True}
    event = EventRecord(run_id, last_seq + 1, "step_retrying", step_id, attrs=attrs, created_at=now)
    tx.append(run_id, deployment_id, [event], None)  # releases the task, due now
    # The attempt never began: the next claim numbers its attempt the same, so a
    # rolling restart spends none of the step's retries.
    tx.execute(tx.sql.set_step_attempt, (attempt - 1, run_id, step_id))
    return True


def release_leases(tx: Tx, worker_id: str) -> None:
    """Give back every task the worker holds, due now."""
    tx.execute(tx.sql.release_leases, (tx.clock.time(), worker_id))
    tx.work_due("*")


def heartbeat(tx: Tx, worker_id: str, lease_seconds: float, load: float = 0.0) -> None:
    """Record that the worker lives, and its load; extend every lease it holds."""
    now = tx.clock.time()
    tx.execute(tx.sql.worker_heartbeat, (now, load, worker_id))
    tx.execute(tx.sql.extend_leases, (now + lease_seconds, worker_id))


# -- replays asked of live workers ------------------------------------------------

#: Seconds a worker holds a replay it took; past them another live worker may take it.
#: Longer than a request's replays can take (``checking.BATCH`` runs, each bounded).
CHECK_LEASE_SECONDS = 300.0
#: Requests older than this are dropped with any other (their askers gave up long ago).
CHECK_KEPT_SECONDS = 3600.0


def ask_check(tx: Tx, request: CheckRequest) -> None:
    """Record the request and wake the deployment's workers."""
    tx.execute(
        tx.sql.ask_check,
        (request.request_id, request.deployment_id, request.body, request.created_at),
    )
    tx.work_due(request.deployment_id)


def take_check(tx: Tx, deployment_id: str, worker_id: str) -> CheckRequest | None:
    """The oldest request of the deployment nobody answered or holds, now held by the worker."""
    now = tx.clock.time()
    row = tx.query_one(
        tx.sql.take_check, (worker_id, now + CHECK_LEASE_SECONDS, deployment_id, now, now)
    )
    return CheckRequest(*row) if row else None


def answer_check(tx: Tx, request_id: str, answer: str) -> None:
    """Record the answer (the first one given stays) and wake the asker."""
    tx.execute(tx.sql.answer_check, (answer, tx.clock.time(), request_id))
    tx.readers_wait()


def drop_check(tx: Tx, request_id: str) -> None:
    """Forget the request, and any left behind by askers long gone."""
    tx.execute(tx.sql.drop_check, (request_id, tx.clock.time() - CHECK_KEPT_SECONDS))


# -- deployments and workers -------------------------------------------------------


def register_worker(
    tx: Tx, worker: WorkerInfo, manifest: dict[str, Any], *, replace: bool = False
) -> list[str]:
    """Record a starting worker; its deployment's manifest joins what was registered.

    Raises ``DeploymentConflictError`` when the deployment was registered with
    other code for a workflow or step this worker defines, unless ``replace``;
    returns what it replaced then (else nothing).
    """
    now = tx.clock.time()
    dep = worker.deployment_id
    created = tx.query_one(
        tx.sql.create_deployment, (dep, worker.environment, json.dumps(manifest), now)
    )
    differ: list[str] = []
    if created is None:
        row = tx.query_one(tx.sql.lock_manifest, (dep,))
        registered = json.loads(row[0]) if row else {}
        differ = manifests.conflicts(registered, manifest)
        if differ and not replace:
            raise DeploymentConflictError(_conflict_message(dep, differ))
        joined = manifests.merged(registered, manifest, replace=replace)
        if joined != registered:
            tx.execute(tx.sql.update_manifest, (json.dumps(joined), dep))
    tx.execute(tx.sql.insert_worker, (worker.worker_id, dep, worker.hostname, worker.pid, now, now))
    return differ


def _conflict_message(deployment_id: str, differ: list[str]) -> str:
    shown = "; ".join(differ[:5]) + (f"; and {len(differ) - 5} more" if len(differ) > 5 else "")
    return (
        f"deployment {deployment_id!r} was registered with other code, and a deployment id"
        f" names one version of the code: runs pinned to it would resume into code they"
        f" never saw. This worker differs in {shown}. Fix: give this code a new id"
        f" (TETHER_DEPLOYMENT_ID=<git sha or release>, or unset for a fingerprint of the"
        f" code). In development only, `tether worker --replace-deployment` replaces"
        f" {deployment_id!r}"
    )


def worker_draining(tx: Tx, worker_id: str) -> None:
    """Mark the worker stopped while it drains: it takes no new work, so none is sent it."""
    tx.execute(tx.sql.worker_stopped, (tx.clock.time(), worker_id))


def unregister_worker(tx: Tx, worker_id: str) -> None:
    """Mark the worker stopped and give back its leases."""
    worker_draining(tx, worker_id)
    release_leases(tx, worker_id)
