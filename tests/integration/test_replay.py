"""Replay against changed code: the run fails loudly instead of going astray."""

from __future__ import annotations

from pathlib import Path

import pytest

import tether
from tests.integration.processes import REPO, WorkerProcess, read_marks, wait_for, worker_process

V1 = REPO / "tests" / "apps" / "v1"
V2 = REPO / "tests" / "apps" / "v2"
CHECKOUT = "workflow//shop//checkout"


def test_workflow_changed_between_replays_fails_with_non_determinism_error(
    world_url: str, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    # The same deployment id on both: exactly the mistake pinning exists to prevent.
    env = {"TETHER_DEPLOYMENT_ID": "same-id"}
    v1 = WorkerProcess(
        world_url, ["shop"], tmp_path / "v1.log", pythonpath=V1, env=env, lease_seconds=1.0
    )
    run = tether.start(CHECKOUT, [str(marks), "o-1", 1.0], deployment_id="same-id")
    wait_for(lambda: any(e.type == "wait_created" for e in run.events()), 10, "the run to sleep")
    v1.kill()
    with (
        worker_process(
            world_url,
            ["shop"],
            tmp_path / "v2.log",
            pythonpath=V2,
            env=env,
            args=("--replace-deployment",),
        ),
        pytest.raises(tether.RunFailedError) as info,
    ):
        run.result(timeout=20)
    error = info.value.error
    assert error["type"] == "tether.errors.NonDeterminismError"
    assert "request #2" in error["message"]
    assert "the log holds a sleep" in error["message"]
    assert "step 'step//shop//pack_and_label'" in error["message"]
    assert [label for label, _ in read_marks(marks)] == ["pick:o-1:v1"]
