"""The order-fulfilment workflow of the versioning guide, in Python."""

from __future__ import annotations

import tether
from tether import FatalError, step, workflow


@step
async def reserve_inventory(order_id: str) -> dict[str, str]:
    """Hold the items of the order in the warehouse."""
    return {"order_id": order_id, "reservation": f"res-{order_id}"}


@step(max_retries=5)
async def charge_customer(order_id: str, amount_cents: int) -> dict[str, object]:
    """Charge the customer's card; a declined card is final, not retried."""
    if amount_cents <= 0:
        raise FatalError(f"order {order_id}: nothing to charge ({amount_cents} cents)")
    return {"order_id": order_id, "charged_cents": amount_cents}


@step
def ship_order(order_id: str) -> dict[str, str]:
    """Hand the parcel to the carrier (a plain def step runs in a thread)."""
    return {"order_id": order_id, "tracking": f"TRK-{order_id.upper()}"}


@workflow
async def fulfill_order(order_id: str, amount_cents: int, wait: str = "2d") -> dict[str, object]:
    """Reserve, wait (two days in production), charge, ship."""
    reservation = await reserve_inventory(order_id)
    await tether.sleep(wait)
    charge = await charge_customer(order_id, amount_cents)
    shipment = await ship_order(order_id)
    return {"ok": True, **reservation, **charge, **shipment}
