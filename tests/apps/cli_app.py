"""Workflows served by ``tether worker`` processes in the CLI tests."""

from __future__ import annotations

import tether
from tether import FatalError, step, workflow


@step
def greet(name: str, punctuation: str) -> str:
    return f"hello {name}{punctuation}"


@step
def explode(reason: str) -> None:
    raise FatalError(reason)


@workflow
async def hello(name: str, punctuation: str = "!") -> str:
    return str(await greet(name, punctuation))


@workflow
async def napper(seconds: float) -> str:
    await tether.sleep(seconds)
    return "rested"


@workflow
async def doomed(reason: str) -> None:
    await explode(reason)


@workflow
async def totals(order: dict[str, int]) -> dict[str, int]:
    return {"items": len(order), "sum": sum(order.values())}
