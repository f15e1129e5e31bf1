"""Version 2 of the store: charges shipping (the fix), holds orders for less time."""

from __future__ import annotations

from typing import Any

import tether
from tether import step, workflow

VERSION = "v2"
SHIPPING_CENTS = 500
HOLD = "1s"  # two days in the guide


@step
async def reserve_inventory(order_id: str) -> str:
    return f"res-{order_id}"


@step
async def charge_customer(order_id: str, amount_cents: int) -> int:
    return amount_cents + SHIPPING_CENTS


@step
def ship_order(order_id: str) -> str:
    return f"TRK-{order_id.upper()}"


@workflow
async def fulfill_order(order_id: str, amount_cents: int) -> dict[str, Any]:
    reservation = await reserve_inventory(order_id)
    await tether.sleep(HOLD)
    charged = await charge_customer(order_id, amount_cents)
    tracking = await ship_order(order_id)
    return {"charged": charged, "tracking": tracking, "reservation": reservation, "code": VERSION}


@step
async def send_digest(user: str) -> str:
    return f"digest for {user} sent at {tether.now():%H:%M:%S}"


@step
def continue_digest(state: dict[str, Any]) -> str:
    return tether.start(daily_digest, [state], deployment_id="latest").run_id


@workflow
async def daily_digest(state: dict[str, Any]) -> dict[str, Any]:
    sent_at = await send_digest(state["user"])
    await tether.sleep(state["every"])
    if state["round"] >= state["rounds"]:
        return {"done": True, "last_sent_at": sent_at}
    next_run = await continue_digest({**state, "round": state["round"] + 1})
    return {"continued_as": next_run}
