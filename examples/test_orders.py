"""Tests of the order workflow with tether's test kit: ``pytest examples/test_orders.py``.

``tether_env`` (installed with tether) runs the real engine on a World of
each test's own, with a virtual clock: the two-day wait passes at once.
"""

from __future__ import annotations

import pytest

import tether
from examples.orders import charge_customer, fulfill_order, ship_order
from tether.testing import TetherEnv


def test_an_order_is_charged_and_shipped_after_its_two_day_wait(tether_env: TetherEnv) -> None:
    run = tether_env.start(fulfill_order, ["o-1", 4599])
    result = tether_env.result(run)
    assert result == {
        "ok": True,
        "order_id": "o-1",
        "reservation": "res-o-1",
        "charged_cents": 4599,
        "tracking": "TRK-O-1",
    }
    waited = next(e for e in tether_env.events(run) if e.type == "wait_completed")
    created = next(e for e in tether_env.events(run) if e.type == "wait_created")
    assert waited.created_at - created.created_at == pytest.approx(2 * 86400, abs=1)
    tether_env.assert_step_ran(run, charge_customer, times=1)


def test_nothing_to_charge_fails_the_order_without_retrying(tether_env: TetherEnv) -> None:
    run = tether_env.start(fulfill_order, ["o-2", 0])
    with pytest.raises(tether.RunFailedError, match="nothing to charge"):
        tether_env.result(run)
    tether_env.assert_step_ran(run, charge_customer, times=1)  # a FatalError is not retried
    tether_env.assert_step_ran(run, ship_order, times=0)


def test_a_fake_carrier(tether_env: TetherEnv) -> None:
    with tether_env.replace_step(ship_order, lambda order_id: {"tracking": "FAKE"}):
        result = tether_env.result(tether_env.start(fulfill_order, ["o-3", 100]))
    assert result["tracking"] == "FAKE"
