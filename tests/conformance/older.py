"""Worlds as an older tether left them: its migrations up to one, a run of that time in it."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.conformance.backends import admin, fresh_schema
from tether.clock import ManualClock
from tether.worlds import open_world
from tether.worlds.base import World
from tether.worlds.schema import migrations

OLD_RUN = (
    "INSERT INTO runs (run_id, workflow_name, deployment_id, status, input, created_at,"
    " last_seq) VALUES ('old-1', 'workflow//old//flow', 'dep', 'pending', '[[],{}]', 1.0, 1)"
)


def _apply(conn: Any, backend: str, param: str, last: int) -> None:
    """The migrations a tether of that time applied (up to ``last``), recorded as it did."""
    conn.execute(
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)"
    )
    for version, statements in migrations(backend):
        if version <= last:
            for statement in statements:
                conn.execute(statement)
            conn.execute(f"INSERT INTO schema_migrations VALUES ({param}, 0)", (version,))
    conn.execute(OLD_RUN)


@contextmanager
def older_world(backend: str, folder: Path, clock: ManualClock, last: int) -> Iterator[World]:
    """A World as the tether of migration ``last`` left it (the run in it), opened by this one."""
    if backend == "sqlite":
        path = folder / "old.db"
        conn = sqlite3.connect(path)
        _apply(conn, "sqlite", "?", last)
        conn.commit()
        conn.close()
        world = open_world(f"sqlite:///{path}", clock)
        try:
            yield world
        finally:
            world.close()
        return
    with fresh_schema() as url:
        with admin() as pg:
            pg.execute(f"SET search_path TO {url.rsplit('schema=', 1)[1]}")
            _apply(pg, "postgres", "%s", last)
        world = open_world(url, clock)
        try:
            yield world
        finally:
            world.close()
