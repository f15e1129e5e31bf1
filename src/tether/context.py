"""Where code is running: inside a workflow (on its deterministic loop) or inside a step.

The engine sets these context variables; the code a workflow touches (steps
called from it, ``sleep``, hooks, streams, ``now``) reads them. That code
knows the engine only through the protocols declared here, so it never
imports the engine.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar

from tether.durations import Duration


class HookReceiver(Protocol):
    """What the engine needs of a hook: where its payloads and its end go."""

    @property
    def token(self) -> str:
        """The token ``resume_hook`` delivers to."""
        ...

    def receive(self, payload: Any) -> None:
        """A payload arrived for the hook."""
        ...

    def fail(self, error: BaseException) -> None:
        """The hook ended with ``error`` (its token was taken)."""
        ...


H = TypeVar("H", bound=HookReceiver)


class WorkflowContext(Protocol):
    """The run whose workflow code is executing: what that code may ask of it."""

    @property
    def run_id(self) -> str:
        """The run's id."""
        ...

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The run's deterministic event loop."""
        ...

    def schedule_step(
        self, step_name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> asyncio.Future[Any]:
        """Ask for a step; the future resolves with its recorded result."""
        ...

    def schedule_sleep(self, duration: Duration) -> asyncio.Future[Any]:
        """Ask for a durable sleep; the future resolves when it is over."""
        ...

    def create_hook(self, attrs: dict[str, Any], make: Callable[[dict[str, Any]], H]) -> H:
        """Ask for a hook (``attrs``: its token, metadata, kind and URL, as the log records them).

        ``make(logged)`` builds it from the attrs the log holds (on replay, the
        first execution's).
        """
        ...

    def now(self) -> datetime:
        """The deterministic current time."""
        ...

    def random(self) -> float:
        """A deterministic random float in [0, 1)."""
        ...

    def uuid4(self) -> uuid.UUID:
        """A deterministic version-4 UUID."""
        ...


@dataclass(frozen=True, slots=True)
class StepContext:
    """The step attempt the current code runs in (for child runs and streams)."""

    run_id: str
    step_id: str
    step_name: str
    attempt: int
    deployment_id: str
    #: The World the step's worker serves: where its child runs and stream chunks go.
    world_url: str


current_instance: ContextVar[WorkflowContext | None] = ContextVar("tether_instance", default=None)
current_step: ContextVar[StepContext | None] = ContextVar("tether_step", default=None)
