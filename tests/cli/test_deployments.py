"""``tether deployments``: stranded deployments cannot be missed; diff says what is safe."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.cli.helpers import (
    APP,
    NAPPER,
    create_run,
    error_line,
    register_deployment,
    tether,
    tether_exe,
    wait_until,
    workflow_entry,
)
from tests.integration.processes import WorkerProcess
from tether.worlds.base import World

pytestmark = pytest.mark.both_worlds


def deployment_rows(url: str, *args: str) -> dict[str, dict[str, object]]:
    result = tether("deployments", "list", "--json", *args, url=url)
    assert result.code == 0, result
    return {row["deployment_id"]: row for row in json.loads(result.out)}


def test_a_deployment_with_runs_in_flight_and_no_live_worker_is_flagged(
    url: str, world: World, tmp_path: Path
) -> None:
    worker = WorkerProcess(
        url,
        [APP],
        tmp_path / "worker.log",
        env={"TETHER_DEPLOYMENT_ID": "gone"},
        lease_seconds=0.4,  # a heartbeat every 0.1 s
    )
    runs = [create_run(world, NAPPER, [3600], deployment_id="gone") for _ in range(2)]
    wait_until(lambda: all(world.list_waits(r) for r in runs), 20, "the runs to sleep")
    alive = tether("deployments", "list", "--live-within", "1", url=url)
    assert alive.code == 0 and "STRANDED" not in alive.out + alive.err
    worker.kill()  # kill -9: the worker never says it stopped
    (gone,) = [d for d in world.list_deployments(None, 60) if d.deployment_id == "gone"]
    assert gone.last_heartbeat_at is not None
    # Within the liveness window the dead worker still counts as live...
    assert not deployment_rows(url)["gone"]["stranded"]
    # ...past it, the deployment is stranded: in the table, the JSON and a warning.
    wait_until(
        lambda: deployment_rows(url, "--live-within", "1")["gone"]["stranded"],
        10,
        "the deployment to be stranded",
    )
    # Not before the window: the last heartbeat is over a second old (late beats, on a
    # busy machine, move it earlier than the kill, so it is read, not assumed).
    assert time.time() - gone.last_heartbeat_at > 1.0
    row = deployment_rows(url, "--live-within", "1")["gone"]
    assert row["stranded"] and row["in_flight"] == 2 and row["live_workers"] == 0
    table = tether("deployments", "list", "--live-within", "1", url=url)
    line = next(line for line in table.out.splitlines() if line.startswith("gone"))
    assert "STRANDED" in line and line.split()[6:8] == ["2", "0"]
    assert "STRANDED deployment 'gone' has 2 run(s) in flight and no live worker" in table.err
    assert "tether cancel --deployment gone" in table.err
    # The warning shows with --json too (on stderr, keeping stdout parseable).
    as_json = tether("deployments", "list", "--json", "--live-within", "1", url=url)
    assert "STRANDED deployment 'gone'" in as_json.err


def test_a_cleanly_stopped_worker_strands_its_runs_at_once(
    url: str, world: World, tmp_path: Path
) -> None:
    worker = WorkerProcess(
        url, [APP], tmp_path / "worker.log", env={"TETHER_DEPLOYMENT_ID": "drained"}
    )
    run_id = create_run(world, NAPPER, [3600], deployment_id="drained")
    wait_until(lambda: world.list_waits(run_id), 20, "the run to sleep")
    assert worker.stop() == 0
    assert deployment_rows(url)["drained"]["stranded"]


def _manifest_pair(world: World) -> None:
    step = {"fingerprint": "s1", "params": [], "returns": ""}
    register_deployment(
        world,
        "v1",
        {
            "workflow//shop//same": workflow_entry(["order"], ["step//shop//pick"]),
            "workflow//shop//retyped": workflow_entry(["order"], []),
            "workflow//shop//dropped": workflow_entry(["order"], []),
            "workflow//shop//steps_moved": workflow_entry(["order"], ["step//shop//pack"]),
            "workflow//shop//step_edited": workflow_entry(["order"], ["step//shop//charge"]),
            "workflow//shop//grown": workflow_entry(["order"], []),
        },
        {"step//shop//pick": step, "step//shop//pack": step, "step//shop//charge": step},
    )
    register_deployment(
        world,
        "v2",
        {
            "workflow//shop//same": workflow_entry(["order"], ["step//shop//pick"]),
            "workflow//shop//retyped": workflow_entry(["order", "coupon"], []),
            "workflow//shop//steps_moved": workflow_entry(["order"], ["step//shop//box"]),
            "workflow//shop//brand_new": workflow_entry([], []),
            "workflow//shop//step_edited": workflow_entry(["order"], ["step//shop//charge"]),
            "workflow//shop//grown": workflow_entry(
                ["order", "note="], ["step//shop//pick"], fingerprint="f2"
            ),
        },
        {
            "step//shop//pick": step,
            "step//shop//box": step,
            "step//shop//charge": {**step, "fingerprint": "s2", "returns": "int"},
        },
    )


def test_diff_says_per_workflow_whether_bridging_is_safe(url: str, world: World) -> None:
    _manifest_pair(world)
    result = tether_exe("deployments", "diff", "v1", "v2", "--json", url=url)
    assert result.code == 0, result
    diff = json.loads(result.out)
    assert diff["old"] == "v1" and diff["new"] == "v2" and diff["safe"] is False
    changes = {c["workflow_name"].split("//")[-1]: c for c in diff["workflows"]}
    assert {name: (c["status"], c["safe"]) for name, c in changes.items()} == {
        "same": ("unchanged", True),
        "retyped": ("changed", False),
        "dropped": ("removed", False),
        "steps_moved": ("changed", False),
        "brand_new": ("added", True),
        "step_edited": ("changed", True),
        "grown": ("changed", True),
    }
    assert changes["retyped"]["reasons"] == ["new parameter 'coupon' has no default"]
    assert changes["retyped"]["changes"] == ["new parameter 'coupon' has no default"]
    assert changes["steps_moved"]["reasons"] == [
        "step step//shop//pack was renamed to step//shop//box"
    ]
    # What changed is listed apart from the verdict: a step's new code is a change,
    # safe to bridge; so are new code and a new parameter with a default.
    assert changes["step_edited"]["changes"] == [
        "step step//shop//charge: code changed",
        "step step//shop//charge: return type changed",
    ]
    assert changes["step_edited"]["reasons"] == []
    assert changes["grown"]["changes"] == [
        "workflow code changed",
        "parameter 'note' added",
        "step step//shop//pick is new",
    ]
    assert changes["same"]["changes"] == []
    table = tether("deployments", "diff", "v1", "latest", url=url)
    assert table.code == 0, table
    assert "v1 -> v2" in table.out and "NOT safe for 3 of 7 workflows" in table.out
    dropped = next(line for line in table.out.splitlines() if "//dropped" in line)
    assert "UNSAFE" in dropped and "was removed" in dropped
    same = tether("deployments", "diff", "v2", "v2", url=url)
    assert "safe for every workflow" in same.out
    unknown = tether("deployments", "diff", "v1", "v9", url=url)
    assert unknown.code == 1 and "deployment 'v9' is not registered" in error_line(unknown)
