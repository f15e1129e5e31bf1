"""``@workflow`` and ``@step``: the durable functions a process defines, by name."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, ParamSpec, TypeVar, overload

from tether.context import current_instance
from tether.errors import ContextError, InvalidTypeError, InvalidValueError

P = ParamSpec("P")
R = TypeVar("R")

WORKFLOW_PREFIX = "workflow"
STEP_PREFIX = "step"

#: Every workflow and step this process imported, by name.
WORKFLOWS: dict[str, Workflow[..., Any]] = {}
STEPS: dict[str, Step[..., Any]] = {}


class Workflow(Generic[P, R]):
    """A durable workflow: an ``async def`` replayed from its event log.

    ``tether.start(wf, [args])`` runs it durably. Calling it is only for
    workflow code (it runs inline, part of the caller's run); anywhere else it
    raises ``ContextError``, since nothing would be durable.
    ``wf.fn`` is the plain ``async def``.
    """

    def __init__(self, fn: Callable[P, Awaitable[R]]) -> None:
        if not inspect.iscoroutinefunction(fn):
            raise InvalidTypeError(
                f"@workflow needs an async def, got {fn.__qualname__!r}: "
                "write it as `async def` (steps may be plain def)"
            )
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.name = f"{WORKFLOW_PREFIX}//{fn.__module__}//{fn.__qualname__}"
        #: Its parameters, read once: ``start()`` binds every run's arguments to them.
        self.signature = inspect.signature(fn)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Awaitable[R]:
        if current_instance.get() is None:
            short = self.name.rsplit("//", 1)[-1]
            raise ContextError(
                f"{short}() is a @workflow: calling it outside a run would run nothing durably."
                f" Start a run with tether.start({short}, [args]) (it returns a Run; "
                f"run.result() waits for it) where a worker serves it; in a test, use the"
                f" tether_env fixture (tether_env.start({short}, [args])); or call"
                f" {short}.fn(...) for the plain coroutine"
            )
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<workflow {self.name}>"


class Step(Generic[P, R]):
    """A durable step: its result is recorded once and replayed, never recomputed.

    Inside a workflow, calling it returns an awaitable answered from the log or
    scheduled durably; anywhere else it runs as the plain function.
    """

    def __init__(self, fn: Callable[P, R], *, max_retries: int) -> None:
        if max_retries < 0:
            raise InvalidValueError(f"max_retries must be >= 0, got {max_retries!r}")
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.max_retries = max_retries
        self.is_async = inspect.iscoroutinefunction(fn)
        self.name = f"{STEP_PREFIX}//{fn.__module__}//{fn.__qualname__}"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Any:
        instance = current_instance.get()
        if instance is None:
            return self.fn(*args, **kwargs)
        return instance.schedule_step(self.name, args, kwargs)

    def __repr__(self) -> str:
        return f"<step {self.name}>"


def workflow(fn: Callable[P, Awaitable[R]]) -> Workflow[P, R]:
    """Declare a durable workflow; its name is ``workflow//<module>//<qualname>``."""
    wf = Workflow(fn)
    WORKFLOWS[wf.name] = wf
    return wf


@overload
def step(fn: Callable[P, R], /) -> Step[P, R]: ...


@overload
def step(*, max_retries: int = 3) -> Callable[[Callable[P, R]], Step[P, R]]: ...


def step(
    fn: Callable[P, R] | None = None, /, *, max_retries: int = 3
) -> Step[P, R] | Callable[[Callable[P, R]], Step[P, R]]:
    """Declare a durable step (``def`` or ``async def``), retried up to ``max_retries`` times.

    The default of 3 retries means 4 attempts, with exponential backoff
    between them; ``FatalError`` stops at once, ``RetryableError`` picks the delay.
    """

    def declare(f: Callable[P, R]) -> Step[P, R]:
        s = Step(f, max_retries=max_retries)
        STEPS[s.name] = s
        return s

    return declare(fn) if fn is not None else declare


@dataclass(frozen=True, slots=True)
class WorkflowName:
    """The parts of a workflow name: ``short_name`` is the function's own name."""

    short_name: str
    module: str
    function: str


def parse_workflow_name(name: str) -> WorkflowName:
    """Split ``workflow//shop.workflows//fulfill_order`` into its parts.

    Raises ``ValueError`` showing the expected form when ``name`` does not parse.
    """
    parts = name.split("//")
    if len(parts) != 3 or parts[0] != WORKFLOW_PREFIX or not parts[1] or not parts[2]:
        raise InvalidValueError(
            f"invalid workflow name {name!r}: expected workflow//<module>//<function>, "
            "e.g. workflow//shop.workflows//fulfill_order"
        )
    return WorkflowName(short_name=parts[2].rsplit(".", 1)[-1], module=parts[1], function=parts[2])
