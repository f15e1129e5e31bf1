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
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from tether import config
from tether.worlds.postgres import redact

#: Every World a test can run on: ``world_url`` gives ``sqlite`` unless the test asks for both.
WORLDS = ("sqlite", "postgres")

#: How the tests' World connections are named on the server (``application_name``).
#: Not tether's default, ``tether``: a test that cuts every ``tether`` connection
#: (``ALONE_ON_THE_SERVER`` in tests/conftest.py, which names its own so) must not cut
#: those of the tests running beside it under pytest-xdist.
APPLICATION_NAME = "tether_tests"

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
    return with_param(url, "schema", name)


def with_param(url: str, key: str, value: str) -> str:
    """``url`` with the query parameter ``key=value`` added at the end."""
    parts = urlsplit(url)
    query = f"{parts.query}&{key}={value}" if parts.query else f"{key}={value}"
    return urlunsplit(parts._replace(query=query))


@contextmanager
def fresh_schema() -> Iterator[str]:
    """A world URL on a new, uniquely named schema, dropped (with its tables) afterwards.

    Its connections are named ``APPLICATION_NAME`` on the server (see there).
    """
    require_postgres()
    name = f"tether_test_{uuid.uuid4().hex[:12]}"
    with admin() as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    named = POSTGRES_URL
    if APPLICATION_NAME != "tether":
        named = with_param(named, "application_name", APPLICATION_NAME)
    # The schema last: tests read its name as what follows "schema=".
    url = with_schema(named, name)
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


@contextmanager
def new_world_url(kind: str, folder: Path) -> Iterator[str]:
    """The URL of a World of ``kind`` (one of ``WORLDS``) that nobody used yet.

    SQLite: a file in ``folder`` (created on first open). PostgreSQL: a fresh
    schema, dropped afterwards.
    """
    if kind == "sqlite":
        yield f"sqlite:///{folder}/tether.db"
    elif kind == "postgres":
        with fresh_schema() as url:
            yield url
    else:
        raise ValueError(f"unknown World kind {kind!r}: expected one of {', '.join(WORLDS)}")
