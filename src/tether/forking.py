"""Forking a run onto other code: a new run whose log starts with the original's history.

``rerun(run_id, deployment_id, from_step=N)`` copies the original's log up
to its request ``N`` (numbered as ``tether inspect steps`` numbers them):
steps recorded before it keep their results and are not run again, sleeps
keep their deadlines, hook payloads stay received, ``now()``, ``random()``
and ``uuid4()`` keep their values. Everything from request ``N`` on runs on
the target's code. The target's code must replay that history: the check
runs where that code is (here, or on a live worker of the target), before
anything is written.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Sequence
from typing import Any, Literal

from tether import serde
from tether.checking import Checker
from tether.errors import (
    HookConflictError,
    InvalidValueError,
    NonDeterminismError,
)
from tether.runtime.check import kept_history
from tether.streams import StreamHandle
from tether.worlds.base import World
from tether.worlds.records import (
    COMMAND_EVENTS,
    TERMINAL_STATUSES,
    EventRecord,
    NewRun,
    RunRecord,
)

FromStep = int | Literal["auto"]


@dataclasses.dataclass(frozen=True, slots=True)
class Plan:
    """A fork worked out and checked, not yet written: what ``World.fork_run`` takes."""

    run: NewRun
    history: list[EventRecord]
    #: The original's last sequence number when its history was read.
    read_at: int


def fork(
    target: World,
    original: RunRecord,
    deployment: str,
    from_step: FromStep,
    run_id: str | None,
) -> RunRecord:
    """Write the fork of ``original`` onto ``deployment`` from request ``from_step``."""
    planned = plan(target, original, deployment, from_step, run_id)
    _check_hooks_free(target, original, planned.history)
    return target.fork_run(planned.run, planned.history)


def plan(
    target: World,
    original: RunRecord,
    deployment: str,
    from_step: FromStep,
    run_id: str | None = None,
    *,
    checker: Checker | None = None,
) -> Plan:
    """The fork of ``original`` onto ``deployment`` from ``from_step``, checked against its code.

    The check runs where the target's code is (``Checker``: here, or on a
    live worker of it). ``"auto"`` is the furthest point the check allows;
    for a failed run, the step that failed it (so the fixed code runs it
    again). Raises ``NonDeterminismError`` when the target's code does not
    replay the history the fork would keep, ``InvalidValueError`` for a step
    past it.
    """
    checker = checker or Checker(target, deployment)
    events = target.list_events(original.run_id)
    made = sum(1 for e in events if e.type in COMMAND_EVENTS)
    if from_step == "auto":
        found = checker.check_one(original, _failing_request(events))
        if found.check.fork_point is None:
            raise NonDeterminismError(
                f"run {original.run_id} cannot move to {deployment!r}: {found.check.reason}"
            )
        point = found.check.fork_point
    elif isinstance(from_step, int) and not isinstance(from_step, bool):
        if not 0 <= from_step <= made:
            raise InvalidValueError(
                f"invalid from_step {from_step}: run {original.run_id} made {made} requests"
                f" (#0 to #{made - 1} in tether inspect steps); fork from 0 to {made}, or 'auto'"
            )
        point = from_step
        found = checker.check_one(original, point)
        if found.check.verdict != "replays":
            raise NonDeterminismError(
                f"cannot fork run {original.run_id} from step {point} onto {deployment!r}: the"
                f" target's code does not replay its history up to there"
                f" ({found.check.reason}); "
                + (
                    f"fork from step {found.check.fork_point} or earlier, or from_step='auto'"
                    if found.check.fork_point is not None
                    else "it cannot move there: rerun it instead"
                )
            )
    else:
        raise InvalidValueError(
            f"invalid from_step {from_step!r}: expected a step number or 'auto'"
        )
    # A fork keeps requests before ``point``: once logged they do not change, so the run
    # may have moved on since its check (an upgrade, which keeps all, may not).
    return checked_plan(target, original, deployment, point, None, run_id, events)


def checked_plan(
    target: World,
    original: RunRecord,
    deployment: str,
    point: int,
    read_at: int | None,
    run_id: str | None = None,
    events: list[EventRecord] | None = None,
) -> Plan:
    """The fork from request ``point``, which a check of the log as of ``read_at`` allowed.

    With ``read_at`` (an upgrade), raises ``InvalidValueError`` when the run
    moved on since (check it again); ``None`` takes the log as it is now.
    """
    if events is None or (read_at is not None and events[-1].seq != read_at):
        events = target.list_events(original.run_id)
    if read_at is not None and events[-1].seq != read_at:
        raise InvalidValueError(
            f"run {original.run_id} moved on while it was checked (event {events[-1].seq},"
            f" checked at {read_at}): check it again"
        )
    history = kept_history(events, point)
    seed = (events[0].attrs or {}).get("seed") or original.run_id
    # Chunks written from the first request the fork does not keep, or by a step it
    # runs again, are the fork's to write: the original's copies of them are left.
    requests = [e for e in events if e.type in COMMAND_EVENTS]
    answered = {e.correlation_id for e in history if e.type in ("step_completed", "step_failed")}
    again = [
        e.created_at
        for e in history
        if e.type == "step_created" and e.correlation_id not in answered
    ]
    if point < len(requests):
        again.append(requests[point].created_at)
    new_id = run_id or f"run_{uuid.uuid4().hex}"
    run = NewRun(
        run_id=new_id,
        workflow_name=original.workflow_name,
        deployment_id=deployment,
        input=original.input,
        rerun_of=original.run_id,
        created_at=target.clock.time(),
        if_absent=run_id is not None,
        forked_from=original.run_id,
        fork_point=point,
        seed=str(seed),
        kept_until=min(again) if again else None,
    )
    copied = [
        dataclasses.replace(
            event,
            run_id=new_id,
            seq=seq,
            payload=_rehomed(event.payload, original.run_id, new_id)
            if event.type == "step_created" and event.correlation_id not in answered
            else event.payload,
        )
        for seq, event in enumerate(history, start=2)
    ]
    return Plan(run, copied, events[-1].seq)


# -- helpers ------------------------------------------------------------------


def _rehomed(payload: str | None, original: str, fork: str) -> str | None:
    """A step's arguments with the original's stream handles pointing to the fork's.

    The fork runs this step again: what it writes belongs in the fork's streams,
    which a reader of the original follows.
    """
    if payload is None or f'"{original}"' not in payload:  # no handle of it: as it is
        return payload
    moved = _moved(serde.loads(payload), original, fork)
    return serde.dumps(moved, where="a step's arguments")


def _moved(value: Any, original: str, fork: str) -> Any:
    if isinstance(value, StreamHandle):
        return StreamHandle(fork, value.namespace) if value.run_id == original else value
    if isinstance(value, list):
        return [_moved(v, original, fork) for v in value]
    if isinstance(value, tuple):
        return tuple(_moved(v, original, fork) for v in value)
    if isinstance(value, dict):
        return {k: _moved(v, original, fork) for k, v in value.items()}
    return value


def _failing_request(events: Sequence[EventRecord]) -> int | None:
    """The request whose step failed the run, if a step's failure ended it."""
    if not events or events[-1].type != "run_failed":
        return None
    failed = [e.correlation_id for e in events if e.type == "step_failed"]
    if not failed:
        return None
    requests = [e for e in events if e.type in COMMAND_EVENTS]
    for index, request in enumerate(requests):
        if request.type == "step_created" and request.correlation_id == failed[-1]:
            return index
    return None


def _check_hooks_free(target: World, original: RunRecord, history: Sequence[EventRecord]) -> None:
    """A hook the fork copies must not be held still by the original, which is in flight."""
    if original.status in TERMINAL_STATUSES:
        return
    copied = {(e.attrs or {}).get("token") for e in history if e.type == "hook_created"}
    held = [h.token for h in target.list_hooks(original.run_id, "active") if h.token in copied]
    if held:
        raise HookConflictError(
            f"run {original.run_id} is in flight and holds hook {held[0]!r}, which the fork"
            " would take over: cancel the run first (its hooks are released), then fork it"
        )
