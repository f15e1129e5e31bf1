"""Two code versions of one app on one database: every run stays on the code that started it.

``tests/apps/v1/shop.py`` and ``tests/apps/v2/shop.py`` are the same module
(``shop``) before and after a change; each worker process gets one of them
through PYTHONPATH and its own ``TETHER_DEPLOYMENT_ID``, as two deployments
of one application would.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import tether
from tests.integration.processes import REPO, WorkerProcess, read_marks, wait_for

pytestmark = pytest.mark.both_worlds


V1, V2 = REPO / "tests" / "apps" / "v1", REPO / "tests" / "apps" / "v2"
CHECKOUT = "workflow//shop//checkout"
DIGEST = "workflow//shop//digest"


class Fleet:
    """Starts and stops worker processes of either version on one database."""

    def __init__(self, url: str, tmp_path: Path) -> None:
        self.url, self.tmp_path = url, tmp_path
        self.procs: list[WorkerProcess] = []

    def deploy(self, version: str) -> WorkerProcess:
        path = V1 if version == "v1" else V2
        log = self.tmp_path / f"{version}-{len(self.procs)}.log"
        proc = WorkerProcess(
            self.url, ["shop"], log, pythonpath=path, env={"TETHER_DEPLOYMENT_ID": version}
        )
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.proc.poll() is None:
                proc.stop()


@pytest.fixture
def fleet(world_url: str, tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(world_url, tmp_path)
    yield f
    f.stop_all()


def _sleeping(run: tether.Run) -> bool:
    return any(e.type == "wait_created" for e in run.events())


def _heartbeat_of(deployment_id: str) -> float:
    """When a worker of ``deployment_id`` last said it was alive (0 if never)."""
    listing = {d.deployment_id: d for d in tether.deployments.list_deployments()}
    return listing[deployment_id].last_heartbeat_at or 0.0


def labels(marks: Path) -> list[str]:
    return [label for label, _ in read_marks(marks)]


def test_sleeping_run_resumes_on_v1_after_v2_is_deployed(fleet: Fleet, tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    fleet.deploy("v1")
    old = tether.start(CHECKOUT, [str(marks), "o-1", 3600], deployment_id="latest")
    assert old.deployment_id == "v1"
    wait_for(lambda: _sleeping(old), 10, "the v1 run to sleep")
    fleet.deploy("v2")
    new = tether.start(CHECKOUT, [str(marks), "o-2", 0.1], deployment_id="latest")
    assert new.deployment_id == "v2"
    assert new.result(timeout=15) == "v2"
    # The old run's sleep ends only now, with v2 deployed beside v1.
    assert tether.config.resolve_world().wake_sleeps(old.run_id) == 1
    assert old.result(timeout=15) == "v1"
    assert labels(marks).count("pick:o-1:v1") == 1
    assert "pack:o-1:v1" in labels(marks), "the old run must finish on the old code"
    assert {"pick:o-2:v2", "pack:o-2:v2"} <= set(labels(marks))
    assert not any(label.endswith(":v2") for label in labels(marks) if ":o-1:" in label)


def test_v1_run_waits_for_a_v1_worker(fleet: Fleet, tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    v1 = fleet.deploy("v1")
    run = tether.start(CHECKOUT, [str(marks), "o-3", 0.5], deployment_id="v1")
    wait_for(lambda: _sleeping(run), 10, "the v1 run to sleep")
    assert v1.stop() == 0  # drains: the run stays asleep, pinned to v1
    fleet.deploy("v2")
    listing = {d.deployment_id: d for d in tether.deployments.list_deployments()}
    assert listing["v1"].stranded and listing["v1"].in_flight == 1
    assert not listing["v2"].stranded and listing["v2"].live_workers == 1
    # Let v2 live well past the end of the sleep: it must not touch the v1 run.
    (wait,) = tether.config.resolve_world().list_waits(run.run_id)
    wait_for(lambda: _heartbeat_of("v2") > wait.resume_at + 1.0, 10, "v2 to outlive the sleep")
    assert run.status() == "running"
    assert labels(marks) == ["pick:o-3:v1"]
    fleet.deploy("v1")
    assert run.result(timeout=15) == "v1"
    assert labels(marks) == ["pick:o-3:v1", "pack:o-3:v1"]
    listing = {d.deployment_id: d for d in tether.deployments.list_deployments()}
    assert not listing["v1"].stranded


def test_cancel_then_rerun_on_latest_runs_the_same_inputs_on_v2(
    fleet: Fleet, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    fleet.deploy("v1")
    buggy = tether.start(CHECKOUT, [str(marks), "o-4", 3600], deployment_id="latest")
    wait_for(lambda: _sleeping(buggy), 10, "the v1 run to sleep")
    fleet.deploy("v2")
    assert tether.cancel_run(buggy.run_id) is True
    with pytest.raises(tether.RunCancelledError):
        buggy.result(timeout=5)
    fixed = tether.rerun(buggy.run_id, deployment_id="latest")
    assert (fixed.deployment_id, fixed.rerun_of) == ("v2", buggy.run_id)
    assert fixed.workflow_name == buggy.workflow_name
    tether.config.resolve_world().wake_sleeps(fixed.run_id)  # skip its hour-long sleep
    wait_for(lambda: _sleeping(fixed), 10, "the rerun to sleep")
    tether.config.resolve_world().wake_sleeps(fixed.run_id)
    assert fixed.result(timeout=15) == "v2"
    assert labels(marks) == ["pick:o-4:v1", "pick:o-4:v2", "pack:o-4:v2"]


def test_self_upgrading_chain_moves_from_v1_to_v2(fleet: Fleet, tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    world = tether.config.resolve_world()
    fleet.deploy("v1")
    state = {"round": 1, "rounds": 3, "interval": 3600}
    first = tether.start(DIGEST, [str(marks), state], deployment_id="latest")
    wait_for(lambda: _sleeping(first), 10, "the first digest to sleep")
    fleet.deploy("v2")  # the continuation started after this goes to v2
    assert world.wake_sleeps(first.run_id) == 1
    result = first.result(timeout=15)
    assert result["version"] == "v1"
    second = tether.get_run(result["continued_as"])
    assert (second.deployment_id, second.parent_run_id) == ("v2", first.run_id)
    assert [c.run_id for c in first.children()] == [second.run_id]
    wait_for(lambda: _sleeping(second), 10, "the second digest to sleep")
    assert world.wake_sleeps(second.run_id) == 1
    result = second.result(timeout=15)
    third = tether.get_run(result["continued_as"])
    assert (third.deployment_id, third.parent_run_id) == ("v2", second.run_id)
    wait_for(lambda: _sleeping(third), 10, "the third digest to sleep")
    assert world.wake_sleeps(third.run_id) == 1
    assert third.result(timeout=15) == {"done": True, "version": "v2"}
    assert labels(marks) == ["digest:1:v1", "digest:2:v2", "digest:3:v2"]


def test_start_of_a_workflow_the_target_does_not_define_fails_clearly(
    fleet: Fleet, tmp_path: Path
) -> None:
    fleet.deploy("v1")
    with pytest.raises(tether.WorkflowNotFoundError) as info:
        tether.start("workflow//shop//gift_wrap", ["x", "o-5"], deployment_id="v1")
    assert "workflow//shop//gift_wrap" in str(info.value) and "'v1'" in str(info.value)
    assert "workflow//shop//checkout" in str(info.value)  # what it does define
    fleet.deploy("v2")
    run = tether.start(
        "workflow//shop//gift_wrap", [str(tmp_path / "m"), "o-5"], deployment_id="latest"
    )
    assert run.deployment_id == "v2"
    assert run.result(timeout=10) == "v2"
    with pytest.raises(tether.DeploymentNotFoundError, match="'v9'"):
        tether.start(CHECKOUT, ["x", "o-6", 1], deployment_id="v9")


def test_diff_reports_removed_steps_and_changed_signatures(fleet: Fleet) -> None:
    fleet.deploy("v1")
    fleet.deploy("v2")
    report = tether.deployments.diff("v1", "v2")
    changes = {c.workflow_name.rsplit("//", 1)[-1]: c for c in report.workflows}
    assert not report.safe
    assert changes["checkout"].safe is False
    assert "step step//shop//pack was renamed to step//shop//pack_and_label" in (
        changes["checkout"].reasons
    )
    assert changes["refund"].safe is False
    assert "new parameter 'amount' has no default" in changes["refund"].reasons
    assert changes["digest"].status == "unchanged" and changes["digest"].safe
    assert changes["gift_wrap"].status == "added"
    back = tether.deployments.diff("v2", "v1")
    assert {c.workflow_name.rsplit("//", 1)[-1]: c.status for c in back.workflows}[
        "gift_wrap"
    ] == "removed"


def test_diff_of_a_deployment_never_registered_names_the_registered_ones(world_url: str) -> None:
    with (
        tether.Worker(deployment_id="v-known"),
        pytest.raises(
            tether.DeploymentNotFoundError,
            match=r"'v-missing' is not registered .*registered: v-known",
        ) as missing,
    ):
        tether.deployments.diff("v-missing", "v-known")
    assert isinstance(missing.value, LookupError)
    assert "TETHER_DEPLOYMENT_ID=v-missing" in str(missing.value)
