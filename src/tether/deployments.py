"""Deployments: which version of the code a process serves, what it defines, how two differ.

A deployment's id is ``$TETHER_DEPLOYMENT_ID`` (a git sha, a release tag)
or, when unset, a fingerprint of the source of the modules that define the
process's workflows and steps. Workers register it with a manifest: every
workflow and step name with its parameters and a fingerprint of its code.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import os
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tether import registry
from tether.worlds.base import World
from tether.worlds.records import DeploymentStatus

DEFAULT_ENVIRONMENT = "default"
#: A worker whose heartbeat is older than this is not counted as live.
LIVE_WITHIN_SECONDS = 15.0

_module_hashes: dict[str, str] = {}


def current_deployment_id() -> str:
    """This process's deployment: ``$TETHER_DEPLOYMENT_ID``, else a fingerprint of its code."""
    explicit = os.environ.get("TETHER_DEPLOYMENT_ID")
    if explicit:
        return explicit
    return _fingerprint(len(registry.WORKFLOWS), len(registry.STEPS))


@functools.lru_cache(maxsize=8)
def _fingerprint(workflows: int, steps: int) -> str:
    """The fingerprint of the registered code; cached while the registry's size stays."""
    modules = sorted(
        {d.fn.__module__ for d in registry.WORKFLOWS.values()}
        | {d.fn.__module__ for d in registry.STEPS.values()}
    )
    digest = hashlib.sha256()
    for module in modules:
        digest.update(f"{module}\0{_module_hash(module)}\0".encode())
    return f"dep-{digest.hexdigest()[:12]}"


def current_environment() -> str:
    """This process's environment: ``$TETHER_ENVIRONMENT``, else ``default``."""
    return os.environ.get("TETHER_ENVIRONMENT") or DEFAULT_ENVIRONMENT


def defines_workflows() -> bool:
    """Whether this process registered workflows of its own (else it is a pure client)."""
    return bool(registry.WORKFLOWS)


def build_manifest() -> dict[str, Any]:
    """Every workflow and step this process defines, with parameters and code fingerprints."""
    return {
        "workflows": {
            name: {**_describe(wf.fn), "steps": sorted(_steps_used(wf.fn))}
            for name, wf in sorted(registry.WORKFLOWS.items())
        },
        "steps": {name: _describe(s.fn) for name, s in sorted(registry.STEPS.items())},
    }


def list_deployments(
    world: World | str | None = None, *, environment: str | None = None
) -> list[DeploymentStatus]:
    """Deployments, newest first, with runs in flight, live workers and last heartbeat.

    A deployment whose ``stranded`` is true has runs in flight and no live
    worker: those runs wait until a worker of that deployment starts.
    """
    from tether.config import resolve_world

    return resolve_world(world).list_deployments(environment, LIVE_WITHIN_SECONDS)


@dataclass(frozen=True, slots=True)
class WorkflowChange:
    """How one workflow differs between two deployments, and whether bridging is safe.

    Bridging means moving work from the old deployment to the new one: a
    rerun on latest, or a run that continues itself on latest.
    """

    workflow_name: str
    status: str  # "unchanged", "changed", "added" or "removed"
    safe: bool
    reasons: list[str] = field(default_factory=list)


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
    incompatibly, or a step it used removed or renamed. Raises ``LookupError``
    naming an id that no worker ever registered.
    """
    old_id, old_manifest = _manifest(old, world)
    new_id, new_manifest = _manifest(new, world)
    old_wfs, new_wfs = old_manifest.get("workflows", {}), new_manifest.get("workflows", {})
    new_steps = new_manifest.get("steps", {})
    changes: list[WorkflowChange] = []
    for name in sorted(set(old_wfs) | set(new_wfs)):
        if name not in new_wfs:
            changes.append(WorkflowChange(name, "removed", False, [f"workflow {name} was removed"]))
            continue
        if name not in old_wfs:
            changes.append(WorkflowChange(name, "added", True, []))
            continue
        was, now = old_wfs[name], new_wfs[name]
        reasons = _signature_changes(was, now)
        reasons += _step_changes(was, now, old_manifest.get("steps", {}), new_steps)
        changed = was["fingerprint"] != now["fingerprint"] or bool(reasons)
        changes.append(
            WorkflowChange(name, "changed" if changed else "unchanged", not reasons, reasons)
        )
    return DeploymentDiff(old_id, new_id, changes)


# -- helpers ------------------------------------------------------------------


def _module_hash(module: str) -> str:
    cached = _module_hashes.get(module)
    if cached is None:
        mod = sys.modules.get(module)
        try:
            source = inspect.getsource(mod) if mod is not None else module
        except (OSError, TypeError):
            source = module
        cached = _module_hashes[module] = hashlib.sha256(source.encode()).hexdigest()
    return cached


def _describe(fn: Callable[..., Any]) -> dict[str, Any]:
    signature = inspect.signature(fn)
    digest = hashlib.sha256()
    _digest_code(fn.__code__, digest)
    return {
        "fingerprint": digest.hexdigest()[:16],
        "params": [
            {
                "name": p.name,
                "kind": p.kind.name,
                "default": p.default is not inspect.Parameter.empty,
                "annotation": _annotation(p.annotation),
            }
            for p in signature.parameters.values()
        ],
        "returns": _annotation(signature.return_annotation),
    }


def _digest_code(code: types.CodeType, digest: Any) -> None:
    """Hash what a function does, not its name or line numbers: a renamed copy matches."""
    digest.update(code.co_code)
    digest.update(repr((code.co_names, code.co_varnames, code.co_freevars)).encode())
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _digest_code(const, digest)
        else:
            digest.update(repr(const).encode())


def _annotation(annotation: Any) -> str:
    if annotation is inspect.Signature.empty:
        return ""
    return (
        annotation
        if isinstance(annotation, str)
        else getattr(annotation, "__qualname__", repr(annotation))
    )


def _steps_used(fn: Callable[..., Any]) -> set[str]:
    """Names of the steps a workflow's code refers to (its globals that are steps)."""
    found: set[str] = set()
    codes = [fn.__code__]
    while codes:
        code = codes.pop()
        for name in code.co_names:
            value = fn.__globals__.get(name)
            if isinstance(value, registry.Step):
                found.add(value.name)
        codes.extend(c for c in code.co_consts if inspect.iscode(c))
    return found


def _manifest(ref: str | dict[str, Any], world: World | str | None) -> tuple[str, dict[str, Any]]:
    if isinstance(ref, dict):
        return "(manifest)", ref
    from tether.config import resolve_world

    record = resolve_world(world).get_deployment(ref)
    if record is None:
        raise LookupError(f"deployment {ref!r} is not registered: no worker of it ever started")
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


def _step_changes(
    was: dict[str, Any],
    now: dict[str, Any],
    old_steps: dict[str, Any],
    new_steps: dict[str, Any],
) -> list[str]:
    removed = sorted(set(was["steps"]) - set(now["steps"]))
    added = set(now["steps"]) - set(was["steps"])
    reasons: list[str] = []
    for step_name in removed:
        old_fp = old_steps.get(step_name, {}).get("fingerprint")
        renamed_to = sorted(
            s for s in added if old_fp and new_steps.get(s, {}).get("fingerprint") == old_fp
        )
        if renamed_to:
            reasons.append(f"step {step_name} was renamed to {renamed_to[0]}")
        else:
            reasons.append(f"step {step_name} was removed")
    return reasons
