"""Version 1 of a small shop, served by worker processes in the tests.

``tests/apps/v2/shop.py`` is the same module after a change; a worker gets
one or the other through PYTHONPATH, as two deployments of one app would.
"""

from __future__ import annotations

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
