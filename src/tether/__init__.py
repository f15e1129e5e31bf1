"""tether: durable workflows for Python, every run pinned to the code that started it."""

from tether import deployments
from tether.api import (
    Run,
    cancel_run,
    cancel_runs,
    get_run,
    rerun,
    resume_hook,
    resume_hook_async,
    start,
    start_async,
)
from tether.config import close, configure
from tether.errors import (
    DeploymentNotFoundError,
    FatalError,
    HookConflictError,
    HookNotFoundError,
    InvalidIdentifierError,
    NonDeterminismError,
    RetryableError,
    RunCancelledError,
    RunFailedError,
    RunNotFoundError,
    SerializationError,
    StreamClosedError,
    TetherError,
    WorkflowNotFoundError,
    WorldUnavailableError,
)
from tether.hooks import Hook, create_hook, create_webhook
from tether.primitives import now, random, sleep, uuid4
from tether.readers import Readable, get_readable
from tether.registry import parse_workflow_name, step, workflow
from tether.runtime.worker import Worker
from tether.streams import StreamHandle, get_writable

__all__ = [
    "DeploymentNotFoundError",
    "FatalError",
    "Hook",
    "HookConflictError",
    "HookNotFoundError",
    "InvalidIdentifierError",
    "NonDeterminismError",
    "Readable",
    "RetryableError",
    "Run",
    "RunCancelledError",
    "RunFailedError",
    "RunNotFoundError",
    "SerializationError",
    "StreamClosedError",
    "StreamHandle",
    "TetherError",
    "Worker",
    "WorkflowNotFoundError",
    "WorldUnavailableError",
    "cancel_run",
    "cancel_runs",
    "close",
    "configure",
    "create_hook",
    "create_webhook",
    "deployments",
    "get_readable",
    "get_run",
    "get_writable",
    "now",
    "parse_workflow_name",
    "random",
    "rerun",
    "resume_hook",
    "resume_hook_async",
    "sleep",
    "start",
    "start_async",
    "step",
    "uuid4",
    "workflow",
]
