"""Fixtures for the CLI tests: a fresh World (of each backend, in ``both_worlds`` modules)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tether.worlds import open_world
from tether.worlds.base import World


@pytest.fixture
def url(world_url: str) -> str:
    """The test's World, created already: the CLI refuses to create one."""
    open_world(world_url).close()
    return world_url


@pytest.fixture
def world(url: str) -> Iterator[World]:
    """The same World, opened in the test process to set up and check data."""
    opened = open_world(url)
    yield opened
    opened.close()
