"""Shared fixtures: a fresh SQLite World per test and an in-process worker on it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import tether
from tether import config


@pytest.fixture(autouse=True)
def deployment_id(monkeypatch: pytest.MonkeyPatch) -> str:
    """One explicit deployment for the test process and the workers it spawns.

    Without it each process would be its own deployment, fingerprinted from
    the modules it imported (the test process imports more than a worker).
    """
    monkeypatch.setenv("TETHER_DEPLOYMENT_ID", "tests")
    return "tests"


@pytest.fixture
def world_url(tmp_path: Path) -> Iterator[str]:
    """A fresh embedded World, configured as this process's default."""
    url = f"sqlite:///{tmp_path}/tether.db"
    config.configure(url)
    yield url
    config.configure(None)


@pytest.fixture
def worker(world_url: str) -> Iterator[tether.Worker]:
    """An in-process worker serving every workflow the tests imported."""
    with tether.Worker(lease_seconds=2.0) as w:
        yield w
