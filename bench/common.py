"""Engine-neutral pieces shared by run.py and the two workload modules.

Nothing here imports an engine: each workload module imports only this file and its own engine.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

WORKLOADS: tuple[str, ...] = ("W1", "W2", "W3", "W5", "W6", "W2P")
#: Workloads only tether runs: W2P starts tether worker processes.
TETHER_ONLY: frozenset[str] = frozenset({"W2P"})

Metrics = dict[str, float | int | str]


@dataclass(frozen=True)
class Counts:
    """Sizes of every workload; `QUICK` shrinks them for smoke tests."""

    w1_warmup: int = 30
    w1_measured: int = 300
    w2_workflows: int = 2000
    w3_workflows: int = 50
    w3_sleep_s: float = 2.0
    w5_children: int = 100
    w6_steps: int = 1000
    w6_window: int = 100


FULL = Counts()
QUICK = Counts(
    w1_warmup=5,
    w1_measured=30,
    w2_workflows=200,
    w3_workflows=10,
    w5_children=20,
    w6_steps=200,
    w6_window=20,
)

# In-child time budget of each workload, in seconds: every wait inside a workload is bounded by
# what is left of it. run.py kills the child a little after this (startup and shutdown slack), so
# even an engine that hangs in every workload cannot keep the bench busy for more than ~9 minutes.
BUDGET_S: dict[str, float] = {
    "W1": 60.0,
    "W2": 120.0,
    "W3": 30.0,
    "W5": 60.0,
    "W6": 90.0,
    "W2P": 120.0,
}


class Deadline:
    """A point in time that every wait of one workload must finish by."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._end = time.monotonic() + seconds

    def left(self) -> float:
        """Seconds left; raises TimeoutError once the deadline has passed."""
        left = self._end - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"workload exceeded its {self.seconds:.0f} s budget")
        return left


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (pct in 0..100) of a non-empty sequence."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100.0 * len(ordered)))
    return ordered[rank - 1]


def latency_metrics(seconds: Sequence[float]) -> Metrics:
    """p50/p95/max/mean in milliseconds of a list of durations given in seconds."""
    ms = [s * 1000.0 for s in seconds]
    return {
        "n": len(ms),
        "p50_ms": round(percentile(ms, 50), 3),
        "p95_ms": round(percentile(ms, 95), 3),
        "max_ms": round(max(ms), 3),
        "mean_ms": round(sum(ms) / len(ms), 3),
    }


def step_time_metrics(stamps: Sequence[float], window: int) -> Metrics:
    """Mean ms/step over the first and last `window` steps of a chain of step timestamps.

    `stamps[i]` is the time.time() taken inside step i; the time of step i (i >= 1) is
    stamps[i] - stamps[i - 1], i.e. one step's checkpoint plus the start of the next.
    """
    if len(stamps) < 2 * window + 1:
        raise ValueError(f"need at least {2 * window + 1} step timestamps, got {len(stamps)}")
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    first = sum(gaps[:window]) / window * 1000.0
    last = sum(gaps[-window:]) / window * 1000.0
    return {
        "steps": len(stamps),
        "first_ms_per_step": round(first, 3),
        "last_ms_per_step": round(last, 3),
        "last_over_first": round(last / first, 3),
        "mean_ms_per_step": round(sum(gaps) / len(gaps) * 1000.0, 3),
    }


#: Where RESULTS.md's part of ``check.py``'s and ``web.py``'s figures begins; ``run.py``
#: keeps it when it rewrites the rest.
CHECK_MARK = (
    "<!-- from bench/check.py, bench/web.py and bench/scaleout.py"
    " (CHECK-, WEB-, SCALEOUT-RESULTS-<backend>.md):"
    " run.py keeps this part -->"
)


def check_section(folder: Path) -> str:
    """RESULTS.md's closing part: CHECK_MARK, then each CHECK-, WEB- and SCALEOUT-RESULTS file."""
    parts = [CHECK_MARK, ""]
    for name in ("CHECK", "WEB", "SCALEOUT"):
        for backend in ("sqlite", "postgres"):
            found = folder / f"{name}-RESULTS-{backend}.md"
            if not found.exists():
                continue
            # One level down: RESULTS.md has one title of its own.
            parts += [
                "#" + line if line.startswith("#") else line
                for line in found.read_text().splitlines()
            ]
            parts.append("")
    return "\n".join(parts)


def with_check_section(report: str, folder: Path) -> str:
    """``report`` (RESULTS.md, or what it held before CHECK_MARK) with the check figures after."""
    before = report.split("<!-- from bench/check.py")[0]  # an older mark's text too
    return before.rstrip("\n") + "\n\n" + check_section(folder)
