"""Every exception tether raises or lets user code raise."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any


class TetherError(Exception):
    """Base class of tether's own errors."""


class InvalidValueError(TetherError, ValueError):
    """A value given to tether is malformed: a duration, status, cursor, limit, URL or name.

    The message names the value and the form expected.
    """


class InvalidTypeError(TetherError, TypeError):
    """A value of a kind tether cannot take there: not a ``@workflow``, arguments that do not
    fit the workflow's parameters, a plain ``def`` where an ``async def`` is needed."""


class WorldClosedError(TetherError, RuntimeError):
    """The World was closed (``tether.close()`` or ``world.close()``); open it again to use it."""


class WorldUnavailableError(TetherError, ConnectionError):
    """The World's database cannot be reached (or not within its reconnect timeout)."""


class StreamClosedError(TetherError, ValueError):
    """A write to a stream that was closed: nothing more can be written to it."""


class FatalError(TetherError):
    """Raise in a step to fail it at once, without retries."""


class RetryableError(TetherError):
    """Raise in a step to retry it after ``retry_after`` (a duration), not the backoff.

    ``retry_after`` takes what ``tether.sleep`` takes: ``"5s"``, seconds as a
    number, a ``timedelta`` or an aware ``datetime``. ``None`` uses the step's
    exponential backoff.
    """

    def __init__(
        self, message: str = "", retry_after: str | float | timedelta | datetime | None = None
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.retry_after))


class SerializationError(TetherError, TypeError):
    """A value cannot cross the durable boundary (argument, return value, payload)."""


class NonDeterminismError(TetherError):
    """Replaying a run asked for something other than what its event log holds."""


class WorkflowNotFoundError(TetherError, LookupError):
    """No workflow of that name is registered (in this process or the target deployment)."""


class DeploymentNotFoundError(TetherError, LookupError):
    """No worker of that deployment ever registered (or none in the environment)."""


class RunNotFoundError(TetherError, LookupError):
    """No run has that id."""


class RunExistsError(TetherError):
    """A start named a run id that a run of another workflow already holds."""


class InvalidIdentifierError(InvalidValueError):
    """An id or name no World can store (a hook token, stream namespace, run or deployment id).

    Identifiers are non-empty strings of at most 256 characters, without NUL
    and without lone surrogates (``tether.storable.check_identifier``); the
    message names the value and what is allowed.
    """


class InvalidRunIdError(InvalidIdentifierError):
    """A run id a caller named (``start(run_id=...)``) breaks the stricter rule for run ids.

    1 to 128 letters, digits and ``. _ : @ -``: safe in URLs and shells.
    """


class DeploymentConflictError(TetherError):
    """A worker's code differs from what its deployment id was registered with."""


class NoLiveWorkerError(TetherError, LookupError):
    """No live worker of the deployment answered a replay asked of it (``deployments.check``)."""


class ConfigurationError(TetherError, RuntimeError):
    """A setting the call needs is missing or malformed; the message names it and an example."""


class ContextError(TetherError, RuntimeError):
    """A call made where it cannot work: a workflow, ``step_info`` or a hook outside a run."""


class HookConflictError(TetherError):
    """The hook's token is already held by another active hook."""


class HookNotFoundError(TetherError, LookupError):
    """No active hook has that token (it never existed, or its run has ended)."""


class RunFailedError(TetherError):
    """The run ended in failure; ``error`` holds its type, message and traceback."""

    def __init__(self, run_id: str, error: dict[str, Any]) -> None:
        self.run_id = run_id
        self.error = error
        super().__init__(
            f"run {run_id} failed: {error.get('type', 'Error')}: {error.get('message', '')}"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.run_id, self.error))


class RunTimeoutError(TetherError, TimeoutError):
    """``run.result(timeout=...)`` gave up: the run had not ended; it goes on."""


class RunCancelledError(TetherError):
    """The run was cancelled before it finished."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(f"run {run_id} was cancelled")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.run_id,))
