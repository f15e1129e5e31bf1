"""Claim pacing: at once while rounds find work, in turns when peers win, backoff on failure."""

from __future__ import annotations

from tether.runtime.pacing import FAILURE_MAX, PACE_BASE, PACE_MAX, ClaimPacer


def test_a_wake_up_claims_at_once_while_rounds_find_work() -> None:
    pacer = ClaimPacer()
    pacer.found(True)
    assert pacer.pause_after_wake() == 0.0


def test_empty_rounds_double_the_pause_up_to_its_cap() -> None:
    pacer = ClaimPacer()
    pauses = []
    for _ in range(10):
        pacer.found(False)
        pauses.append(pacer.pause_after_wake())
    assert pauses[:3] == [PACE_BASE, 2 * PACE_BASE, 4 * PACE_BASE]
    assert pauses[-1] == PACE_MAX
    assert pauses == sorted(pauses)


def test_a_round_that_finds_work_resets_the_pause() -> None:
    pacer = ClaimPacer()
    for _ in range(5):
        pacer.found(False)
    pacer.found(True)
    assert pacer.pause_after_wake() == 0.0


def test_failures_back_off_up_to_their_cap_and_reset_on_success() -> None:
    pacer = ClaimPacer()
    delays = [pacer.failed() for _ in range(8)]
    assert delays[:3] == [0.5, 1.0, 2.0]
    assert delays[-1] == FAILURE_MAX
    pacer.found(True)
    assert pacer.failed() == 0.5
