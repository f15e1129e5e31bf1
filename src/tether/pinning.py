"""Which deployment a new run is pinned to, and whether its arguments fit the workflow there.

Everything here is checked before a run is written: a run that could never
start (no worker of its deployment ever registered, a workflow the
deployment does not define, arguments that do not bind) is an error at
``start()``, not a run that waits forever.
"""

from __future__ import annotations

import inspect
import re
import weakref
from collections.abc import Sequence
from typing import Any

from tether import manifest, registry
from tether.config import local_worker
from tether.errors import (
    DeploymentNotFoundError,
    InvalidRunIdError,
    InvalidTypeError,
    WorkflowNotFoundError,
)
from tether.redaction import redact
from tether.worlds.base import World
from tether.worlds.records import DeploymentRecord

#: What a run id named by the caller may hold: URL- and shell-safe characters.
RUN_ID_PATTERN = re.compile(r"[A-Za-z0-9._:@-]{1,128}")

#: The deployments each World was seen to have registered. A registration is never
#: undone, so a start on its own deployment looks it up once per process.
_registered: weakref.WeakKeyDictionary[World, set[str]] = weakref.WeakKeyDictionary()


def check_run_id(run_id: object) -> str:
    """``run_id`` if a caller may name a run so; else ``InvalidRunIdError`` saying what is."""
    if isinstance(run_id, str) and RUN_ID_PATTERN.fullmatch(run_id):
        return run_id
    raise InvalidRunIdError(
        f"invalid run id {run_id!r}: use 1 to 128 letters, digits and . _ : @ -"
        " (e.g. 'order-o-1' for order o-1)"
    )


def resolve_target(
    target: World, workflow_name: str, deployment_id: str | None
) -> tuple[str, inspect.Signature]:
    """The deployment a new run of ``workflow_name`` is pinned to (checking it defines the
    workflow), and the workflow's parameters as that deployment records them."""
    if deployment_id == "latest" or (deployment_id is None and not manifest.defines_workflows()):
        environment = manifest.current_environment()
        latest = target.latest_deployment(environment)
        if latest is None:
            raise DeploymentNotFoundError(
                f"no deployment is registered in environment {environment!r} of "
                f"{redact(target.url)}: start a worker first (tether worker MODULE)"
            )
        _check_defines(latest, workflow_name)
        return latest.deployment_id, recorded_signature(latest, workflow_name)
    own = manifest.current_deployment_id()
    wanted = own if deployment_id is None else deployment_id
    if wanted == own and workflow_name in registry.WORKFLOWS:
        # This process is that code; a worker of it must have registered it, or
        # the run would wait for a worker that may never come.
        _check_registered(target, own)
        return own, registry.WORKFLOWS[workflow_name].signature
    record = target.get_deployment(wanted)
    if record is None:
        if deployment_id is None:
            raise WorkflowNotFoundError(
                f"workflow {workflow_name!r} is not defined in this process (deployment "
                f"{own!r}): import its module, or pass deployment_id='latest'"
            )
        raise DeploymentNotFoundError(
            f"deployment {wanted!r} is not registered in {redact(target.url)}:"
            f" no worker of it has started (registered: {_registered_ids(target)})"
        )
    _check_defines(record, workflow_name)
    return wanted, recorded_signature(record, workflow_name)


def recorded_signature(record: DeploymentRecord, workflow_name: str) -> inspect.Signature:
    """The workflow's parameters as the deployment's manifest records them."""
    params = record.manifest["workflows"][workflow_name].get("params", [])
    return inspect.Signature(
        [
            inspect.Parameter(
                p["name"],
                getattr(inspect.Parameter, p["kind"]),
                default=_RECORDED_DEFAULT if p.get("default") else inspect.Parameter.empty,
            )
            for p in params
        ]
    )


#: Stands for a default value a manifest records only the presence of.
_RECORDED_DEFAULT = object()


def check_arguments(
    name: str, deployment: str, parameters: inspect.Signature, args: Sequence[Any]
) -> None:
    """Raise ``TypeError`` before anything is written if ``args`` do not fit the workflow."""
    try:
        parameters.bind(*args)
    except TypeError as exc:
        shown = ", ".join(
            str(p.replace(annotation=p.empty, default=p.empty))
            + ("=..." if p.default is not p.empty else "")
            for p in parameters.parameters.values()
        )
        short = name.rsplit("//", 1)[-1]
        raise InvalidTypeError(
            f"arguments {list(args)!r} do not fit workflow {name} on deployment "
            f"{deployment!r}: {exc}; it takes ({shown}), e.g. start({short}, [...])"
        ) from None


# -- helpers ------------------------------------------------------------------


def _check_registered(target: World, deployment_id: str) -> None:
    seen = _registered.setdefault(target, set())
    if deployment_id in seen or local_worker(target.url, deployment_id) is not None:
        return
    if target.get_deployment(deployment_id) is not None:
        seen.add(deployment_id)
        return
    environment = manifest.current_environment()
    latest = target.latest_deployment(environment)
    example = latest.deployment_id if latest is not None else "<the workers' id>"
    how = (
        "from TETHER_DEPLOYMENT_ID"
        if manifest.explicit_deployment_id()
        else "a fingerprint of this process's code, as TETHER_DEPLOYMENT_ID is unset"
    )
    raise DeploymentNotFoundError(
        f"this process's deployment {deployment_id!r} ({how}) is not registered in "
        f"{redact(target.url)}: no worker of it has started, so the run would wait for one"
        f" (registered: {_registered_ids(target)}). Fix: run this process with "
        f"TETHER_DEPLOYMENT_ID={example} like the workers, or start with "
        "deployment_id='latest'"
    )


def _registered_ids(target: World) -> str:
    known = [d.deployment_id for d in target.list_deployments(None, 0.0)]
    return ", ".join(known[:5]) + (", ..." if len(known) > 5 else "") if known else "none"


def _check_defines(record: DeploymentRecord, workflow_name: str) -> None:
    defined = sorted(record.manifest.get("workflows", {}))
    if workflow_name not in defined:
        shown = ", ".join(defined[:10]) + (", ..." if len(defined) > 10 else "")
        raise WorkflowNotFoundError(
            f"workflow {workflow_name!r} is not defined in deployment {record.deployment_id!r}"
            f" (it defines: {shown or 'no workflows'})"
        )
