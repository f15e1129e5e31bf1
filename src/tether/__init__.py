"""tether: durable workflows for Python, every run pinned to the code that started it."""

from tether.api import Run, cancel_run, configure, get_run, start, start_async
from tether.errors import (
    FatalError,
    NonDeterminismError,
    RetryableError,
    RunCancelledError,
    RunFailedError,
    RunNotFoundError,
    SerializationError,
    TetherError,
    WorkflowNotFoundError,
)
from tether.primitives import now, random, sleep, uuid4
from tether.registry import parse_workflow_name, step, workflow
from tether.runtime.worker import Worker

__all__ = [
    "FatalError",
    "NonDeterminismError",
    "RetryableError",
    "Run",
    "RunCancelledError",
    "RunFailedError",
    "RunNotFoundError",
    "SerializationError",
    "TetherError",
    "Worker",
    "WorkflowNotFoundError",
    "cancel_run",
    "configure",
    "get_run",
    "now",
    "parse_workflow_name",
    "random",
    "sleep",
    "start",
    "start_async",
    "step",
    "uuid4",
    "workflow",
]
