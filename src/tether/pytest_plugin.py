"""The pytest plugin tether installs (entry point ``pytest11``): the ``tether_env`` fixture.

``tether_env`` is a ``tether.testing.TetherEnv`` on a World of the test's own:
a fresh SQLite file in its temporary folder, or, with ``--tether-world URL``
or ``$TETHER_TEST_WORLD``, a fresh schema of that PostgreSQL database
(dropped after the test).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tether.testing import TetherEnv


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--tether-world",
        metavar="URL",
        default=None,
        help="PostgreSQL URL whose fresh schemas tether_env uses (default: a SQLite file"
        " per test; also $TETHER_TEST_WORLD)",
    )


@pytest.fixture
def tether_env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TetherEnv]:
    """The real engine on a World of this test's own, with a virtual clock."""
    base = request.config.getoption("--tether-world") or os.environ.get("TETHER_TEST_WORLD")
    if not base:
        with TetherEnv(f"sqlite:///{tmp_path / 'tether.db'}") as env:
            yield env
        return
    schema = f"tether_env_{uuid.uuid4().hex[:12]}"
    joiner = "&" if "?" in base else "?"
    try:
        with TetherEnv(f"{base}{joiner}schema={schema}") as env:
            yield env
    finally:
        _drop_schema(base, schema)


def _drop_schema(base: str, schema: str) -> None:
    import psycopg

    from tether.worlds.postgres_url import parse_url

    conninfo, _ = parse_url(base)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
