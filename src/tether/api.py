"""The client side: start runs, find them, cancel and rerun them, resume their hooks."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Sequence
from typing import Any

from tether import forking, registry, serde
from tether.config import local_worker, resolve_world
from tether.context import current_instance, current_step
from tether.errors import (
    ContextError,
    InvalidTypeError,
    InvalidValueError,
    RunExistsError,
    RunNotFoundError,
)
from tether.forking import FromStep
from tether.handles import Run, RunHook, iter_runs
from tether.pinning import check_arguments, check_run_id, resolve_target
from tether.redaction import redact
from tether.worlds.base import World
from tether.worlds.records import RUN_STATUSES, TERMINAL_STATUSES, NewRun, RunFilter, RunRecord


def start(
    workflow: registry.Workflow[..., Any] | str,
    args: Sequence[Any] = (),
    *,
    deployment_id: str | None = None,
    run_id: str | None = None,
    world: World | str | None = None,
) -> Run:
    """Start a run of ``workflow`` (the function or its name) with ``args``.

    ``deployment_id=None`` pins the run to this process's own deployment (a
    process that defines no workflows uses ``"latest"``); ``"latest"`` to the
    newest registered deployment of this environment; any other string to
    that deployment. ``run_id`` names the run, making the start idempotent:
    if a run of this workflow has that id, it is returned and nothing is
    started. Inside a step the new run records the step's run as its
    parent. Raises ``TypeError`` when ``args`` do not fit the workflow's
    parameters, ``WorkflowNotFoundError`` when the target deployment does
    not define it, ``DeploymentNotFoundError`` when no worker of the target
    ever registered, ``RunExistsError`` when ``run_id`` is another workflow's
    run, ``InvalidRunIdError`` for an id tether cannot store, and
    ``SerializationError`` when an argument cannot be stored.
    """
    _outside_workflow_code("start")
    target = resolve_world(world)
    if not isinstance(workflow, registry.Workflow | str):
        shown = getattr(workflow, "__qualname__", None) or type(workflow).__name__
        raise InvalidTypeError(
            f"start() takes a @workflow function or a workflow name, got {shown!r}: "
            "decorate it with @tether.workflow, or pass 'workflow//<module>//<function>'"
        )
    name = workflow.name if isinstance(workflow, registry.Workflow) else workflow
    registry.parse_workflow_name(name)
    if isinstance(args, str | bytes) or not isinstance(args, Sequence):
        raise InvalidTypeError(
            f"start() takes the workflow's arguments as a list, got {type(args).__name__}: "
            f"start({name.rsplit('//', 1)[-1]}, [arg1, arg2])"
        )
    if run_id is not None:
        check_run_id(run_id)
        # A retried start finds its run whatever was deployed since, with the
        # arguments it had: the id, not the deployment or the arguments, names it.
        existing = target.get_run(run_id)
        if existing is not None:
            return _named(target, existing, run_id, name, is_new=False)
    deployment, parameters = resolve_target(target, name, deployment_id)
    check_arguments(name, deployment, parameters, args)
    payload = serde.dumps([list(args), {}], where=f"arguments of {name}")
    parent = current_step.get()
    return _create(
        target, name, deployment, payload, parent.run_id if parent else None, None, run_id
    )


async def start_async(
    workflow: registry.Workflow[..., Any] | str,
    args: Sequence[Any] = (),
    *,
    deployment_id: str | None = None,
    run_id: str | None = None,
    world: World | str | None = None,
) -> Run:
    """``start()`` for async code: the write happens off the event loop."""
    _outside_workflow_code("start_async")
    return await asyncio.to_thread(
        start, workflow, args, deployment_id=deployment_id, run_id=run_id, world=world
    )


def get_run(run_id: str, *, world: World | str | None = None) -> Run:
    """The run with that id; raises ``RunNotFoundError`` if there is none."""
    target = resolve_world(world)
    return Run(_found(target, run_id, target.get_run(run_id)), target)


async def get_run_async(run_id: str, *, world: World | str | None = None) -> Run:
    """``get_run()`` for async code: the read happens off the event loop."""
    target = resolve_world(world)
    return Run(_found(target, run_id, await target.get_run_async(run_id)), target)


def list_runs(
    *,
    status: str | None = None,
    workflow_name: str | None = None,
    deployment_id: str | None = None,
    parent_run_id: str | None = None,
    rerun_of: str | None = None,
    limit: int | None = 100,
    world: World | str | None = None,
) -> list[Run]:
    """Runs matching every filter given, newest first; at most ``limit`` (``None``: all).

    Filters are exact: a run status (``pending``, ``running``, ``completed``,
    ``failed``, ``cancelled``), a full workflow name, a deployment id, the
    run a child or continuation was started from, the run a rerun repeats.
    """
    target = resolve_world(world)
    _check_status(status)
    if workflow_name is not None:
        registry.parse_workflow_name(workflow_name)  # a short name would match nothing
    if limit is not None and (not isinstance(limit, int) or limit < 0):
        raise InvalidValueError(f"invalid limit {limit!r}: expected a count >= 0, or None for all")
    filters = RunFilter(
        status=status,
        workflow_name=workflow_name,
        deployment_id=deployment_id,
        parent_run_id=parent_run_id,
        rerun_of=rerun_of,
    )
    return [Run(record, target) for record in itertools.islice(iter_runs(target, filters), limit)]


def cancel_run(run_id: str, *, world: World | str | None = None) -> bool:
    """Cancel a run: queued steps dropped, sleeps disposed, a running step's result ignored.

    Returns ``False`` if it had already ended; raises ``RunNotFoundError`` for an unknown id.
    """
    return get_run(run_id, world=world).cancel()


def rerun(
    run_id: str,
    deployment_id: str | None = None,
    *,
    new_run_id: str | None = None,
    from_step: FromStep | None = None,
    world: World | str | None = None,
) -> Run:
    """Start a new run with the same workflow and inputs as ``run_id``; it records ``rerun_of``.

    ``deployment_id=None`` reruns on the original run's deployment,
    ``"latest"`` on the newest one (the usual fix after a bad deploy).
    ``new_run_id`` names the new run, as ``start(run_id=...)`` does: a
    retried rerun returns the run the first one made.

    ``from_step=N`` forks instead of starting over: the new run's log starts
    with the original's history before its request ``N`` (as ``tether
    inspect steps`` numbers them), whose steps keep their results and are
    not run again; ``"auto"`` is the furthest point the target's code
    replays (for a failed run, the step that failed it). The history is
    checked against the target's code first, here when this process holds
    it, else by a live worker of the target; nothing is written if it
    diverges. The new
    run records ``forked_from`` and ``fork_point``; the original is left as
    it is (cancel it to stop it).
    """
    _outside_workflow_code("rerun")
    target = resolve_world(world)
    original = _found(target, run_id, target.get_run(run_id))
    if new_run_id is not None:
        check_run_id(new_run_id)
    if deployment_id is None:
        deployment = original.deployment_id
    else:
        deployment = resolve_target(target, original.workflow_name, deployment_id)[0]
    name = original.workflow_name
    if from_step is not None:
        if new_run_id is not None:
            existing = target.get_run(new_run_id)
            if existing is not None:
                return _named(target, existing, new_run_id, name, is_new=False)
        made = forking.fork(target, original, deployment, from_step, new_run_id)
        return Run(made, target, is_new=True)
    return _create(target, name, deployment, original.input, None, run_id, new_run_id)


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
    _check_status(status)
    if status in TERMINAL_STATUSES:
        raise InvalidValueError(f"runs with status {status!r} have ended and cannot be cancelled")
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
    _outside_workflow_code("resume_hook")
    text = serde.dumps(payload, where=f"payload of hook {token!r}")
    return resolve_world(world).resume_hook(token, text)


async def resume_hook_async(
    token: str, payload: Any = None, *, world: World | str | None = None
) -> str:
    """``resume_hook`` for async code: the write happens off the event loop."""
    return await asyncio.to_thread(resume_hook, token, payload, world=world)


# -- helpers ------------------------------------------------------------------


def _outside_workflow_code(call: str) -> None:
    """Refuse a write from workflow code itself: each replay would make it again."""
    if current_instance.get() is not None:
        raise ContextError(
            f"{call}() writes to the World, and workflow code runs again on every replay:"
            f" call it in a @step (its result is recorded once), e.g. a step that starts"
            " the child run and returns its run_id"
        )


def _check_status(status: str | None) -> None:
    if status is not None and status not in RUN_STATUSES:
        raise InvalidValueError(
            f"invalid status {status!r}: expected one of {', '.join(RUN_STATUSES)}"
        )


def _found(target: World, run_id: str, record: RunRecord | None) -> RunRecord:
    if record is None:
        raise RunNotFoundError(f"run {run_id!r} not found in {redact(target.url)}")
    return record


def _create(
    target: World,
    name: str,
    deployment: str,
    payload: str,
    parent_run_id: str | None,
    rerun_of: str | None,
    run_id: str | None,
) -> Run:
    run = NewRun(
        run_id=run_id or f"run_{uuid.uuid4().hex}",
        workflow_name=name,
        deployment_id=deployment,
        input=payload,
        parent_run_id=parent_run_id,
        rerun_of=rerun_of,
        created_at=target.clock.time(),
        if_absent=run_id is not None,
    )
    # A named run may exist already; the World answers that, so it is not handed
    # to a local worker, which would compute a first activation for it.
    worker = local_worker(target.url, deployment) if run_id is None else None
    handed = worker.start_local(run) if worker is not None else None
    record = handed.result() if handed is not None else target.create_run(run)
    if run_id is None:
        return Run(record, target, is_new=True)
    made = (record.created_at, record.input) == (run.created_at, run.input)
    return _named(target, record, run_id, name, is_new=made)


def _named(target: World, record: RunRecord, run_id: str, name: str, *, is_new: bool) -> Run:
    """The run a start named ``run_id``, unless it is another workflow's."""
    if record.workflow_name != name:
        raise RunExistsError(
            f"run id {run_id!r} is taken by a run of {record.workflow_name} (status"
            f" {record.status}), not {name}: name this run otherwise, or look that one up"
            f" with get_run({run_id!r})"
        )
    return Run(record, target, is_new=is_new)


__all__ = [
    "Run",
    "RunHook",
    "cancel_run",
    "cancel_runs",
    "get_run",
    "get_run_async",
    "iter_runs",
    "list_runs",
    "rerun",
    "resume_hook",
    "resume_hook_async",
    "start",
    "start_async",
]
