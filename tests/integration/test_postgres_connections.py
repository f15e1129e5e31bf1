"""The PostgreSQL World's connections: URLs, unreachable servers, migrations, lost links."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

import tether
from tests.conformance.backends import (
    POSTGRES_URL,
    admin,
    configured,
    fresh_schema,
    require_postgres,
)
from tether import step, workflow
from tether.errors import TetherError
from tether.worlds import open_world
from tether.worlds.postgres import PostgresWorld, WorldUnavailableError, parse_url, redact
from tether.worlds.schema import migrations


def test_redact_hides_passwords() -> None:
    assert redact("postgresql://bob:s3cret@db:5432/app") == "postgresql://bob:***@db:5432/app"
    assert "s3cret" not in redact("postgres://db/app?password=s3cret&sslmode=require")
    assert redact("postgresql://db/app") == "postgresql://db/app"


def test_parse_url_turns_schema_into_a_search_path() -> None:
    conninfo, options = parse_url("postgres://u@h:5433/d?schema=tether_x&sslmode=disable")
    assert options == {"schema": "tether_x"}
    assert "search_path=tether_x" in conninfo and "sslmode=disable" in conninfo
    assert "port=5433" in conninfo and "dbname=d" in conninfo
    with pytest.raises(ValueError, match="invalid schema"):
        parse_url("postgresql://h/d?schema=bad;name")


def test_an_unreachable_server_is_a_clear_error_without_the_password() -> None:
    url = "postgresql://tether:hunter2@127.0.0.1:1/nowhere?connect_timeout=2"
    with pytest.raises(WorldUnavailableError) as info:
        open_world(url)
    message = str(info.value)
    assert isinstance(info.value, TetherError) and isinstance(info.value, ConnectionError)
    assert "postgresql://tether:***@127.0.0.1:1/nowhere" in message
    assert "hunter2" not in message


def test_many_worlds_opening_at_once_migrate_once() -> None:
    with fresh_schema() as url:
        worlds: list[PostgresWorld] = []
        errors: list[BaseException] = []

        def open_one() -> None:
            try:
                worlds.append(PostgresWorld(url))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=open_one) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        for world in worlds:
            world.close()
        assert errors == [] and len(worlds) == 6
        schema = url.rsplit("schema=", 1)[1]
        with admin() as conn:
            versions = conn.execute(f"SELECT version FROM {schema}.schema_migrations").fetchall()
        assert sorted(v for (v,) in versions) == [v for v, _ in migrations("postgres")]


def test_a_missing_schema_is_created() -> None:
    require_postgres()
    name = f"tether_test_made_{time.time_ns()}"
    url = f"{POSTGRES_URL}{'&' if '?' in POSTGRES_URL else '?'}schema={name}"
    try:
        world = open_world(url)
        world.close()
        with admin() as conn:
            row = conn.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = %s", (name,)
            ).fetchone()
        assert row is not None and row[0] >= 7
    finally:
        with admin() as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


@step
async def bump(x: int) -> int:
    return x + 1


@workflow
async def bumps(x: int) -> int:
    for _ in range(3):
        x = await bump(x)
    return x


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL schema, whose connections are named after it (application_name).

    The name lets a test cut only its own World's connections: the server is
    shared with other test processes.
    """
    with fresh_schema() as url:
        schema = url.rsplit("schema=", 1)[1]
        with configured(f"{url}&application_name={schema}") as named:
            yield named


def test_killed_connections_are_replaced_and_nothing_is_written_twice(pg_url: str) -> None:
    """Every connection of this test's World is cut, twice, while a worker is busy."""
    schema = pg_url.rsplit("application_name=", 1)[1]
    with tether.Worker(lease_seconds=5.0):
        runs: list[tether.Run] = []
        starter = threading.Thread(
            target=lambda: runs.extend(tether.start(bumps, [i]) for i in range(300))
        )
        starter.start()
        for _ in range(2):
            time.sleep(0.3)
            with admin() as conn:
                cut = conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE application_name = %s AND pid <> pg_backend_pid()",
                    (schema,),
                ).fetchall()
            assert cut, "the World's connections should have been found by their name"
        starter.join(timeout=60)
        assert [r.result(timeout=30) for r in runs] == [i + 3 for i in range(300)]
    with admin() as conn:
        twice = conn.execute(
            f"SELECT run_id, correlation_id FROM {schema}.events WHERE type = 'step_completed'"
            " GROUP BY run_id, correlation_id HAVING COUNT(*) > 1"
        ).fetchall()
        gaps = conn.execute(
            f"SELECT run_id FROM {schema}.events GROUP BY run_id HAVING MAX(seq) <> COUNT(*)"
        ).fetchall()
    assert twice == [] and gaps == []
