"""What tests ask a World that no engine code does: its queue and its tables, read directly.

The World protocol holds what the engine, the client and the CLI call. The
tests also want to know when a deployment's next task falls due, to claim
with a blocking call, or to compare every row of two Worlds' views; these
helpers do that against either backend, through the World's public methods
where they can and through a plain connection to its database where not.
"""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

import psycopg

from tether.worlds.base import World
from tether.worlds.postgres import parse_url
from tether.worlds.records import HookRecord, Task
from tether.worlds.sqlite import path_from_url


def claim(
    world: World, deployment_id: str, worker_id: str, limit: int, lease: float, ahead: float = 0.0
) -> list[Task]:
    """One claim round (``claim_due_async``), from blocking code: the tasks it leased."""
    tasks, _ = asyncio.run(world.claim_due_async(deployment_id, worker_id, limit, lease, ahead))
    return tasks


def query(world: World, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` (``?`` placeholders) on the World's database, on a connection of its own."""
    if world.url.startswith("sqlite"):
        path, _ = path_from_url(world.url)
        conn = sqlite3.connect(path)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()
    conninfo, _ = parse_url(world.url)
    with psycopg.connect(conninfo) as pg:
        return pg.execute(sql.replace("?", "%s"), params).fetchall()  # type: ignore[arg-type]


def next_due(world: World, deployment_id: str) -> float | None:
    """When the deployment's first task falls due (a leased one: when its lease expires)."""
    ((due,),) = query(
        world, "SELECT MIN(available_at) FROM tasks WHERE deployment_id = ?", (deployment_id,)
    )
    return float(due) if due is not None else None


def has_due(world: World, deployment_id: str, now: float) -> bool:
    """Whether a task of the deployment is due at ``now``."""
    due = next_due(world, deployment_id)
    return due is not None and due <= now


def get_hook(world: World, token: str) -> HookRecord | None:
    """The hook that holds the token (at most one is active), else the newest that had it."""
    hooks = [hook for hook in world.list_hooks() if hook.token == token]
    return max(hooks, key=lambda hook: (hook.status == "active", hook.created_at), default=None)
