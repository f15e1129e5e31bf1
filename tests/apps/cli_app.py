"""Workflows served by ``tether worker`` processes in the CLI tests."""

from __future__ import annotations

import tether
from tether import FatalError, StreamHandle, step, workflow


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


@workflow
async def approval(order: str) -> dict[str, object]:
    decision = await tether.create_hook(token=f"approve-{order}", metadata={"order": order})
    return {"order": order, "decision": decision}


@step
def count_to(stream: StreamHandle, count: int) -> int:
    for i in range(count):
        stream.write({"n": i})
    stream.close()
    return count


@workflow
async def counter(count: int) -> int:
    return int(await count_to(tether.get_writable(), count))
