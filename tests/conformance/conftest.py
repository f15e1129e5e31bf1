"""Every conformance test runs once per World: ``sqlite`` and ``postgres``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conformance.backends import WORLDS
from tether.worlds import open_world
from tether.worlds.base import World


@pytest.fixture(params=WORLDS)
def world_kind(request: pytest.FixtureRequest) -> str:
    """Each World in turn; ``world_url`` (tests/conftest.py) makes a fresh one of it."""
    return str(request.param)


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
