"""The client side: configure a World, start runs, look at them, cancel them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from tether import deployments, registry, serde
from tether.errors import RunCancelledError, RunFailedError, RunNotFoundError
from tether.runtime.context import current_step
from tether.worlds import DEFAULT_WORLD_URL, open_world
from tether.worlds.base import TERMINAL_STATUSES, EventRecord, NewRun, RunRecord, StepRecord, World

_configured_url: str | None = None
_worlds: dict[str, World] = {}
_worlds_lock = threading.Lock()


def configure(world: str | None = None) -> None:
    """Choose the World this process uses: a URL such as ``sqlite:///.tether/tether.db``.

    Without a call, ``$TETHER_WORLD`` is used, else that embedded default.
    """
    global _configured_url
    _configured_url = world


def world_url() -> str:
    """The URL of the configured World (``configure``, ``$TETHER_WORLD``, or the default)."""
    return _configured_url or os.environ.get("TETHER_WORLD") or DEFAULT_WORLD_URL


def resolve_world(world: World | str | None = None) -> World:
    """The World to use: the one given, one opened from a URL, or the configured one.

    Worlds opened from a URL are shared by the whole process.
    """
    if isinstance(world, World):
        return world
    url = world or world_url()
    with _worlds_lock:
        found = _worlds.get(url)
        if found is None:
            found = _worlds[url] = open_world(url)
        return found


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
        from tether.runtime.worker import on_worker_loop

        if on_worker_loop():
            raise RuntimeError(
                "run.result() would block the worker's event loop: "
                "use `await run.result_async()` in an async step"
            )
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            record = self._record()
            if record.status in TERMINAL_STATUSES:
                return _outcome(record)
            remaining = 1.0 if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                raise _timeout(record, timeout)
            self._world.wait_for_change(min(remaining, 1.0))

    async def result_async(self, timeout: float | None = None) -> Any:
        """``result()`` for async code: waits without blocking the event loop."""
        loop = asyncio.get_running_loop()
        changed = asyncio.Event()

        def notify() -> None:
            loop.call_soon_threadsafe(changed.set)

        remove = self._world.add_listener(notify)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                changed.clear()
                record = self._record()
                if record.status in TERMINAL_STATUSES:
                    return _outcome(record)
                remaining = 1.0 if deadline is None else deadline - time.monotonic()
                if remaining <= 0:
                    raise _timeout(record, timeout)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), min(remaining, 1.0))
        finally:
            remove()

    def cancel(self) -> bool:
        """Cancel the run; returns ``False`` if it had already ended."""
        return bool(self._world.cancel_runs([self.run_id]).cancelled)

    def events(self) -> list[EventRecord]:
        """The run's event log so far, in order."""
        return self._world.list_events(self.run_id)

    def steps(self) -> list[StepRecord]:
        """The run's steps so far, in the order they were asked for."""
        return self._world.list_steps(self.run_id)

    def _record(self) -> RunRecord:
        record = self._world.get_run(self.run_id)
        if record is None:
            raise RunNotFoundError(f"run {self.run_id!r} not found in {self._world.url}")
        return record


def start(
    workflow: registry.Workflow[..., Any] | str,
    args: Sequence[Any] = (),
    *,
    deployment_id: str | None = None,
    world: World | str | None = None,
) -> Run:
    """Start a run of ``workflow`` (the function or its name) with ``args``.

    ``deployment_id=None`` pins the run to this process's deployment,
    ``"latest"`` to the newest one, any other string to that deployment.
    Inside a step, the new run records the step's run as its parent.
    Raises ``SerializationError`` when an argument cannot be stored.
    """
    target = resolve_world(world)
    name = workflow.name if isinstance(workflow, registry.Workflow) else workflow
    registry.parse_workflow_name(name)
    if isinstance(args, str | bytes) or not isinstance(args, Sequence):
        raise TypeError(
            f"start() takes the workflow's arguments as a list, got {type(args).__name__}: "
            f"start({name.rsplit('//', 1)[-1]}, [arg1, arg2])"
        )
    payload = serde.dumps([list(args), {}], where=f"arguments of {name}")
    deployment = _resolve_deployment(deployment_id)
    parent = current_step.get()
    from tether.runtime.worker import local_worker

    worker = local_worker(target.url, deployment)
    record = target.create_run(
        NewRun(
            run_id=f"run_{uuid.uuid4().hex}",
            workflow_name=name,
            deployment_id=deployment,
            input=payload,
            parent_run_id=parent.run_id if parent else None,
            lease_to=worker.worker_id if worker else None,
        )
    )
    if worker is not None:
        worker.accept(record.run_id)
    return Run(record, target)


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
        raise RunNotFoundError(f"run {run_id!r} not found in {target.url}")
    return Run(record, target)


def cancel_run(run_id: str, *, world: World | str | None = None) -> bool:
    """Cancel a run: queued steps dropped, sleeps disposed, a running step's result ignored.

    Returns ``False`` if it had already ended; raises ``RunNotFoundError`` for an unknown id.
    """
    return get_run(run_id, world=world).cancel()


def _resolve_deployment(deployment_id: str | None) -> str:
    if deployment_id is None or deployment_id == "latest":
        return deployments.current_deployment_id()
    return deployment_id


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
