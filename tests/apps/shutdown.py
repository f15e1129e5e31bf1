"""Workflows for the shutdown tests: a step that holds until the test lets it go.

``held`` marks that it began, then waits for a release file next to the
marks file, so a test knows which worker runs it and decides when it ends.
"""

from __future__ import annotations

import asyncio
import os
import time

from tests.apps.basic import mark
from tether import step, workflow


def release(path: str) -> None:
    """Let every ``held`` step of the marks file ``path`` end, now and later."""
    with open(f"{path}.release", "w"):
        pass


@step
def held(path: str, label: str) -> str:
    mark(path, f"{label}-start")
    while not os.path.exists(f"{path}.release"):
        time.sleep(0.01)  # a barrier the test opens, polled by the step, not by the test
    mark(path, label)
    return label


@step
def note(path: str, label: str) -> str:
    mark(path, label)
    return label


@workflow
async def held_then_note(path: str) -> list[str]:
    first = await held(path, "held")
    return [first, await note(path, "next")]


@workflow
async def held_beside_queued(path: str) -> list[str]:
    # Both steps are leased in one commit; with one step thread the second waits for it.
    return list(await asyncio.gather(held(path, "held"), note(path, "queued")))
