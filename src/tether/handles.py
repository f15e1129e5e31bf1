"""A handle on one run (``Run``) and on its hooks, as ``start`` and ``get_run`` return them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from tether import serde
from tether.config import on_worker_loop
from tether.errors import (
    ContextError,
    RunCancelledError,
    RunFailedError,
    RunNotFoundError,
    RunTimeoutError,
)
from tether.hooks import webhook_url
from tether.readers import Readable, upgraded_to
from tether.redaction import redact
from tether.streams import DEFAULT_NAMESPACE
from tether.worlds.base import World
from tether.worlds.records import (
    TERMINAL_STATUSES,
    EventRecord,
    HookRecord,
    RunFilter,
    RunRecord,
    StepRecord,
)
from tether.worlds.schema import encode_cursor


@dataclass(frozen=True, slots=True)
class RunHook:
    """A hook a run created: its token, whether it is a webhook, and whether it is active.

    ``status`` is ``active`` (payloads are delivered), ``disposed`` (its run
    ended or it was released) or ``conflict`` (another hook held its token).
    """

    run_id: str
    token: str
    status: str
    webhook: bool
    metadata: Any
    created_at: datetime
    disposed_at: datetime | None

    @property
    def url(self) -> str | None:
        """The webhook's absolute URL (``None`` for a plain hook).

        Raises ``ConfigurationError`` when ``TETHER_WEBHOOK_BASE_URL`` is unset.
        """
        return webhook_url(self.token) if self.webhook else None


class Run:
    """A handle on one run: its identity, and ways to watch or end it."""

    def __init__(self, record: RunRecord, world: World, *, is_new: bool = False) -> None:
        self._world = world
        #: Whether the call that returned this handle started the run: ``False`` for
        #: ``get_run`` and ``list_runs``, and for a ``start(run_id=...)`` that found it.
        self.is_new = is_new
        self._attrs: dict[str, Any] | None = None
        self.run_id = record.run_id
        self.workflow_name = record.workflow_name
        self.deployment_id = record.deployment_id
        self.parent_run_id = record.parent_run_id
        self.rerun_of = record.rerun_of
        self.created_at = datetime.fromtimestamp(record.created_at, tz=UTC)

    def __repr__(self) -> str:
        return f"<Run {self.run_id} {self.workflow_name} on {self.deployment_id}>"

    @property
    def forked_from(self) -> str | None:
        """The run this one was forked from (``rerun(..., from_step=N)``), else ``None``."""
        return self._created_attrs().get("forked_from")

    @property
    def fork_point(self) -> int | None:
        """How many of ``forked_from``'s requests this run's history kept, else ``None``."""
        point = self._created_attrs().get("fork_point")
        return point if isinstance(point, int) else None

    @property
    def upgraded_to(self) -> str | None:
        """The run that replaced this one when an upgrade moved it (it ended cancelled)."""
        return upgraded_to(self._world, self._record())

    def _created_attrs(self) -> dict[str, Any]:
        if self._attrs is None:
            first = self._world.list_events(self.run_id)[:1]
            self._attrs = dict(first[0].attrs or {}) if first else {}
        return self._attrs

    def status(self) -> str:
        """``pending``, ``running``, ``completed``, ``failed`` or ``cancelled``."""
        return self._record().status

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the run to end and return its result.

        Raises ``RunFailedError`` or ``RunCancelledError`` when it did not
        complete, and ``TimeoutError`` when ``timeout`` seconds pass first.
        """
        if on_worker_loop():
            raise ContextError(
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
        """Runs started from this run's steps (child runs and continuations), oldest first.

        A fork's include those its original's kept steps started: they stay linked.
        """
        found = list(iter_runs(self._world, RunFilter(parent_run_id=self.run_id, descending=False)))
        # Up the fork chain: each fork keeps what its original's kept steps started.
        handle: Run = self
        kept_until = float("inf")
        for _ in range(100):
            original = handle.forked_from
            if original is None:
                break
            until = handle._created_attrs().get("kept_until")
            if not isinstance(until, float | int):  # it kept all: what came before it
                until = handle._record().created_at
            kept_until = min(kept_until, until)
            family = RunFilter(parent_run_id=original, descending=False)
            found += [r for r in iter_runs(self._world, family) if r.created_at < kept_until]
            record = self._world.get_run(original)
            if record is None:
                break
            handle = Run(record, self._world)
        found.sort(key=lambda record: record.created_at)
        return [Run(record, self._world) for record in found]

    async def status_async(self) -> str:
        """``status()`` for async code: the read happens off the event loop."""
        return self._found(await self._world.get_run_async(self.run_id)).status

    def hooks(self) -> list[RunHook]:
        """The hooks the run created, oldest first; a webhook's ``url`` is where to POST."""
        return [_hook(record) for record in self._world.list_hooks(self.run_id)]

    def steps(self) -> list[StepRecord]:
        """The run's steps so far, in the order they were asked for."""
        return self._world.list_steps(self.run_id)

    def _record(self) -> RunRecord:
        return self._found(self._world.get_run(self.run_id))

    def _found(self, record: RunRecord | None) -> RunRecord:
        if record is None:
            raise RunNotFoundError(f"run {self.run_id!r} not found in {redact(self._world.url)}")
        return record


def _outcome(record: RunRecord) -> Any:
    if record.status == "completed":
        return serde.loads(record.output or "null")
    if record.status == "cancelled":
        raise RunCancelledError(record.run_id)
    error = serde.loads(record.error) if record.error else {"type": "Error", "message": ""}
    raise RunFailedError(record.run_id, error)


def _timeout(record: RunRecord, timeout: float | None) -> RunTimeoutError:
    return RunTimeoutError(
        f"run {record.run_id} did not finish within {timeout}s (status: {record.status})"
    )


def iter_runs(world: World, filters: RunFilter) -> Iterator[RunRecord]:
    """Every run matching ``filters``, page after page."""
    cursor = filters.cursor
    while True:
        page = world.list_runs(replace(filters, cursor=cursor, limit=500))
        yield from page
        if len(page) < 500:
            return
        cursor = encode_cursor(page[-1].created_at, page[-1].run_id)


def _hook(record: HookRecord) -> RunHook:
    disposed = record.disposed_at
    return RunHook(
        run_id=record.run_id,
        token=record.token,
        status=record.status,
        webhook=record.webhook,
        metadata=record.metadata,
        created_at=datetime.fromtimestamp(record.created_at, tz=UTC),
        disposed_at=None if disposed is None else datetime.fromtimestamp(disposed, tz=UTC),
    )
