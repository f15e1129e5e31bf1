"""The real PostgreSQL server the tests use, and a fresh schema on it per test.

``TETHER_TEST_POSTGRES_URL`` names the server (default: a local ``test``
database). When it cannot be reached the PostgreSQL tests are skipped, with
the reason, except under ``CI=true``, where they fail: CI must run them.
"""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from tether import config
from tether.worlds.postgres import redact

POSTGRES_URL = os.environ.get(
    "TETHER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


@functools.cache
def _unreachable() -> str | None:
    """Why the test server cannot be used, or ``None`` when it can."""
    try:
        with psycopg.connect(POSTGRES_URL, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return str(exc).strip().splitlines()[0]
    return None


def require_postgres() -> None:
    """Skip (or, under ``CI=true``, fail) the test when the server is unreachable."""
    reason = _unreachable()
    if reason is None:
        return
    message = f"PostgreSQL at {redact(POSTGRES_URL)} is unreachable: {reason}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + " (CI=true: the PostgreSQL tests must run)", pytrace=False)
    pytest.skip(message + " (set TETHER_TEST_POSTGRES_URL or start the server)")


def admin() -> psycopg.Connection[tuple[object, ...]]:
    """A plain autocommit connection to the test database."""
    return psycopg.connect(POSTGRES_URL, autocommit=True)


def with_schema(url: str, name: str) -> str:
    """``url`` with tether's ``schema`` query parameter set to ``name``."""
    parts = urlsplit(url)
    query = f"{parts.query}&schema={name}" if parts.query else f"schema={name}"
    return urlunsplit(parts._replace(query=query))


@contextmanager
def fresh_schema() -> Iterator[str]:
    """A world URL on a new, uniquely named schema, dropped (with its tables) afterwards."""
    require_postgres()
    name = f"tether_test_{uuid.uuid4().hex[:12]}"
    with admin() as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    url = with_schema(POSTGRES_URL, name)
    try:
        yield url
    finally:
        close_worlds(url)
        with admin() as conn:
            conn.execute(f"DROP SCHEMA {name} CASCADE")


def close_worlds(url: str) -> None:
    """Close the process-wide World opened for ``url`` (it holds connections)."""
    config.close(url)


@contextmanager
def configured(url: str) -> Iterator[str]:
    """``url`` as this process's World for the block; its connections closed afterwards."""
    config.configure(url)
    try:
        yield url
    finally:
        config.configure(None)
        close_worlds(url)


def postgres_world_url() -> Iterator[str]:
    """Body of a ``world_url`` fixture: a fresh schema, configured as this process's World."""
    with fresh_schema() as url, configured(url):
        yield url


def rerun_on_postgres(module: ModuleType, namespace: dict[str, Any], *fixtures: str) -> None:
    """Collect every test of ``module`` (and the named fixtures) again in ``namespace``.

    The namespace's own ``world_url`` fixture then puts them on PostgreSQL.
    """
    for name, value in vars(module).items():
        if name.startswith("test_") or name in fixtures:
            namespace[name] = value
