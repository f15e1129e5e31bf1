"""The deployment acceptance scenarios of ``test_deployments.py``, on PostgreSQL.

Two code versions, pinning, a run waiting for a worker of its deployment,
cancel and rerun on latest, a self-upgrading chain: the same tests, with
worker processes on one PostgreSQL schema instead of one SQLite file."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conformance.backends import postgres_world_url, rerun_on_postgres
from tests.integration import test_deployments

rerun_on_postgres(test_deployments, globals(), "fleet")


@pytest.fixture
def world_url() -> Iterator[str]:
    """A fresh PostgreSQL schema instead of the default SQLite file."""
    yield from postgres_world_url()
