"""Where code is running: inside a workflow (on its deterministic loop) or a step."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tether.runtime.instance import RunInstance


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


current_instance: ContextVar[RunInstance | None] = ContextVar("tether_instance", default=None)
current_step: ContextVar[StepContext | None] = ContextVar("tether_step", default=None)
