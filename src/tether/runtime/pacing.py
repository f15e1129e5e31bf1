"""How often a worker claims: at once when work may be waiting, in turns when peers win.

Every worker of a deployment is woken by every commit that makes work due.
If each claimed at once they would claim as a herd, and all but one would
find nothing. After rounds that found nothing, a worker leaves the next
round to its peers for a moment that doubles per empty round; a World that
fails is retried with a backoff of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

#: After claim rounds that found nothing, a wake-up claims no sooner than this long after
#: the last round, doubling per empty round up to PACE_MAX (seconds).
PACE_BASE = 0.001
PACE_MAX = 0.05
#: A claim that raised (the World unreachable) is tried again after this, doubling, up to
#: FAILURE_MAX (seconds).
FAILURE_BASE = 0.25
FAILURE_MAX = 5.0


@dataclass(slots=True)
class ClaimPacer:
    """The claim loop's memory: empty rounds and failures in a row."""

    empty: int = 0
    failures: int = 0

    def found(self, claimed: bool) -> None:
        """A round ended; ``claimed`` says whether it took any task."""
        self.failures = 0
        self.empty = 0 if claimed else self.empty + 1

    def failed(self) -> float:
        """A round raised; returns how long to wait before the next one."""
        self.failures += 1
        return float(min(FAILURE_BASE * 2**self.failures, FAILURE_MAX))

    def pause_after_wake(self) -> float:
        """How long after the last round a wake-up may claim (0: at once)."""
        if not self.empty:
            return 0.0
        return float(min(PACE_BASE * 2 ** (self.empty - 1), PACE_MAX))
