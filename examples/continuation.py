"""Self-upgrading workflows: runs that continue themselves on the latest deployment.

Each run does a bounded piece of work, then starts the next run on
``deployment_id="latest"`` and returns. The current run stays on the code it
started with; the serialized state is the boundary between versions, and
``parent_run_id`` links the chain.
"""

from __future__ import annotations

from typing import Any

import tether
from tether import step, workflow


@step
async def send_digest(user_id: str) -> str:
    """Send one digest; returns when it was sent."""
    return tether.now().isoformat()


@step
def continue_digest(state: dict[str, Any]) -> str:
    """Start the next digest run on the newest deployment."""
    return tether.start(daily_digest, [state], deployment_id="latest").run_id


@workflow
async def daily_digest(state: dict[str, Any]) -> dict[str, Any]:
    """One digest a day, forever: each day is a run of its own."""
    sent_at = await send_digest(state["user_id"])
    await tether.sleep(state.get("every", "1d"))
    if state.get("remaining") == 0:  # lets an example or a test end the chain
        return {"done": True, "last_sent_at": sent_at}
    next_state = {**state, "last_sent_at": sent_at}
    if "remaining" in state:
        next_state["remaining"] = state["remaining"] - 1
    return {"continued_as": await continue_digest(next_state)}


@step
async def process_page(cursor: int, page_size: int, total: int) -> list[int]:
    """Process one page of a backlog; returns the items it handled."""
    return list(range(cursor, min(cursor + page_size, total)))


@step
def continue_backlog(cursor: int, page_size: int, total: int, done: int) -> str:
    """Start the next bounded run on the newest deployment."""
    return tether.start(
        process_backlog, [cursor, page_size, total, done], deployment_id="latest"
    ).run_id


@workflow
async def process_backlog(
    cursor: int, page_size: int, total: int, done: int = 0, pages_per_run: int = 3
) -> dict[str, Any]:
    """Work through a backlog a few pages per run, then hand over to a fresh run."""
    for _ in range(pages_per_run):
        if cursor >= total:
            return {"done": done}
        handled = await process_page(cursor, page_size, total)
        cursor, done = cursor + len(handled), done + len(handled)
    return {"continued_as": await continue_backlog(cursor, page_size, total, done)}
