"""Every conformance test runs once per World: ``sqlite`` and ``postgres``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.conformance.backends import configured, fresh_schema
from tether.worlds import open_world
from tether.worlds.base import World


@pytest.fixture(params=["sqlite", "postgres"])
def world_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh World of each kind, configured as this process's default."""
    with ExitStack() as stack:
        if request.param == "sqlite":
            url = f"sqlite:///{tmp_path}/tether.db"
        else:
            url = stack.enter_context(fresh_schema())
        yield stack.enter_context(configured(url))


@pytest.fixture
def world(world_url: str) -> Iterator[World]:
    """A World instance of its own on the test's database."""
    opened = open_world(world_url)
    yield opened
    opened.close()


@pytest.fixture
def other_world(world_url: str) -> Iterator[World]:
    """A second instance on the same database: it stands in for another process."""
    opened = open_world(world_url)
    yield opened
    opened.close()
