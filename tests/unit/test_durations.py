"""Durations accepted by sleep and RetryableError."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tether.durations import parse_duration, seconds_until


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("10s", 10),
        ("5m", 300),
        ("2h", 7200),
        ("2d", 172800),
        ("1w", 604800),
        ("500ms", 0.5),
        ("1.5s", 1.5),
        ("1h30m", 5400),
        (" 2m 5s ", 125),
    ],
)
def test_duration_strings(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "10", "ten seconds", "5x", "s", "1h 30", "-5s", "1e3s"])
def test_malformed_duration_names_the_value(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration") as info:
        parse_duration(text)
    assert repr(text) in str(info.value)


def test_numbers_timedeltas_and_aware_datetimes() -> None:
    now = 1_000_000.0
    assert seconds_until(3, now) == 3
    assert seconds_until(timedelta(minutes=2), now) == 120
    assert seconds_until(datetime.fromtimestamp(now + 42, tz=UTC), now) == pytest.approx(42)
    assert seconds_until(datetime.fromtimestamp(now - 42, tz=UTC), now) == 0


def test_naive_datetime_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        seconds_until(datetime(2030, 1, 1), 0.0)


@pytest.mark.parametrize("value", [True, None, [1], float("nan")])
def test_other_values_are_refused(value: object) -> None:
    with pytest.raises((TypeError, ValueError), match="invalid duration"):
        seconds_until(value, 0.0)  # type: ignore[arg-type]
