"""When a failed step attempt is tried again, and when it fails for good.

``FatalError`` (and an argument or result that cannot be serialized) fails
the step at once. ``RetryableError(retry_after=...)`` retries after that
delay. Any other exception retries with exponential backoff (1 s, 2 s, 4 s,
... up to a minute) until the step's ``max_retries`` are spent: the default
of 3 retries is 4 attempts.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass

from tether import serde
from tether.durations import seconds_until
from tether.errors import FatalError, RetryableError, SerializationError


@dataclass(frozen=True, slots=True)
class RetryDecision:
    """What becomes of a failed attempt: ``retry_at`` (epoch seconds), or ``None`` to fail."""

    retry_at: float | None

    @property
    def retries(self) -> bool:
        """Whether the step is tried again."""
        return self.retry_at is not None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Backoff of failed step attempts: ``base * 2**(attempt - 1)`` seconds, at most ``cap``."""

    base: float = 1.0
    cap: float = 60.0

    def delay(self, attempt: int) -> float:
        """Seconds between the end of failed attempt ``attempt`` (from 1) and the next."""
        return float(min(self.base * 2 ** (attempt - 1), self.cap))

    def decide(
        self, error: BaseException, attempt: int, max_retries: int, now: float
    ) -> RetryDecision:
        """Whether attempt ``attempt`` (from 1) failing with ``error`` at ``now`` is retried."""
        if isinstance(error, FatalError | SerializationError) or attempt > max_retries:
            return RetryDecision(None)
        if isinstance(error, RetryableError) and error.retry_after is not None:
            return RetryDecision(now + seconds_until(error.retry_after, now))
        return RetryDecision(now + self.delay(attempt))


DEFAULT_POLICY = RetryPolicy()


def dump_error(exc: BaseException) -> str:
    """Serialize a step's exception; one that cannot be serialized becomes a plain error."""
    try:
        return serde.dumps(exc, where="step error")
    except SerializationError:
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        return serde.dumps(RuntimeError(f"{type(exc).__qualname__}: {exc}\n{text}"))
