"""Forking a run onto other code: a new run whose log starts with the original's history.

``rerun(run_id, deployment_id, from_step=N)`` copies the original's log up
to its request ``N`` (numbered as ``tether inspect steps`` numbers them):
steps recorded before it keep their results and are not run again, sleeps
keep their deadlines, hook payloads stay received, ``now()``, ``random()``
and ``uuid4()`` keep their values. Everything from request ``N`` on runs on
the target's code. The target's code must replay that history: this
process must hold it (the check runs here, before anything is written).
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Sequence
from typing import Any, Literal

from tether import manifest, registry
from tether.errors import (
    DeploymentConflictError,
    DeploymentNotFoundError,
    HookConflictError,
    InvalidValueError,
    NonDeterminismError,
    WorkflowNotFoundError,
)
from tether.redaction import redact
from tether.runtime.check import check_run
from tether.worlds.base import World
from tether.worlds.manifests import conflicts
from tether.worlds.records import (
    COMMAND_EVENTS,
    TERMINAL_STATUSES,
    EventRecord,
    NewRun,
    RunRecord,
)

FromStep = int | Literal["auto"]

#: Events that end a run: never part of a fork's history.
_ENDINGS = frozenset({"run_completed", "run_failed", "run_cancelled"})
#: What answers a step: a step asked for and not answered is queued again.
_STEP_ENDS = frozenset({"step_completed", "step_failed"})


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
    definition: registry.Workflow[..., Any] | None = None,
) -> Plan:
    """The fork of ``original`` onto ``deployment`` from ``from_step``, checked against its code.

    ``definition`` is the workflow's code from ``code_here`` (looked up when
    not given). Raises ``NonDeterminismError`` when the target's code does not
    replay the history it would keep, ``InvalidValueError`` for a step past it.
    """
    if definition is None:
        definition = code_here(target, original.workflow_name, deployment)
    events = target.list_events(original.run_id)
    requests = [e for e in events if e.type in COMMAND_EVENTS]
    if from_step == "auto":
        found = check_run(original, events, definition)
        if found.fork_point is None:
            raise NonDeterminismError(
                f"run {original.run_id} cannot move to {deployment!r}: {found.reason}"
            )
        point = found.fork_point
    elif isinstance(from_step, int) and not isinstance(from_step, bool):
        point = from_step
    else:
        raise InvalidValueError(
            f"invalid from_step {from_step!r}: expected a step number or 'auto'"
        )
    if not 0 <= point <= len(requests):
        raise InvalidValueError(
            f"invalid from_step {point}: run {original.run_id} made {len(requests)} requests"
            f" (#0 to #{len(requests) - 1} in tether inspect steps); fork from 0 to"
            f" {len(requests)}, or 'auto'"
        )
    cut = events.index(requests[point]) if point < len(requests) else len(events)
    history = _history(events[1:cut])
    checked = check_run(original, [events[0], *history], definition)
    if checked.verdict != "replays":
        raise NonDeterminismError(
            f"cannot fork run {original.run_id} from step {point} onto {deployment!r}: the"
            f" target's code does not replay its history up to there ({checked.reason});"
            f" fork from step {checked.fork_point} or earlier, or from_step='auto'"
        )
    seed = (events[0].attrs or {}).get("seed") or original.run_id
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
    )
    copied = [
        dataclasses.replace(event, run_id=new_id, seq=seq)
        for seq, event in enumerate(history, start=2)
    ]
    return Plan(run, copied, events[-1].seq)


# -- helpers ------------------------------------------------------------------


def code_here(target: World, workflow_name: str, deployment: str) -> registry.Workflow[..., Any]:
    """The workflow as this process defines it, if that is the target deployment's code."""
    record = target.get_deployment(deployment)
    if record is None:
        raise DeploymentNotFoundError(
            f"deployment {deployment!r} is not registered in {redact(target.url)}:"
            " no worker of it has started"
        )
    if workflow_name not in record.manifest.get("workflows", {}):
        raise WorkflowNotFoundError(
            f"deployment {deployment!r} does not define {workflow_name}: its runs cannot"
            " move there (rerun them elsewhere, or leave them)"
        )
    definition = registry.WORKFLOWS.get(workflow_name)
    differ = conflicts(record.manifest, manifest.build_manifest())
    if definition is None or differ:
        why = f"it differs in {'; '.join(differ[:5])}" if differ else "it lacks the workflow"
        raise DeploymentConflictError(
            f"forking checks the history against {deployment!r}'s code, which this process"
            f" does not hold: {why}. Run it where that code is imported (tether rerun"
            " --from-step N --code MODULE)"
        )
    return definition


def _history(events: Sequence[EventRecord]) -> list[EventRecord]:
    """The events a fork copies: no ending, and a step not answered only as asked for."""
    answered = {e.correlation_id for e in events if e.type in _STEP_ENDS}
    asked = {e.correlation_id for e in events if e.type == "step_created"}
    unanswered = asked - answered
    return [
        e
        for e in events
        if e.type not in _ENDINGS
        and not (e.type == "hook_disposed" and (e.attrs or {}).get("reason") != "conflict")
        and not (e.correlation_id in unanswered and e.type in ("step_started", "step_retrying"))
    ]


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
