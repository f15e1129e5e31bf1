"""``tether deployments check``: v1's in-flight runs replayed against v2's code, no step run.

v1 and v2 are ``tests/apps/v1/shop.py`` and ``v2/shop.py``: v2's checkout packs
before it sleeps (a run sleeping on v1 diverges after its first step), and
v2's refund takes an amount (a v1 refund's arguments do not fit).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import tether
from tests.cli.helpers import tether_exe
from tests.integration.processes import REPO, WorkerProcess, read_marks, wait_for

pytestmark = pytest.mark.both_worlds

V1, V2 = REPO / "tests" / "apps" / "v1", REPO / "tests" / "apps" / "v2"
CHECKOUT, REFUND = "workflow//shop//checkout", "workflow//shop//refund"


def check_exe(url: str, code: Path, *args: str) -> tuple[int, str, str]:
    env = {"PYTHONPATH": f"{code}:{REPO}:{REPO / 'src'}"}
    done = tether_exe("deployments", "check", *args, url=url, env=env)
    return done.code, done.out, done.err


def test_check_says_which_runs_replay_diverge_or_cannot_move(
    world_url: str, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    v1 = WorkerProcess(
        world_url, ["shop"], tmp_path / "v1.log", pythonpath=V1, env={"TETHER_DEPLOYMENT_ID": "v1"}
    )
    sleeping = [
        tether.start(CHECKOUT, [str(marks), f"o-{i}", 3600], deployment_id="v1") for i in range(2)
    ]
    for run in sleeping:
        wait_for(lambda r=run: any(e.type == "wait_created" for e in r.events()), 20, "a sleep")
    v1.stop()
    waiting = tether.start(REFUND, [str(marks), "o-9"], deployment_id="v1")  # no worker: pending
    logs = {run.run_id: len(run.events()) for run in [*sleeping, waiting]}

    code, out, err = check_exe(world_url, V2, "v1", "local", "--code", "shop", "--json")
    assert code == 0, err
    verdicts = {r["run_id"]: r for r in json.loads(out)}
    assert set(verdicts) == set(logs)
    for run in sleeping:
        found = verdicts[run.run_id]
        assert (found["verdict"], found["fork_point"]) == ("diverges", 1)
        assert "request #2" in found["reason"] and "pack_and_label" in found["reason"]
    refund = verdicts[waiting.run_id]
    assert (refund["verdict"], refund["fork_point"]) == ("incompatible", None)
    assert "'amount'" in refund["reason"]
    # A check writes nothing, and ran no step: only v1's pick of each checkout is marked.
    assert {run.run_id: len(run.events()) for run in [*sleeping, waiting]} == logs
    assert sorted(label for label, _ in read_marks(marks)) == ["pick:o-0:v1", "pick:o-1:v1"]

    # The same against v2 once it is registered; and v1's code cannot stand in for v2.
    WorkerProcess(
        world_url, ["shop"], tmp_path / "v2.log", pythonpath=V2, env={"TETHER_DEPLOYMENT_ID": "v2"}
    ).stop()
    code, out, err = check_exe(world_url, V2, "v1", "v2", "--code", "shop")
    assert code == 0, err
    assert "3 runs of v1: 0 replays, 2 diverges, 1 incompatible" in err
    code, out, err = check_exe(world_url, V1, "v1", "v2", "--code", "shop")
    assert code == 2 and "does not hold the code of deployment 'v2'" in err


def test_a_live_worker_of_the_target_replays_for_a_caller_without_its_code(
    world_url: str, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    v1 = WorkerProcess(
        world_url, ["shop"], tmp_path / "v1.log", pythonpath=V1, env={"TETHER_DEPLOYMENT_ID": "v1"}
    )
    run = tether.start(CHECKOUT, [str(marks), "o-3", 3600], deployment_id="v1")
    wait_for(lambda: any(e.type == "wait_created" for e in run.events()), 20, "a sleep")
    v1.stop()
    logged = len(run.events())
    v2 = WorkerProcess(
        world_url, ["shop"], tmp_path / "v2.log", pythonpath=V2, env={"TETHER_DEPLOYMENT_ID": "v2"}
    )
    try:
        # This caller has neither release's code on its path: v2's worker replays.
        code, out, err = check_exe(world_url, REPO, "v1", "latest", "--json")
        assert code == 0, err
        [found] = json.loads(out)
        assert (found["run_id"], found["verdict"], found["fork_point"]) == (
            run.run_id,
            "diverges",
            1,
        )
        assert "pack_and_label" in found["reason"]
        # The API the same way; asked to replay here, where v2's code is not, it says so.
        [again] = tether.deployments.check("v1", "v2", replay="worker")
        assert (again.verdict, again.fork_point) == ("diverges", 1)
        with pytest.raises(tether.WorkflowNotFoundError, match="has not imported"):
            tether.deployments.check("v1", "v2", replay="here")
    finally:
        v2.stop()
    code, _, err = check_exe(world_url, REPO, "v1", "v2")
    assert code == 1 and "deployment 'v2' has no live worker" in err and "--code MODULE" in err
    assert len(run.events()) == logged  # checks write nothing to the run
    assert sorted(label for label, _ in read_marks(marks)) == ["pick:o-3:v1"]


def test_upgrade_reruns_a_diverging_run_from_where_it_diverges(
    world_url: str, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    v1 = WorkerProcess(
        world_url, ["shop"], tmp_path / "v1.log", pythonpath=V1, env={"TETHER_DEPLOYMENT_ID": "v1"}
    )
    run = tether.start(CHECKOUT, [str(marks), "o-5", 0.5], deployment_id="v1")
    wait_for(lambda: any(e.type == "wait_created" for e in run.events()), 20, "a sleep")
    v1.stop()
    refund = tether.start(REFUND, [str(marks), "o-6"], deployment_id="v1")  # v2 needs an amount
    v2 = WorkerProcess(
        world_url, ["shop"], tmp_path / "v2.log", pythonpath=V2, env={"TETHER_DEPLOYMENT_ID": "v2"}
    )
    try:
        env = {"PYTHONPATH": f"{V2}:{REPO}:{REPO / 'src'}", "COLUMNS": "200"}  # one row a line
        # Past the divergence (v2 packs where v1 slept, request #1): refused, nothing written.
        past = tether_exe(
            "rerun",
            run.run_id,
            "--deployment",
            "v2",
            "--from-step",
            "2",
            "--code",
            "shop",
            url=world_url,
            env=env,
        )
        assert past.code == 1 and "does not replay its history up to there" in past.err
        assert len(tether.list_runs(limit=None)) == 2
        moved = tether_exe(
            "deployments",
            "upgrade",
            "v1",
            "--to",
            "v2",
            "--code",
            "shop",
            "-y",
            url=world_url,
            env=env,
        )
        assert moved.code == 0, moved
        assert "1 moved" in moved.err and "re-running from step 1" in moved.out
        assert refund.status() == "pending"  # incompatible: left where it was
        fork = tether.get_run(run.events()[-1].attrs["upgraded_to"])  # type: ignore[index]
        assert fork.fork_point == 1 and fork.result(timeout=30) == "v2"
    finally:
        v2.stop()
    # The pick ran once (on v1); packing ran on v2's code only.
    assert sorted(label for label, _ in read_marks(marks)) == ["pack:o-5:v2", "pick:o-5:v1"]
