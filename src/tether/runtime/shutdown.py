"""How a worker stops, said in its log: what a drain waits for, what an exit abandons.

The first stop signal drains: the worker says which steps it waits for and
for how long. A second signal, or a drain that outlasts its timeout, exits
the process at once: it names the steps it abandons (running, or still
being handed back) and when they run again, which is when their leases
expire, as after a crash. Exit codes: 128 + the signal's number after a
second signal (130 for SIGINT, 143 for SIGTERM), 1 after a drain timeout.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Collection
from typing import NoReturn

from tether.runtime.steps import StepJob

log = logging.getLogger("tether.worker")

#: The signals a foreground worker drains on; a second one exits at once.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: A foreground worker's exit code when its drain outlasted its timeout.
EXIT_DRAIN_TIMEOUT = 1


def exit_code(signum: int) -> int:
    """The exit code after a second signal: 128 + its number, as a shell reports it."""
    return 128 + signum


def draining(
    why: str, running: list[StepJob], activating: int, timeout: float, foreground: bool
) -> str:
    """The line a worker logs when it begins to drain."""
    waits = []
    if running:
        waits.append(steps_text(running))
    if activating:
        waits.append(count(activating, "workflow activation"))
    waiting = (
        f"waiting up to {timeout:g} s for {' and '.join(waits)} to finish"
        if waits
        else "nothing is running"
    )
    again = "; SIGINT or SIGTERM again exits at once" if foreground else ""
    return (
        f"draining ({why}): {waiting}; starting nothing new, handing back steps leased "
        f"here but not started{again}"
    )


def abandon(
    why: str,
    code: int,
    running: list[StepJob],
    handing_back: Collection[StepJob],
    lease_seconds: float,
) -> NoReturn:
    """Log what the exit leaves behind, and exit the process at once with ``code``.

    Nothing is written to the World: it may be what hangs. The steps' leases
    are not given back, so they run again when their leases expire.
    """
    parts = []
    if running:
        parts.append(f"abandoning {steps_text(running)}")
    if handing_back:
        described = ", ".join(job.describe() for job in handing_back)
        parts.append(
            f"{count(len(handing_back), 'step')} still being handed back (due now if that "
            f"was recorded): {described}"
        )
    if parts:
        log.warning(
            "%s: exiting at once with code %d, %s; they run again on another worker when "
            "their leases expire, within %g s (--lease-seconds)",
            why,
            code,
            "; ".join(parts),
            lease_seconds,
        )
    else:
        log.warning("%s: exiting at once with code %d; no step was running", why, code)
    for handler in logging.getLogger().handlers + log.handlers:
        handler.flush()
    os._exit(code)


def steps_text(jobs: list[StepJob]) -> str:
    """``2 running steps: A (step 0 of run R, attempt 1), B (...)``; ``""`` for none."""
    if not jobs:
        return ""
    return f"{count(len(jobs), 'running step')}: {', '.join(job.describe() for job in jobs)}"


def count(n: int, noun: str) -> str:
    """``1 step``, ``2 steps``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"
