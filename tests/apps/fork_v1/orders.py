"""Version 1 of an order flow whose third step has a bug (the fork tests' v1).

``tests/apps/fork_v2/orders.py`` is the same module with the bug fixed.
"""

from __future__ import annotations

from tests.apps.basic import mark

import tether
from tether import FatalError, RetryableError, StreamHandle, step, workflow

VERSION = "v1"


@step
def reserve(path: str, order: str) -> str:
    mark(path, f"reserve:{order}:{VERSION}")
    return f"reserved {order}"


@step
def charge(path: str, order: str) -> str:
    mark(path, f"charge:{order}:{VERSION}")
    return f"charged {order}"


@step
def ship(path: str, order: str) -> str:
    mark(path, f"ship:{order}:{VERSION}")
    raise FatalError(f"no carrier for {order}")  # the bug v2 fixes


@step
def notify(path: str, order: str) -> str:
    mark(path, f"notify:{order}:{VERSION}")
    return f"notified {order}"


@workflow
async def fulfil(path: str, order: str, nap: float) -> list[str]:
    """Four steps: reserve, charge, (a sleep), ship, notify."""
    done = [await reserve(path, order), await charge(path, order)]
    await tether.sleep(nap)
    return [*done, await ship(path, order), await notify(path, order), VERSION]


@workflow
async def approve(path: str, order: str) -> list[str]:
    """Reserves, then waits for an approval on a hook whose token callers hold."""
    reserved = await reserve(path, order)
    decision = await tether.create_hook(token=f"approve-{order}")
    return [reserved, str(decision), VERSION]


@step
def pack(path: str, order: str, stream: StreamHandle) -> str:
    mark(path, f"pack:{order}:{VERSION}")
    stream.write(f"packed {order} on {VERSION}")
    return f"packed {order}"


@step
def label(path: str, order: str, stream: StreamHandle, carrier: str) -> str:
    mark(path, f"label:{order}:{VERSION}")
    stream.write(f"labelled {order} for {carrier} on {VERSION}")
    stream.close()
    return f"labelled {order}"


@workflow
async def dispatch(path: str, order: str) -> list[str]:
    """Packs (writing to its stream), waits for a carrier on a hook, labels (writing again)."""
    stream = tether.get_writable()
    packed = await pack(path, order, stream)
    carrier = await tether.create_hook(token=f"carrier-{order}")
    return [packed, await label(path, order, stream, str(carrier)), VERSION]


@workflow
async def ticket(order: str) -> str:
    """A child run: a support ticket for the order."""
    return f"ticket for {order} on {VERSION}"


@step
def open_ticket(order: str) -> str:
    return tether.start(ticket, [order]).run_id


@workflow
async def escalate(order: str, nap: float) -> list[str]:
    """Opens a ticket (a child run) from a step, then sleeps."""
    child = await open_ticket(order)
    await tether.sleep(nap)
    return [child, VERSION]


@workflow
async def gift_card(path: str, order: str) -> str:
    """Only v1 has it: v2 dropped gift cards, so its runs cannot move there."""
    await reserve(path, order)
    await tether.sleep(3600)
    return f"gift card for {order}"


@step
def note(stream: StreamHandle, order: str) -> str:
    stream.write(f"noted {order} on {VERSION}")
    return f"noted {order}"


@step(max_retries=10)
def restock(path: str, order: str, stream: StreamHandle) -> str:
    mark(path, f"restock:{order}:{VERSION}")
    stream.write(f"restocking {order} on {VERSION}")
    raise RetryableError("the supplier is down", retry_after=3600)  # v2 uses another


@workflow
async def replenish(path: str, order: str) -> str:
    """Notes the order on its stream, then restocks, which v1 retries for an hour."""
    stream = tether.get_writable()
    await note(stream, order)
    return await restock(path, order, stream)
