"""What a commit announces to those waiting for the World to change.

``"w:dep1,dep2"``: work became due for these deployments; ``"w"``: for any
(or for deployments not named); ``"r"``: only readers care (a run ended, a
chunk was written); ``""``: nothing anyone waits for. SQLite cannot tell what
another process committed and announces ``"w"``; PostgreSQL's commits carry
their signal in their NOTIFY.
"""

from __future__ import annotations

#: The longest list of deployments a work signal names; past it, it names none (all wake).
_SIGNAL_MAX = 1000


def work_signal(deployments: set[str]) -> str:
    """``"w:dep1,dep2"``: work became due for these deployments; ``"w"``: for any."""
    names = ",".join(sorted(deployments))
    if "*" in deployments or "," in "".join(deployments) or len(names) > _SIGNAL_MAX:
        return "w"
    return f"w:{names}"


def merge_signals(a: str, b: str) -> str:
    """What two commits announce together."""
    if a.startswith("w") and b.startswith("w"):
        if a == "w" or b == "w":
            return "w"
        return work_signal(set(a[2:].split(",")) | set(b[2:].split(",")))
    for signal in ("w", "r"):
        for side in (a, b):
            if side.startswith(signal):
                return side
    return ""


def is_work_for(signal: str, deployment_id: str | None) -> bool:
    """Whether a commit that announced ``signal`` made work due for ``deployment_id``."""
    if not signal.startswith("w"):
        return False
    return signal == "w" or deployment_id is None or deployment_id in signal[2:].split(",")
