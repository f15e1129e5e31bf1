"""A worker survives a World that fails: it backs off, and runs are replayed, not stuck."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import tether
from tether import step, workflow
from tether.worlds.records import Activation, StepOutcome, Task
from tether.worlds.sqlite import SqliteWorld


class FailingWorld(SqliteWorld):
    """The real SQLite World, except that chosen calls raise a few times."""

    def __init__(self, url: str, failures: dict[str, int]) -> None:
        super().__init__(url)
        self.failures = failures

    def _maybe_fail(self, name: str) -> None:
        if self.failures.get(name, 0) > 0:
            self.failures[name] -= 1
            raise OSError(f"injected failure of {name}")

    async def claim_due_async(
        self,
        deployment_id: str,
        worker_id: str,
        limit: int,
        lease_seconds: float,
        ahead: float = 0.0,
    ) -> tuple[list[Task], float | None]:
        self._maybe_fail("claim")
        return await super().claim_due_async(deployment_id, worker_id, limit, lease_seconds, ahead)

    async def finish_step_async(
        self, outcome: StepOutcome, activation: Activation | None = None
    ) -> bool:
        self._maybe_fail("finish")
        return await super().finish_step_async(outcome, activation)

    async def commit_activation_async(self, activation: Activation) -> bool:
        self._maybe_fail("activation")
        return await super().commit_activation_async(activation)


@step
async def double(x: int) -> int:
    return x * 2


@workflow
async def doubled_twice(x: int) -> int:
    await asyncio.sleep(0)
    return int(await double(await double(x)))


def test_runs_finish_although_the_world_failed_mid_way(tmp_path: Path) -> None:
    world = FailingWorld(
        f"sqlite:///{tmp_path}/faulty.db", {"claim": 2, "finish": 2, "activation": 1}
    )
    try:
        with tether.Worker(world=world, lease_seconds=2.0):
            # A failed step delivery gives the run back; the claims that take it
            # again fail twice before one succeeds.
            run = tether.start(doubled_twice, [3], world=world.url)
            assert run.result(timeout=30) == 12
            again: Any = tether.start(doubled_twice, [5], world=world.url)
            assert again.result(timeout=30) == 20
        assert world.failures == {"claim": 0, "finish": 0, "activation": 0}
        completed = [e for e in run.events() if e.type == "step_completed"]
        assert len(completed) == 2
    finally:
        world.close()
