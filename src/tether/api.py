"""The client side: start runs, look at them, cancel and rerun them."""

from __future__ import annotations

import asyncio
import inspect
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from tether import manifest, registry, serde
from tether.config import local_worker, on_worker_loop, resolve_world
from tether.context import current_step
from tether.errors import (
    DeploymentNotFoundError,
    RunCancelledError,
    RunFailedError,
    RunNotFoundError,
    WorkflowNotFoundError,
)
from tether.readers import Readable
from tether.redaction import redact
from tether.streams import DEFAULT_NAMESPACE
from tether.worlds.base import World
from tether.worlds.records import (
    RUN_STATUSES,
    TERMINAL_STATUSES,
    DeploymentRecord,
    EventRecord,
    NewRun,
    RunFilter,
    RunRecord,
    StepRecord,
)
from tether.worlds.schema import encode_cursor


class Run:
    """A handle on one run: its identity, and ways to watch or end it."""

    def __init__(self, record: RunRecord, world: World) -> None:
        self._world = world
        self.run_id = record.run_id
        self.workflow_name = record.workflow_name
        self.deployment_id = record.deployment_id
        self.parent_run_id = record.parent_run_id
        self.rerun_of = record.rerun_of
        self.created_at = datetime.fromtimestamp(record.created_at, tz=UTC)

    def __repr__(self) -> str:
        return f"<Run {self.run_id} {self.workflow_name} on {self.deployment_id}>"

    def status(self) -> str:
        """``pending``, ``running``, ``completed``, ``failed`` or ``cancelled``."""
        return self._record().status

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the run to end and return its result.

        Raises ``RunFailedError`` or ``RunCancelledError`` when it did not
        complete, and ``TimeoutError`` when ``timeout`` seconds pass first.
        """
        if on_worker_loop():
            raise RuntimeError(
                "run.result() would block the worker's event loop: "
                "use `await run.result_async()` in an async step"
            )
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._world.watch() as changed:
            while True:
                record = self._record()
                if record.status in TERMINAL_STATUSES:
                    return _outcome(record)
                remaining = 1.0 if deadline is None else deadline - time.monotonic()
                if remaining <= 0:
                    raise _timeout(record, timeout)
                changed(min(remaining, 1.0))

    async def result_async(self, timeout: float | None = None) -> Any:
        """``result()`` for async code: waits without blocking the event loop."""
        deadline = None if timeout is None else time.monotonic() + timeout
        async with self._world.changes() as changed:
            while True:
                record = self._found(await self._world.get_run_async(self.run_id))
                if record.status in TERMINAL_STATUSES:
                    return _outcome(record)
                remaining = 1.0 if deadline is None else deadline - time.monotonic()
                if remaining <= 0:
                    raise _timeout(record, timeout)
                await changed(min(remaining, 1.0))

    def cancel(self) -> bool:
        """Cancel the run; returns ``False`` if it had already ended."""
        return bool(self._world.cancel_runs([self.run_id]).cancelled)

    def events(self) -> list[EventRecord]:
        """The run's event log so far, in order."""
        return self._world.list_events(self.run_id)

    @property
    def readable(self) -> Readable:
        """The run's default stream, live: ``for chunk in run.readable`` (or ``async for``)."""
        return Readable(self._world, self.run_id, DEFAULT_NAMESPACE)

    def children(self) -> list[Run]:
        """Runs started from this run's steps (child runs and continuations), oldest first."""
        filters = RunFilter(parent_run_id=self.run_id, descending=False)
        return [Run(record, self._world) for record in iter_runs(self._world, filters)]

    def steps(self) -> list[StepRecord]:
        """The run's steps so far, in the order they were asked for."""
        return self._world.list_steps(self.run_id)

    def _record(self) -> RunRecord:
        return self._found(self._world.get_run(self.run_id))

    def _found(self, record: RunRecord | None) -> RunRecord:
        if record is None:
            raise RunNotFoundError(f"run {self.run_id!r} not found in {redact(self._world.url)}")
        return record


def start(
    workflow: registry.Workflow[..., Any] | str,
    args: Sequence[Any] = (),
    *,
    deployment_id: str | None = None,
    world: World | str | None = None,
) -> Run:
    """Start a run of ``workflow`` (the function or its name) with ``args``.

    ``deployment_id=None`` pins the run to this process's own deployment (a
    process that defines no workflows uses ``"latest"``); ``"latest"`` to the
    newest registered deployment of this environment; any other string to
    that deployment. Inside a step the new run records the step's run as its
    parent. Raises ``WorkflowNotFoundError`` when the target deployment does
    not define the workflow, ``DeploymentNotFoundError`` when no worker of it
    ever registered, and ``SerializationError`` when an argument cannot be stored.
    """
    target = resolve_world(world)
    if not isinstance(workflow, registry.Workflow | str):
        shown = getattr(workflow, "__qualname__", None) or type(workflow).__name__
        raise TypeError(
            f"start() takes a @workflow function or a workflow name, got {shown!r}: "
            "decorate it with @tether.workflow, or pass 'workflow//<module>//<function>'"
        )
    name = workflow.name if isinstance(workflow, registry.Workflow) else workflow
    registry.parse_workflow_name(name)
    if isinstance(args, str | bytes) or not isinstance(args, Sequence):
        raise TypeError(
            f"start() takes the workflow's arguments as a list, got {type(args).__name__}: "
            f"start({name.rsplit('//', 1)[-1]}, [arg1, arg2])"
        )
    deployment, parameters = _resolve_target(target, name, deployment_id)
    _check_arguments(name, deployment, parameters, args)
    payload = serde.dumps([list(args), {}], where=f"arguments of {name}")
    parent = current_step.get()
    return _create(target, name, deployment, payload, parent.run_id if parent else None, None)


async def start_async(
    workflow: registry.Workflow[..., Any] | str,
    args: Sequence[Any] = (),
    *,
    deployment_id: str | None = None,
    world: World | str | None = None,
) -> Run:
    """``start()`` for async code: the write happens off the event loop."""
    return await asyncio.to_thread(start, workflow, args, deployment_id=deployment_id, world=world)


def get_run(run_id: str, *, world: World | str | None = None) -> Run:
    """The run with that id; raises ``RunNotFoundError`` if there is none."""
    target = resolve_world(world)
    record = target.get_run(run_id)
    if record is None:
        raise RunNotFoundError(f"run {run_id!r} not found in {redact(target.url)}")
    return Run(record, target)


def cancel_run(run_id: str, *, world: World | str | None = None) -> bool:
    """Cancel a run: queued steps dropped, sleeps disposed, a running step's result ignored.

    Returns ``False`` if it had already ended; raises ``RunNotFoundError`` for an unknown id.
    """
    return get_run(run_id, world=world).cancel()


def rerun(
    run_id: str, deployment_id: str | None = None, *, world: World | str | None = None
) -> Run:
    """Start a new run with the same workflow and inputs as ``run_id``; it records ``rerun_of``.

    ``deployment_id=None`` reruns on the original run's deployment,
    ``"latest"`` on the newest one (the usual fix after a bad deploy).
    """
    target = resolve_world(world)
    original = target.get_run(run_id)
    if original is None:
        raise RunNotFoundError(f"run {run_id!r} not found in {redact(target.url)}")
    if deployment_id is None:
        deployment = original.deployment_id
    else:
        deployment = resolve_deployment(target, original.workflow_name, deployment_id)
    return _create(target, original.workflow_name, deployment, original.input, None, run_id)


def cancel_runs(
    *,
    status: str | None = None,
    workflow_name: str | None = None,
    deployment_id: str | None = None,
    limit: int | None = None,
    world: World | str | None = None,
) -> list[str]:
    """Cancel every unfinished run matching the filters; returns the ids it cancelled.

    Raises ``ValueError`` naming a status that is not a run status or that
    names finished runs, which cannot be cancelled.
    """
    target = resolve_world(world)
    if status is not None and status not in RUN_STATUSES:
        raise ValueError(f"invalid status {status!r}: expected one of {', '.join(RUN_STATUSES)}")
    if status in TERMINAL_STATUSES:
        raise ValueError(f"runs with status {status!r} have ended and cannot be cancelled")
    statuses = [status] if status else ["pending", "running"]
    matching = [
        record.run_id
        for wanted in statuses
        for record in iter_runs(
            target,
            RunFilter(status=wanted, workflow_name=workflow_name, deployment_id=deployment_id),
        )
    ]
    if limit is not None:
        matching = matching[:limit]
    cancelled: list[str] = []
    for i in range(0, len(matching), 500):
        cancelled += target.cancel_runs(matching[i : i + 500]).cancelled
    return cancelled


def resume_hook(token: str, payload: Any = None, *, world: World | str | None = None) -> str:
    """Deliver ``payload`` to the hook with ``token`` from any process; returns its run id.

    The run continues on its own deployment. Raises ``HookNotFoundError``
    for an unknown token or a hook whose run has ended, and
    ``SerializationError`` when the payload cannot be stored.
    """
    text = serde.dumps(payload, where=f"payload of hook {token!r}")
    return resolve_world(world).resume_hook(token, text)


async def resume_hook_async(
    token: str, payload: Any = None, *, world: World | str | None = None
) -> str:
    """``resume_hook`` for async code: the write happens off the event loop."""
    return await asyncio.to_thread(resume_hook, token, payload, world=world)


def iter_runs(world: World, filters: RunFilter) -> Iterator[RunRecord]:
    """Every run matching ``filters``, page after page."""
    cursor = filters.cursor
    while True:
        page = world.list_runs(replace(filters, cursor=cursor, limit=500))
        yield from page
        if len(page) < 500:
            return
        cursor = encode_cursor(page[-1].created_at, page[-1].run_id)


def resolve_deployment(target: World, workflow_name: str, deployment_id: str | None) -> str:
    """The deployment a new run of ``workflow_name`` is pinned to; checks it defines it."""
    return _resolve_target(target, workflow_name, deployment_id)[0]


def _resolve_target(
    target: World, workflow_name: str, deployment_id: str | None
) -> tuple[str, inspect.Signature]:
    """``resolve_deployment``, and the workflow's parameters as that deployment records them."""
    if deployment_id == "latest" or (deployment_id is None and not manifest.defines_workflows()):
        environment = manifest.current_environment()
        latest = target.latest_deployment(environment)
        if latest is None:
            raise DeploymentNotFoundError(
                f"no deployment is registered in environment {environment!r} of "
                f"{redact(target.url)}: start a worker first (tether worker MODULE)"
            )
        _check_defines(latest, workflow_name)
        return latest.deployment_id, _recorded_signature(latest, workflow_name)
    own = manifest.current_deployment_id()
    wanted = own if deployment_id is None else deployment_id
    if wanted == own and workflow_name in registry.WORKFLOWS:
        # This process is that code: a worker of it may start later.
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
            " no worker of it has started"
        )
    _check_defines(record, workflow_name)
    return wanted, _recorded_signature(record, workflow_name)


def _recorded_signature(record: DeploymentRecord, workflow_name: str) -> inspect.Signature:
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


def _check_arguments(
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
        raise TypeError(
            f"arguments {list(args)!r} do not fit workflow {name} on deployment "
            f"{deployment!r}: {exc}; it takes ({shown}), e.g. start({short}, [...])"
        ) from None


def _check_defines(record: DeploymentRecord, workflow_name: str) -> None:
    defined = sorted(record.manifest.get("workflows", {}))
    if workflow_name not in defined:
        shown = ", ".join(defined[:10]) + (", ..." if len(defined) > 10 else "")
        raise WorkflowNotFoundError(
            f"workflow {workflow_name!r} is not defined in deployment {record.deployment_id!r}"
            f" (it defines: {shown or 'no workflows'})"
        )


def _create(
    target: World,
    name: str,
    deployment: str,
    payload: str,
    parent_run_id: str | None,
    rerun_of: str | None,
) -> Run:
    run = NewRun(
        run_id=f"run_{uuid.uuid4().hex}",
        workflow_name=name,
        deployment_id=deployment,
        input=payload,
        parent_run_id=parent_run_id,
        rerun_of=rerun_of,
        created_at=target.clock.time(),
    )
    worker = local_worker(target.url, deployment)
    handed = worker.start_local(run) if worker is not None else None
    record = handed.result() if handed is not None else target.create_run(run)
    return Run(record, target)


def _outcome(record: RunRecord) -> Any:
    if record.status == "completed":
        return serde.loads(record.output or "null")
    if record.status == "cancelled":
        raise RunCancelledError(record.run_id)
    error = serde.loads(record.error) if record.error else {"type": "Error", "message": ""}
    raise RunFailedError(record.run_id, error)


def _timeout(record: RunRecord, timeout: float | None) -> TimeoutError:
    return TimeoutError(
        f"run {record.run_id} did not finish within {timeout}s (status: {record.status})"
    )
