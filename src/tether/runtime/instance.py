"""One run's workflow code, kept in memory and advanced event by event.

A ``RunInstance`` is fed the run's events in log order. Events that answer
the code (a step's result, a sleep's end) resolve futures and the loop runs
until the code suspends again; each request the code makes (a step, a sleep)
is matched against the request the log holds at the same position, or, past
the end of the log, becomes a new event. Feeding answers one at a time, in
the same order live and on replay, is what makes a replay take the same path.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import random
import traceback
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from tether import serde, storable
from tether.context import H, HookReceiver, current_instance
from tether.durations import Duration, seconds_until
from tether.errors import HookConflictError, NonDeterminismError, SerializationError
from tether.registry import Workflow
from tether.runtime.loop import WorkflowLoop
from tether.worlds.records import COMMAND_EVENTS, EventRecord, RunRecord

#: Events written by an activation itself: a cached run that sees one was moved elsewhere.
ACTIVATION_EVENTS = COMMAND_EVENTS | {"run_started"}
TERMINAL_EVENTS = frozenset({"run_completed", "run_failed", "run_cancelled"})


class RunInstance:
    """The live state of one run's workflow code on its deterministic loop."""

    def __init__(self, run: RunRecord, definition: Workflow[..., Any]) -> None:
        self.run_id = run.run_id
        self.workflow_name = run.workflow_name
        self.deployment_id = run.deployment_id
        self.definition = definition
        self.input = run.input
        self.loop = WorkflowLoop()  # type: ignore[abstract]
        self.loop.clock = run.created_at
        self.last_seq = 0
        self.started = False
        self.ended = False
        #: Requests (command events) in log order, including those this activation adds.
        self.commands: list[EventRecord] = []
        self.issued = 0
        self.pending: dict[str, asyncio.Future[Any]] = {}
        #: Sleeps not yet over: correlation id -> wake-up time.
        self.waits: dict[str, float] = {}
        self.failure: BaseException | None = None
        #: Hooks by correlation id; disposed ones are removed.
        self.hooks: dict[str, HookReceiver] = {}
        self._new: list[EventRecord] = []
        self._main: asyncio.Task[Any] | None = None
        self._rng = random.Random(run.run_id)

    @property
    def only_sleeping(self) -> bool:
        """Whether only its own sleeps are out: no step or hook can add to its log."""
        return not self.hooks and self.pending.keys() <= self.waits.keys()

    # -- replaying the log and resuming past it ------------------------------

    def replay(self, events: Sequence[EventRecord]) -> None:
        """Apply logged events in order, running the code after each answer."""
        for event in events:
            if event.type in COMMAND_EVENTS:
                self.commands.append(event)
        for event in events:
            self._apply(event)
        if self.done and self.issued < len(self.commands) and self.failure is None:
            logged = self.commands[self.issued]
            self.failure = NonDeterminismError(
                f"run {self.run_id} diverged from its event log at request "
                f"#{self.issued + 1}: the log holds {_describe(logged)} (event {logged.seq}) "
                "but the code finished without asking for it"
            )

    def resume(self, answers: Sequence[EventRecord]) -> list[EventRecord]:
        """Resume the code past the log with new answers (not yet logged); return what to append.

        The answers get the sequence numbers after ``last_seq``; the requests
        the code makes follow them, then ``run_completed`` or ``run_failed``
        if the code finished.
        """
        seq = self.last_seq
        events: list[EventRecord] = []
        for answer in answers:
            seq += 1
            stamped = _with_seq(answer, seq)
            events.append(stamped)
            self._apply(stamped)
        if self.failure is not None:
            self._new.clear()  # a run that must fail records nothing more it asked for
        for request in self._new:
            seq += 1
            events.append(_with_seq(request, seq))
            if request.type == "step_created":
                seq += 1
                events.append(
                    EventRecord(
                        self.run_id,
                        seq,
                        "step_started",
                        request.correlation_id,
                        attrs={"attempt": 1},
                        created_at=request.created_at,
                    )
                )
        self._new.clear()
        end = self._end_event()
        if end is not None:
            for hook_id in list(self.hooks):
                seq += 1
                events.append(
                    EventRecord(
                        self.run_id,
                        seq,
                        "hook_disposed",
                        hook_id,
                        attrs={"reason": "run ended"},
                        created_at=end.created_at,
                    )
                )
            self.hooks.clear()
            events.append(_with_seq(end, seq + 1))
        self.last_seq = events[-1].seq if events else self.last_seq
        return events

    @property
    def done(self) -> bool:
        """Whether the workflow code has returned or raised, or the run must fail."""
        return self.failure is not None or (self._main is not None and self._main.done())

    def close(self) -> None:
        """Drop the suspended code (an evicted or finished run)."""
        if self._main is not None and not self._main.done():
            self._main.cancel()
            # The code's finally-blocks run now; they can no longer act on the run.
            with contextlib.suppress(Exception):
                self.loop.run_ready()
        self.loop.close()

    # -- requests from workflow code ----------------------------------------

    def schedule_step(
        self, step_name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> asyncio.Future[Any]:
        """Ask for a step; the future resolves with its recorded result."""
        payload = serde.dumps([list(args), kwargs], where=f"arguments of {step_name}")
        request = self._request("step_created", step_name, payload, None)
        return self._future_for(request)

    def schedule_sleep(self, duration: Duration) -> asyncio.Future[Any]:
        """Ask for a durable sleep; the future resolves when it is over."""
        now = self.loop.clock
        resume_at = now + seconds_until(duration, now)
        request = self._request("wait_created", None, None, {"resume_at": resume_at})
        assert request.correlation_id is not None
        self.waits[request.correlation_id] = float((request.attrs or {})["resume_at"])
        return self._future_for(request)

    def create_hook(self, attrs: dict[str, Any], make: Callable[[dict[str, Any]], H]) -> H:
        """Ask for a hook; on replay its token, metadata, kind and URL come from the log."""
        request = self._request("hook_created", None, None, attrs)
        hook = make(request.attrs or attrs)
        self.hooks[request.correlation_id or ""] = hook
        return hook

    def now(self) -> datetime:
        """The deterministic current time: when the event being applied happened."""
        return datetime.fromtimestamp(self.loop.clock, tz=UTC)

    def random(self) -> float:
        """A deterministic random float in [0, 1), seeded by the run id."""
        return self._rng.random()

    def uuid4(self) -> uuid.UUID:
        """A deterministic version-4 UUID, from the same seeded generator."""
        return uuid.UUID(int=self._rng.getrandbits(128), version=4)

    # -- internals -----------------------------------------------------------

    def _apply(self, event: EventRecord) -> None:
        self.last_seq = event.seq
        self.loop.clock = event.created_at
        kind = event.type
        if kind == "run_created":
            seed = (event.attrs or {}).get("seed")
            if isinstance(seed, str):  # a fork: its original's random() and uuid4() values
                self._rng = random.Random(seed)
            return
        if kind == "run_started":
            self._start()
        elif kind in ("step_completed", "step_failed", "wait_completed"):
            self._answer(event)
        elif kind in ("hook_received", "hook_disposed"):
            self._hook_event(event)
        elif kind in TERMINAL_EVENTS:
            self.ended = True
            return
        else:
            return
        self.loop.run_ready()

    def _start(self) -> None:
        self.started = True
        try:
            args, kwargs = serde.loads(self.input)
        except Exception as exc:
            self.failure = exc
            return
        context = contextvars.copy_context()
        context.run(current_instance.set, self)
        try:
            coro = self.definition.fn(*args, **kwargs)
        except Exception as exc:
            # Arguments that do not fit (a run started before a check, or by another
            # tool): the run fails once, with the error, instead of replaying forever.
            self.failure = exc
            return
        self._main = self.loop.create_task(coro, name=self.run_id, context=context)

    def _answer(self, event: EventRecord) -> None:
        cid = event.correlation_id or ""
        future = self.pending.pop(cid, None)
        if future is None:
            if self.failure is None:
                self.failure = NonDeterminismError(
                    f"run {self.run_id} diverged from its event log at event {event.seq}: "
                    f"the log answers request #{int(cid) + 1} ({event.type}) which the code "
                    "never made"
                )
            return
        if event.type == "wait_completed":
            self.waits.pop(cid, None)
            result: Any = None
        else:
            try:
                result = serde.loads(event.payload or "null")
            except Exception as exc:
                future.set_exception(exc)
                return
        if future.done():
            return
        if event.type == "step_failed":
            if not isinstance(result, BaseException):
                result = RuntimeError(str(result))
            future.set_exception(result)
        else:
            future.set_result(result)

    def _hook_event(self, event: EventRecord) -> None:
        hook = self.hooks.get(event.correlation_id or "")
        if hook is None:
            if event.type == "hook_received" and self.failure is None:
                self.failure = NonDeterminismError(
                    f"run {self.run_id} diverged from its event log at event {event.seq}: a "
                    f"payload arrived for hook request #{int(event.correlation_id or 0) + 1}, "
                    "which the code never made"
                )
            return
        if event.type == "hook_received":
            try:
                hook.receive(serde.loads(event.payload or "null"))
            except Exception as exc:
                hook.fail(exc)
            return
        del self.hooks[event.correlation_id or ""]
        if (event.attrs or {}).get("reason") == "conflict":
            hook.fail(
                HookConflictError(
                    f"hook token {hook.token!r} is already held by another active hook"
                )
            )

    def _request(
        self, kind: str, name: str | None, payload: str | None, attrs: dict[str, Any] | None
    ) -> EventRecord:
        position = self.issued
        self.issued += 1
        if position < len(self.commands):
            logged = self.commands[position]
            if logged.type != kind or logged.name != name:
                asked = EventRecord(self.run_id, 0, kind, name=name)
                error = NonDeterminismError(
                    f"run {self.run_id} diverged from its event log at request "
                    f"#{position + 1}: the log holds {_describe(logged)} (event {logged.seq}), "
                    f"the code asked for {_describe(asked)}"
                )
                self.failure = self.failure or error
                raise error
            return logged
        request = EventRecord(
            self.run_id,
            0,
            kind,
            str(position),
            name,
            payload,
            attrs,
            created_at=self.loop.clock,
        )
        self.commands.append(request)
        self._new.append(request)
        return request

    def _future_for(self, request: EventRecord) -> asyncio.Future[Any]:
        future = self.loop.create_future()
        self.pending[request.correlation_id or ""] = future
        return future

    def _end_event(self) -> EventRecord | None:
        """``run_completed`` or ``run_failed`` once the code is done (``resume`` numbers it)."""
        if not self.done or self.ended:
            return None
        self.ended = True
        at = self.loop.clock
        if self.failure is not None:
            return EventRecord(
                self.run_id, 0, "run_failed", payload=error_payload(self.failure), created_at=at
            )
        assert self._main is not None
        if self._main.cancelled():
            error = RuntimeError("the workflow's main task was cancelled")
            return EventRecord(
                self.run_id, 0, "run_failed", payload=error_payload(error), created_at=at
            )
        exc = self._main.exception()
        if exc is not None:
            return EventRecord(
                self.run_id, 0, "run_failed", payload=error_payload(exc), created_at=at
            )
        try:
            output = serde.dumps(self._main.result(), where=f"return value of {self.workflow_name}")
        except SerializationError as error:
            return EventRecord(
                self.run_id, 0, "run_failed", payload=error_payload(error), created_at=at
            )
        return EventRecord(self.run_id, 0, "run_completed", payload=output, created_at=at)


def error_payload(exc: BaseException) -> str:
    """The stored form of a run's failure: type, message and traceback, as plain fields."""
    kind = type(exc)
    tb = getattr(exc, "__tether_traceback__", None) or "".join(
        traceback.format_exception(kind, exc, exc.__traceback__)
    )
    return serde.dumps(
        {
            "type": f"{kind.__module__}.{kind.__qualname__}",
            # Escaped, not refused: a run must be able to fail whatever its error says.
            "message": storable.escape_surrogates(str(exc)),
            "traceback": storable.escape_surrogates(tb),
        }
    )


def _with_seq(event: EventRecord, seq: int) -> EventRecord:
    return EventRecord(
        event.run_id,
        seq,
        event.type,
        event.correlation_id,
        event.name,
        event.payload,
        event.attrs,
        event.created_at,
    )


def _describe(event: EventRecord) -> str:
    if event.type == "step_created":
        return f"step {event.name!r}"
    if event.type == "wait_created":
        return "a sleep"
    if event.type == "hook_created":
        return "a hook"
    return event.type
