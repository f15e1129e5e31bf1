"""Version 1 of a small shop, served by worker processes in the tests.

``tests/apps/v2/shop.py`` is the same module after a change; a worker gets
one or the other through PYTHONPATH, as two deployments of one app would.
"""

from __future__ import annotations

from typing import Any

from tests.apps.basic import mark

import tether
from tether import step, workflow

VERSION = "v1"


@step
def pick(path: str, order: str) -> str:
    mark(path, f"pick:{order}:{VERSION}")
    return order


@step
def pack(path: str, order: str) -> str:
    mark(path, f"pack:{order}:{VERSION}")
    return order


@workflow
async def checkout(path: str, order: str, seconds: float) -> str:
    await pick(path, order)
    await tether.sleep(seconds)
    await pack(path, order)
    return VERSION


@workflow
async def refund(path: str, order: str) -> str:
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
