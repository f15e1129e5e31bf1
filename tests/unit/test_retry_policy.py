"""The retry policy: which failed attempts are retried, and when."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tether import FatalError, RetryableError, SerializationError
from tether.runtime.retry import DEFAULT_POLICY, RetryPolicy, dump_error
from tether.serde import loads

NOW = 1_700_000_000.0


def test_backoff_doubles_from_one_second_up_to_a_minute() -> None:
    delays = [DEFAULT_POLICY.delay(attempt) for attempt in range(1, 10)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]


def test_an_ordinary_error_is_retried_until_max_retries_are_spent() -> None:
    error = ValueError("flaky")
    decisions = [DEFAULT_POLICY.decide(error, attempt, 3, NOW) for attempt in (1, 2, 3, 4)]
    assert [d.retry_at for d in decisions] == [NOW + 1, NOW + 2, NOW + 4, None]
    assert [d.retries for d in decisions] == [True, True, True, False]


def test_zero_retries_means_one_attempt() -> None:
    assert not DEFAULT_POLICY.decide(ValueError("x"), 1, 0, NOW).retries


@pytest.mark.parametrize("error", [FatalError("no"), SerializationError("bad value")])
def test_fatal_and_serialization_errors_fail_at_once(error: Exception) -> None:
    assert DEFAULT_POLICY.decide(error, 1, 3, NOW).retry_at is None


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [("5s", 5.0), (timedelta(minutes=2), 120.0), ("1h", 3600.0)],
)
def test_retryable_error_picks_its_own_delay(retry_after: object, expected: float) -> None:
    error = RetryableError("rate limited", retry_after=retry_after)  # type: ignore[arg-type]
    assert DEFAULT_POLICY.decide(error, 1, 3, NOW).retry_at == NOW + expected


def test_retryable_error_without_a_delay_backs_off_like_any_error() -> None:
    assert DEFAULT_POLICY.decide(RetryableError("later"), 2, 3, NOW).retry_at == NOW + 2


def test_retryable_error_still_stops_after_max_retries() -> None:
    error = RetryableError("rate limited", retry_after="5s")
    assert DEFAULT_POLICY.decide(error, 4, 3, NOW).retry_at is None


def test_a_custom_policy_sets_base_and_cap() -> None:
    policy = RetryPolicy(base=0.5, cap=3.0)
    assert [policy.delay(a) for a in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_an_error_that_cannot_be_serialized_is_recorded_as_its_text() -> None:
    class Odd(Exception):
        def __init__(self, handle: object) -> None:
            super().__init__("odd failure")
            self.handle = handle

    decoded = loads(dump_error(Odd(object())))
    assert isinstance(decoded, Exception)
    assert "odd failure" in str(decoded)
