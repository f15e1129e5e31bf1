"""A PostgreSQL World's writer held in a batch, for tests of what must not wait for it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from tether.worlds.operations import Tx
from tether.worlds.postgres import PostgresWorld


@contextmanager
def held_writer(world: PostgresWorld) -> Iterator[None]:
    """While inside, ``world``'s writer is stuck in a batch (a long one, a slow commit)."""
    in_batch, release = threading.Event(), threading.Event()

    def stuck(_: Tx) -> None:
        in_batch.set()
        release.wait(30)

    held = world._writer.submit(stuck, None)
    try:
        assert in_batch.wait(10), "the writer never took the batch"
        yield
    finally:
        release.set()
        held.result(10)
