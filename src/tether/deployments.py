"""Deployments as an operator sees them: which exist, which serve, how two differ.

What a process's own deployment is (its id and manifest) lives in
``tether.manifest``; its names are re-exported here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tether import forking
from tether.checking import Checker, Replay
from tether.config import resolve_world
from tether.errors import (
    DeploymentNotFoundError,
    InvalidValueError,
    TetherError,
)
from tether.handles import iter_runs
from tether.manifest import (
    DEFAULT_ENVIRONMENT,
    LIVE_WITHIN_SECONDS,
    build_manifest,
    current_deployment_id,
    current_environment,
    defines_workflows,
)
from tether.redaction import redact
from tether.runtime.answering import Checked
from tether.runtime.check import RunCheck
from tether.worlds.base import World
from tether.worlds.manifests import FIELDS
from tether.worlds.records import TERMINAL_STATUSES, DeploymentStatus, RunFilter, RunRecord


def list_deployments(
    world: World | str | None = None, *, environment: str | None = None
) -> list[DeploymentStatus]:
    """Deployments, newest first, with runs in flight, live workers and last heartbeat.

    A deployment whose ``stranded`` is true has runs in flight and no live
    worker: those runs wait until a worker of that deployment starts.
    """
    return resolve_world(world).list_deployments(environment, LIVE_WITHIN_SECONDS)


@dataclass(frozen=True, slots=True)
class WorkflowChange:
    """How one workflow differs between two deployments, and whether bridging is safe.

    ``status`` and ``changes`` say what changed, in the workflow and in the
    steps it calls: code, parameters, return type, steps added, removed or
    renamed. ``safe`` and ``reasons`` are the separate verdict on bridging:
    moving work from the old deployment to the new one (a rerun on latest,
    or a run that continues itself on latest). A step whose code changed is
    a change, yet safe to bridge; a parameter without a default is not.
    """

    workflow_name: str
    status: str  # "unchanged", "changed", "added" or "removed"
    safe: bool
    #: Why bridging is unsafe (empty when it is safe).
    reasons: list[str] = field(default_factory=list)
    #: Everything that changed, safe or not (empty when unchanged).
    changes: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class DeploymentDiff:
    """The per-workflow comparison of two manifests."""

    old: str
    new: str
    workflows: list[WorkflowChange]

    @property
    def safe(self) -> bool:
        """Whether every workflow of the old deployment can be bridged to the new one."""
        return all(change.safe for change in self.workflows)


def diff(
    old: str | dict[str, Any], new: str | dict[str, Any], *, world: World | str | None = None
) -> DeploymentDiff:
    """Compare two deployments (ids looked up in the World, or manifests) workflow by workflow.

    Unsafe to bridge: a workflow removed, its parameters changed
    incompatibly, or a step it used removed or renamed. Raises ``DeploymentNotFoundError``
    naming an id that no worker ever registered.
    """
    old_id, old_manifest = _manifest(old, world)
    new_id, new_manifest = _manifest(new, world)
    old_wfs, new_wfs = old_manifest.get("workflows", {}), new_manifest.get("workflows", {})
    old_steps, new_steps = old_manifest.get("steps", {}), new_manifest.get("steps", {})
    changes: list[WorkflowChange] = []
    for name in sorted(set(old_wfs) | set(new_wfs)):
        if name not in new_wfs:
            reasons = [f"workflow {name} was removed"]
            changes.append(WorkflowChange(name, "removed", False, reasons, ["workflow removed"]))
            continue
        if name not in old_wfs:
            changes.append(WorkflowChange(name, "added", True, [], ["workflow added"]))
            continue
        was, now = old_wfs[name], new_wfs[name]
        reasons = _signature_changes(was, now)
        renames = _step_changes(was, now, old_steps, new_steps)
        reasons += renames
        what = _what_changed(was, now, old_steps, new_steps)
        what += [r for r in reasons if r not in what]
        status = "changed" if what else "unchanged"
        changes.append(WorkflowChange(name, status, not reasons, reasons, what))
    return DeploymentDiff(old_id, new_id, changes)


def check(
    from_deployment: str,
    to_deployment: str = "latest",
    *,
    workflow_name: str | None = None,
    world: World | str | None = None,
    replay: Replay = "auto",
) -> list[RunCheck]:
    """Replay each in-flight run of ``from_deployment`` against ``to_deployment``'s code.

    Steps never run: every answer comes from the run's log. Each run gets a
    ``RunCheck``: ``replays`` (it could move with nothing run again),
    ``diverges`` (the new code asks for something else; ``fork_point`` says
    how many of its requests it keeps) or ``incompatible`` (the new code
    lacks the workflow, its arguments do not fit, the code raises where the
    run is, or its replay outlasts the time budget). The replay runs where
    the target's code is: in this process when it imported that release's
    modules (``tether deployments check --code MODULE``), else on a live
    worker of the target, asked through the World. ``replay`` forces one:
    ``"here"`` or ``"worker"``. ``to_deployment="latest"`` is the newest
    registered deployment; ``"local"`` is this process's code, registered or
    not (a CI gate before the deploy). Raises ``DeploymentNotFoundError``
    for an unknown deployment, ``NoLiveWorkerError`` when no worker of the
    target answers, and ``DeploymentConflictError`` when ``"here"`` is asked
    and this process's code is not the target's.
    """
    target = resolve_world(world)
    _manifest(from_deployment, target)  # it must exist
    checker = Checker(target, _resolved(target, from_deployment, to_deployment), replay)
    runs = _in_flight(target, from_deployment, workflow_name)
    return [found.check for found in checker.check([(run, None) for run in runs])]


def _in_flight(target: World, deployment_id: str, workflow_name: str | None) -> list[RunRecord]:
    """The deployment's pending and running runs (of the workflow, when given), each once."""
    runs: dict[str, RunRecord] = {}
    for status in ("pending", "running"):
        filters = RunFilter(status=status, workflow_name=workflow_name, deployment_id=deployment_id)
        for run in iter_runs(target, filters):
            runs.setdefault(run.run_id, run)  # claimed between the two listings: once
    return list(runs.values())


@dataclass(frozen=True, slots=True)
class Upgraded:
    """What ``upgrade`` did with one run of the old deployment.

    ``outcome`` is ``moved`` (forked onto the target at ``fork_point`` and
    cancelled, with ``upgraded_to``), ``would move`` (a dry run), or ``left``
    (it cannot move, or it ended or moved on meanwhile; ``reason`` says).
    ``verdict`` is the check's: ``replays`` means nothing ran again.
    """

    run_id: str
    outcome: str
    verdict: str
    fork_point: int | None
    moved_to: str | None
    reason: str


def upgrade(
    from_deployment: str,
    to_deployment: str = "latest",
    *,
    workflow_name: str | None = None,
    dry_run: bool = False,
    world: World | str | None = None,
    on_progress: Callable[[Upgraded], None] | None = None,
    replay: Replay = "auto",
) -> list[Upgraded]:
    """Move every in-flight run of ``from_deployment`` that can move onto ``to_deployment``.

    Each run is checked (``check``, where the target's code is); one that
    replays or diverges is forked onto the target at its furthest safe point
    and cancelled, pointing to the fork, in one transaction per run: never
    both running, never neither. Steps before the fork point keep their
    results, sleeps their deadlines, hooks their tokens, streams their
    chunks. ``dry_run`` only says what it would do.
    """
    target = resolve_world(world)
    _manifest(from_deployment, target)
    to_id = _resolved(target, from_deployment, to_deployment)
    if to_id == "local":
        raise InvalidValueError(
            "runs move onto a registered deployment, and 'local' is none: give its id or 'latest'"
        )
    runs = _in_flight(target, from_deployment, workflow_name)
    return _upgrade(target, runs, to_id, dry_run, on_progress, replay)


def upgrade_runs(
    run_ids: Sequence[str],
    to_deployment: str = "latest",
    *,
    dry_run: bool = False,
    world: World | str | None = None,
    on_progress: Callable[[Upgraded], None] | None = None,
    replay: Replay = "auto",
) -> list[Upgraded]:
    """``upgrade`` for the runs named (the web UI's selection), whatever their deployments.

    ``"latest"`` is the newest deployment of each run's environment. A run
    not in flight, or unknown, is ``left`` with the reason.
    """
    target = resolve_world(world)
    done: list[Upgraded] = []
    groups: dict[str, list[RunRecord]] = {}
    for run_id in dict.fromkeys(run_ids):
        record = target.get_run(run_id)
        if record is None or record.status in TERMINAL_STATUSES:
            why = "no such run" if record is None else f"it has ended ({record.status})"
            done.append(Upgraded(run_id, "left", "incompatible", None, None, why))
            if on_progress is not None:
                on_progress(done[-1])
            continue
        groups.setdefault(record.deployment_id, []).append(record)
    for from_deployment, runs in groups.items():
        to_id = _resolved(target, from_deployment, to_deployment)
        if to_id == from_deployment:
            for run in runs:
                done.append(Upgraded(run.run_id, "left", "replays", None, None, "it is on it"))
                if on_progress is not None:
                    on_progress(done[-1])
            continue
        done += _upgrade(target, runs, to_id, dry_run, on_progress, replay)
    return done


def _upgrade(
    target: World,
    runs: list[RunRecord],
    to_id: str,
    dry_run: bool,
    on_progress: Callable[[Upgraded], None] | None,
    replay: Replay,
) -> list[Upgraded]:
    checked = Checker(target, to_id, replay).check([(run, None) for run in runs])
    done: list[Upgraded] = []
    for run, found in zip(runs, checked, strict=True):
        result = _move(target, run, found, to_id, dry_run)
        done.append(result)
        if on_progress is not None:
            on_progress(result)
    return done


def _move(target: World, run: RunRecord, found: Checked, to_id: str, dry_run: bool) -> Upgraded:
    """Fork one checked run onto ``to_id`` and cancel it, if it has not moved on since."""
    check = found.check

    def left(reason: str) -> Upgraded:
        return Upgraded(run.run_id, "left", check.verdict, None, None, reason)

    if check.fork_point is None:
        return left(check.reason)
    try:
        planned = forking.checked_plan(target, run, to_id, check.fork_point, found.read_at)
    except TetherError as exc:
        return left(str(exc))
    if dry_run:
        return Upgraded(run.run_id, "would move", check.verdict, check.fork_point, None, "")
    made = target.upgrade_run(run.run_id, planned.read_at, planned.run, planned.history)
    if made is None:
        return left("it ended or moved on while it was checked: check it again")
    return Upgraded(run.run_id, "moved", check.verdict, check.fork_point, made.run_id, "")


def _resolved(target: World, from_deployment: str, to_deployment: str) -> str:
    """``to_deployment``, with ``"latest"`` the newest deployment of OLD's environment."""
    if to_deployment != "latest":
        return to_deployment
    old = target.get_deployment(from_deployment)
    environment = old.environment if old is not None else current_environment()
    latest = target.latest_deployment(environment)
    if latest is None:
        raise DeploymentNotFoundError(
            f"no deployment is registered in environment {environment!r}"
            f" of {redact(target.url)}: check against 'local' (this process's code)"
        )
    return latest.deployment_id


# -- helpers ------------------------------------------------------------------


def _manifest(ref: str | dict[str, Any], world: World | str | None) -> tuple[str, dict[str, Any]]:
    if isinstance(ref, dict):
        return "(manifest)", ref
    target = resolve_world(world)
    record = target.get_deployment(ref)
    if record is None:
        known = sorted(d.deployment_id for d in target.list_deployments(None, LIVE_WITHIN_SECONDS))
        shown = ", ".join(known[:10]) or "none"
        raise DeploymentNotFoundError(
            f"deployment {ref!r} is not registered in {redact(target.url)}: no worker of it ever"
            f" started (registered: {shown}); start a worker with TETHER_DEPLOYMENT_ID={ref}"
            " or compare deployments that exist"
        )
    return ref, record.manifest


def _signature_changes(was: dict[str, Any], now: dict[str, Any]) -> list[str]:
    old_params, new_params = was["params"], now["params"]
    reasons: list[str] = []
    for i, param in enumerate(old_params):
        if i >= len(new_params):
            reasons.append(f"parameter {param['name']!r} was removed")
        elif new_params[i]["name"] != param["name"] or new_params[i]["kind"] != param["kind"]:
            reasons.append(
                f"parameter {i + 1} changed from {param['name']!r} to {new_params[i]['name']!r}"
            )
        elif new_params[i]["annotation"] != param["annotation"]:
            reasons.append(
                f"parameter {param['name']!r} changed type from "
                f"{param['annotation'] or 'any'} to {new_params[i]['annotation'] or 'any'}"
            )
    for param in new_params[len(old_params) :]:
        if not param["default"] and param["kind"] not in ("VAR_POSITIONAL", "VAR_KEYWORD"):
            reasons.append(f"new parameter {param['name']!r} has no default")
    if was["returns"] != now["returns"]:
        reasons.append(
            f"return type changed from {was['returns'] or 'any'} to {now['returns'] or 'any'}"
        )
    return reasons


def _what_changed(
    was: dict[str, Any],
    now: dict[str, Any],
    old_steps: dict[str, Any],
    new_steps: dict[str, Any],
) -> list[str]:
    """The changes bridging tolerates, in the workflow and in the steps both versions call."""
    found: list[str] = []
    if _compiled_apart(was, now):
        found.append(f"workflow code not compared: Python {was['python']} and {now['python']}")
    elif was["fingerprint"] != now["fingerprint"]:
        found.append("workflow code changed")
    for param in now["params"][len(was["params"]) :]:
        if param["default"] or param["kind"] in ("VAR_POSITIONAL", "VAR_KEYWORD"):
            found.append(f"parameter {param['name']!r} added")
    renamed_to = set(_renames(was, now, old_steps, new_steps).values())
    for step_name in sorted(set(now["steps"]) - set(was["steps"]) - renamed_to):
        found.append(f"step {step_name} is new")
    for step_name in sorted(set(was["steps"]) & set(now["steps"])):
        before, after = old_steps.get(step_name), new_steps.get(step_name)
        if before is None or after is None:
            continue
        for key, what in FIELDS.items():
            if key == "steps" or (key == "fingerprint" and _compiled_apart(before, after)):
                continue
            if before.get(key) != after.get(key):
                found.append(f"step {step_name}: {what} changed")
    return found


def _compiled_apart(was: dict[str, Any], now: dict[str, Any]) -> bool:
    """Whether two entries' code fingerprints come from different Python versions."""
    return "python" in was and "python" in now and was["python"] != now["python"]


def _step_changes(
    was: dict[str, Any],
    now: dict[str, Any],
    old_steps: dict[str, Any],
    new_steps: dict[str, Any],
) -> list[str]:
    """Why bridging is unsafe for the workflow's steps: one removed or renamed."""
    return [
        f"step {old} was renamed to {new}" if new else f"step {old} was removed"
        for old, new in _renames(was, now, old_steps, new_steps).items()
    ]


def _renames(
    was: dict[str, Any],
    now: dict[str, Any],
    old_steps: dict[str, Any],
    new_steps: dict[str, Any],
) -> dict[str, str | None]:
    """Each step the old workflow called and the new one does not: its new name, or ``None``.

    A step is renamed when a step new to the workflow has its code fingerprint.
    """
    added = set(now["steps"]) - set(was["steps"])
    found: dict[str, str | None] = {}
    for step_name in sorted(set(was["steps"]) - set(now["steps"])):
        old_fp = old_steps.get(step_name, {}).get("fingerprint")
        same = sorted(
            s for s in added if old_fp and new_steps.get(s, {}).get("fingerprint") == old_fp
        )
        found[step_name] = same[0] if same else None
    return found


__all__ = [
    "DEFAULT_ENVIRONMENT",
    "LIVE_WITHIN_SECONDS",
    "DeploymentDiff",
    "RunCheck",
    "Upgraded",
    "WorkflowChange",
    "build_manifest",
    "check",
    "current_deployment_id",
    "current_environment",
    "defines_workflows",
    "diff",
    "list_deployments",
    "upgrade",
    "upgrade_runs",
]
