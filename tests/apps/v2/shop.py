"""Version 2 of the shop in ``tests/apps/v1/shop.py``: labels parcels, sleeps later."""

from __future__ import annotations

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
