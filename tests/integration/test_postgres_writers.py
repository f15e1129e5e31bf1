"""A run started from an event loop commits on a writer of its own, not behind a busy batch."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tests.conformance.backends import fresh_schema
from tests.integration.busy import held_writer
from tether.worlds.postgres import PostgresWorld
from tether.worlds.records import NewRun


@pytest.fixture
def world() -> Iterator[PostgresWorld]:
    with fresh_schema() as url:
        opened = PostgresWorld(url)
        yield opened
        opened.close()


def test_a_start_from_a_loop_does_not_wait_for_the_writers_batch(world: PostgresWorld) -> None:
    with held_writer(world):

        async def start() -> str:
            made = await world.create_run_async(NewRun("r1", "workflow//t//f", "dep", "[]"))
            return made.run_id

        assert asyncio.run(asyncio.wait_for(start(), 10)) == "r1"
        run = world.get_run("r1")
        assert run is not None and run.status == "pending"
