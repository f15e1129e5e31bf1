"""Parse the durations that ``sleep`` and ``RetryableError`` accept."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from tether.errors import InvalidTypeError, InvalidValueError

Duration = str | int | float | timedelta | datetime

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_FORM = "a number with a unit such as '500ms', '10s', '5m', '2h', '2d', '1w' or '1h30m'"


def parse_duration(value: str) -> float:
    """Return the seconds in a duration string such as ``"10s"`` or ``"1h30m"``.

    Raises ``ValueError`` naming the value when it is not of that form.
    """
    text = value.strip().replace(" ", "")
    if not text:
        raise InvalidValueError(f"invalid duration {value!r}: expected {_FORM}")
    total, pos = 0.0, 0
    for match in _PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text):
        raise InvalidValueError(f"invalid duration {value!r}: expected {_FORM}")
    return total


def seconds_until(value: Duration, now: float) -> float:
    """Seconds from ``now`` (epoch seconds) until ``value`` is over; never negative.

    A string or number is a relative duration, a ``timedelta`` too; a
    ``datetime`` is a point in time and must carry a timezone.
    """
    if isinstance(value, bool):
        raise InvalidTypeError(f"invalid duration {value!r}: expected a duration, not a bool")
    if isinstance(value, str):
        seconds = parse_duration(value)
    elif isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise InvalidValueError(
                f"invalid wake-up time {value!r}: a datetime must be timezone-aware "
                "(use datetime.now(timezone.utc) + ...)"
            )
        seconds = value.timestamp() - now
    else:
        raise InvalidTypeError(
            f"invalid duration {value!r} of type {type(value).__name__}: expected "
            f"{_FORM}, seconds as a number, a timedelta or an aware datetime"
        )
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        raise InvalidValueError(f"invalid duration {value!r}: must be finite")
    return max(0.0, seconds)
