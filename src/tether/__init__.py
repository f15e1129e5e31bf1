"""tether: durable workflows for Python, every run pinned to the code that started it."""

from tether import deployments
from tether.api import (
    Run,
    cancel_run,
    cancel_runs,
    configure,
    get_run,
    rerun,
    start,
    start_async,
)
from tether.errors import (
    DeploymentNotFoundError,
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
    "DeploymentNotFoundError",
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
    "cancel_runs",
    "configure",
    "deployments",
    "get_run",
    "now",
    "parse_workflow_name",
    "random",
    "rerun",
    "sleep",
    "start",
    "start_async",
    "step",
    "uuid4",
    "workflow",
]
