"""Whether a run's recorded history replays on other code: the core of moving a run.

``check_run`` replays a run's event log against a workflow definition (the
code of the deployment the run would move to) and says how far the new code
agrees with what the log holds. No step runs: every answer comes from the log.
A request that differs from the logged one at the same position (another
step, a step with other arguments, a sleep where the log holds a step, the
code ending early) is where the run diverges; the steps logged before it are
what a fork onto the new code may keep.
"""

from __future__ import annotations

import ctypes
import inspect
import itertools
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from tether import registry, serde
from tether.errors import NonDeterminismError
from tether.registry import Workflow
from tether.runtime.instance import RunInstance
from tether.worlds.records import COMMAND_EVENTS, EventRecord, RunRecord

Verdict = Literal["replays", "diverges", "incompatible"]

#: Seconds one run's replay may take: its code runs, but no step, sleep or I/O does.
DEFAULT_BUDGET = 5.0
#: Seconds past the budget after which a replay that never suspends is interrupted.
WATCHDOG_GRACE = 0.5


class OverBudget(BaseException):
    """Raised into a replay's thread past its budget (a ``BaseException``: code that
    catches ``Exception`` in a loop cannot swallow it)."""


def _interrupt_after(seconds: float) -> Callable[[], None]:
    """Raise ``OverBudget`` in this thread after ``seconds``, unless the returned
    function is called first. Pure-Python code cannot otherwise be stopped from
    outside; CPython's ``PyThreadState_SetAsyncExc`` delivers the exception at the
    thread's next bytecode boundary. One watchdog thread serves every replay."""
    return _WATCHDOG.arm(threading.get_ident(), time.monotonic() + seconds)


class _Watchdog:
    """One thread that interrupts the replays whose deadline passed (a timer each costs a
    thread start per run)."""

    def __init__(self) -> None:
        self._armed: dict[int, tuple[float, int]] = {}  # token: (deadline, thread)
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._tokens = itertools.count()

    def arm(self, thread: int, deadline: float) -> Callable[[], None]:
        token = next(self._tokens)
        with self._changed:
            self._armed[token] = (deadline, thread)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._watch, name="tether-replay-watchdog", daemon=True
                )
                self._thread.start()
            self._changed.notify()

        def disarm() -> None:
            with self._changed:
                self._armed.pop(token, None)

        return disarm

    def _watch(self) -> None:
        with self._changed:
            while True:
                now = time.monotonic()
                for token, (deadline, thread) in list(self._armed.items()):
                    if deadline <= now:
                        del self._armed[token]
                        ctypes.pythonapi.PyThreadState_SetAsyncExc(
                            ctypes.c_ulong(thread), ctypes.py_object(OverBudget)
                        )
                upcoming = min((d for d, _ in self._armed.values()), default=None)
                self._changed.wait(None if upcoming is None else max(upcoming - now, 0.01))


_WATCHDOG = _Watchdog()


@dataclass(frozen=True, slots=True)
class RunCheck:
    """What the new code makes of one run's history.

    ``fork_point`` is how many of the run's logged requests (steps, sleeps,
    hooks, numbered as ``tether inspect steps`` numbers them) the new code
    makes exactly as logged, in order: a fork may keep requests ``0 ..
    fork_point-1`` and run the rest on the new code. ``None`` for
    ``incompatible``.
    """

    run_id: str
    verdict: Verdict
    fork_point: int | None
    reason: str


def check_run(
    run: RunRecord,
    events: Sequence[EventRecord],
    definition: Workflow[..., Any] | None,
    *,
    budget: float = DEFAULT_BUDGET,
) -> RunCheck:
    """Replay ``events`` (the run's whole log so far) against ``definition``; never runs a step.

    ``definition`` is the workflow as the new code defines it, ``None`` when
    that code does not define it. A replay that takes over ``budget`` seconds
    (code that never suspends) makes the run ``incompatible``.
    """
    if definition is None:
        return RunCheck(
            run.run_id, "incompatible", None, f"the new code does not define {run.workflow_name}"
        )
    try:
        args, kwargs = serde.loads(run.input)
        definition.signature.bind(*args, **kwargs)
    except Exception as exc:  # arguments that do not bind, or cannot be read back
        return RunCheck(
            run.run_id,
            "incompatible",
            None,
            f"the run's arguments do not fit the new {run.workflow_name}: {exc}",
        )
    instance = _Checking(run, definition)
    instance.loop.deadline = time.monotonic() + budget
    logged = [e for e in events if e.type in COMMAND_EVENTS]
    try:
        # The loop's deadline stops code that suspends; the watchdog, a little later,
        # code that never does (``while True: pass``), which would hold the thread.
        stop_watchdog = _interrupt_after(budget + WATCHDOG_GRACE)
        try:
            instance.replay(events)
            raised = _raised(instance)
        finally:
            stop_watchdog()
        if isinstance(raised, OverBudget) or isinstance(instance.failure, OverBudget):
            raise OverBudget  # the workflow's task caught it as its own end
    except (TimeoutError, OverBudget):
        return RunCheck(
            run.run_id,
            "incompatible",
            None,
            f"replaying its {len(events)} events on the new code took over {budget:g} s: the"
            " code runs without suspending (a loop that never awaits a step, sleep or hook),"
            " or the log is too long to replay in that time (give check_run a larger budget)",
        )
    finally:
        instance.close()
    failure = instance.failure
    if isinstance(failure, NonDeterminismError):
        at = instance.diverged_at if instance.diverged_at is not None else instance.issued
        return RunCheck(run.run_id, "diverges", min(at, len(logged)), str(failure))
    if failure is not None or raised is not None:
        error = failure or raised
        return RunCheck(
            run.run_id,
            "incompatible",
            None,
            f"the new code raises {type(error).__qualname__}: {error} after request"
            f" #{instance.issued} of the log, so the run would fail there",
        )
    return RunCheck(
        run.run_id,
        "replays",
        len(logged),
        f"the new code asks for all {len(logged)} logged requests as logged",
    )


#: Events that end a run: never part of a fork's history.
_ENDINGS = frozenset({"run_completed", "run_failed", "run_cancelled"})
#: What answers a step: a step asked for and not answered is queued again.
_STEP_ENDS = frozenset({"step_completed", "step_failed"})


def kept_history(events: Sequence[EventRecord], point: int) -> list[EventRecord]:
    """What a fork from request ``point`` keeps of the log ``events`` (its first event left out).

    The events before request ``point`` (numbered as ``tether inspect steps``
    numbers them), without the run's ending, hooks it let go of, and a step
    not answered kept only as asked for (it is queued again). ``point`` must be
    from 0 to the number of requests logged.
    """
    requests = [e for e in events if e.type in COMMAND_EVENTS]
    cut = events.index(requests[point]) if point < len(requests) else len(events)
    kept = events[1:cut]
    answered = {e.correlation_id for e in kept if e.type in _STEP_ENDS}
    asked = {e.correlation_id for e in kept if e.type == "step_created"}
    unanswered = asked - answered
    return [
        e
        for e in kept
        if e.type not in _ENDINGS
        and not (e.type == "hook_disposed" and (e.attrs or {}).get("reason") != "conflict")
        and not (e.correlation_id in unanswered and e.type in ("step_started", "step_retrying"))
    ]


# -- helpers ------------------------------------------------------------------


def _raised(instance: RunInstance) -> BaseException | None:
    """The exception the new code ended with, if it ended so while replaying the log."""
    main = instance._main
    if main is None or not main.done() or main.cancelled():
        return None
    return main.exception()


def _same_call(step_name: str, logged: str | None, asked: str | None) -> bool:
    """Whether two requests of a step pass it the same values (defaults applied)."""
    if logged == asked:
        return True
    step = registry.STEPS.get(step_name)
    if step is None:
        return False
    signature = inspect.signature(step.fn)
    try:
        calls = []
        for payload in (logged, asked):
            args, kwargs = serde.loads(payload or "[[], {}]")
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            calls.append(bound.arguments)
    except Exception:  # arguments the step cannot take: not the same call
        return False
    return calls[0] == calls[1]


class _Checking(RunInstance):
    """A replay that also compares a step's arguments, and notes where it diverged.

    ``diverged_at`` is the request the code was at when the run first failed
    to replay: the replay goes on after that, but nothing it does then counts.
    """

    diverged_at: int | None = None
    _failure: BaseException | None = None

    @property  # type: ignore[override]
    def failure(self) -> BaseException | None:
        return self._failure

    @failure.setter
    def failure(self, error: BaseException | None) -> None:
        if error is not None and self._failure is None and self.diverged_at is None:
            self.diverged_at = self.issued
        self._failure = error

    def _request(
        self, kind: str, name: str | None, payload: str | None, attrs: dict[str, Any] | None
    ) -> EventRecord:
        position = self.issued
        if position < len(self.commands) and self.diverged_at is None:
            logged = self.commands[position]
            if logged.type != kind or logged.name != name:
                self.diverged_at = position  # the base class raises the error
            elif kind == "step_created" and not _same_call(name or "", logged.payload, payload):
                self.diverged_at = position
                self.issued += 1
                error = NonDeterminismError(
                    f"run {self.run_id} diverged from its event log at request #{position + 1}:"
                    f" the log holds step {name!r} with arguments {_args(logged.payload)}"
                    f" (event {logged.seq}), the code asked for it with {_args(payload)}"
                )
                self.failure = self.failure or error
                raise error
        return super()._request(kind, name, payload, attrs)


def _args(payload: str | None) -> str:
    try:
        args, kwargs = serde.loads(payload or "[[], {}]")
    except Exception:
        return repr(payload)
    shown = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
    text = f"({', '.join(shown)})"
    return text if len(text) <= 80 else text[:77] + "...)"
