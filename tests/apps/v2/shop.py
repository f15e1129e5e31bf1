"""Version 2 of the shop in ``tests/apps/v1/shop.py``.

Changes: ``pack`` is renamed ``pack_and_label`` and checkout packs before it
sleeps; ``refund`` takes an amount; ``gift_wrap`` is new.
"""

from __future__ import annotations

from typing import Any

from tests.apps.basic import mark

import tether
from tether import step, workflow

VERSION = "v2"


@step
def pick(path: str, order: str) -> str:
    mark(path, f"pick:{order}:{VERSION}")
    return order


@step
def pack_and_label(path: str, order: str) -> str:
    mark(path, f"pack:{order}:{VERSION}")
    return order


@workflow
async def checkout(path: str, order: str, seconds: float) -> str:
    await pick(path, order)
    await pack_and_label(path, order)
    await tether.sleep(seconds)
    return VERSION


@workflow
async def refund(path: str, order: str, amount: int) -> str:
    await pick(path, f"{order}:{amount}")
    return VERSION


@workflow
async def gift_wrap(path: str, order: str) -> str:
    await pick(path, order)
    return VERSION


@step
def send_digest(path: str, state: dict[str, Any]) -> str:
    mark(path, f"digest:{state['round']}:{VERSION}")
    return VERSION


@step
def continue_digest(path: str, state: dict[str, Any]) -> str:
    return tether.start(digest, [path, state], deployment_id="latest").run_id


@workflow
async def digest(path: str, state: dict[str, Any]) -> dict[str, Any]:
    """Sends a digest, sleeps, then continues itself as a new run on the latest deployment."""
    await send_digest(path, state)
    await tether.sleep(state["interval"])
    if state["round"] >= state["rounds"]:
        return {"done": True, "version": VERSION}
    next_run = await continue_digest(path, {**state, "round": state["round"] + 1})
    return {"continued_as": next_run, "version": VERSION}
