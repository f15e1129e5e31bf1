"""Fixtures for the CLI tests: a fresh World of each backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.helpers import BACKENDS, make_url
from tether.worlds import open_world
from tether.worlds.base import World


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh World of each backend (created: the CLI refuses to create one)."""
    for made in make_url(request.param, tmp_path):
        open_world(made).close()
        yield made


@pytest.fixture
def world(url: str) -> Iterator[World]:
    """The same World, opened in the test process to set up and check data."""
    opened = open_world(url)
    yield opened
    opened.close()
