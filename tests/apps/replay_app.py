"""An order flow whose histories the replay-kit test exports and replays."""

from __future__ import annotations

import tether
from tether import step, workflow


@step
def reserve(order: str) -> str:
    return f"reserved {order}"


@step
def charge(order: str) -> str:
    return f"charged {order}"


@workflow
async def fulfil(order: str, nap: float) -> list[str]:
    done = [await reserve(order), await charge(order)]
    await tether.sleep(nap)
    return done
