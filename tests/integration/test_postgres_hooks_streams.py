"""The hook and stream scenarios of ``test_hooks_streams.py``, on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conformance.backends import postgres_world_url, rerun_on_postgres
from tests.integration import test_hooks_streams

rerun_on_postgres(test_hooks_streams, globals(), "server", "holding_worker")


@pytest.fixture
def world_url() -> Iterator[str]:
    """A fresh PostgreSQL schema instead of the default SQLite file."""
    yield from postgres_world_url()
