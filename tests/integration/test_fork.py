"""``rerun(run_id, deployment_id, from_step=N)``: a failed run forked onto fixed code.

v1 of ``orders.fulfil`` reserves, charges, sleeps, then fails to ship; v2
ships. The fork keeps the reservation, the charge and the sleep (run once,
on v1) and runs only the shipping on v2. The fork is made by a real process
holding v2's code, against real worker processes of each version.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import tether
from tests.cli.helpers import tether_exe
from tests.integration.processes import REPO, WorkerProcess, read_marks

pytestmark = pytest.mark.both_worlds

V1, V2 = REPO / "tests" / "apps" / "fork_v1", REPO / "tests" / "apps" / "fork_v2"
FULFIL = "workflow//orders//fulfil"

FORKER = """
import json, sys, tether
import orders  # v2's code: the fork is checked against it
tether.configure(sys.argv[1])
step = sys.argv[3] if sys.argv[3] == "auto" else int(sys.argv[3])
try:
    run = tether.rerun(sys.argv[2], "v2", from_step=step)
except tether.TetherError as exc:
    print(json.dumps({"error": type(exc).__name__, "message": str(exc)}))
else:
    print(json.dumps({"run_id": run.run_id, "forked_from": run.forked_from,
                      "fork_point": run.fork_point, "deployment": run.deployment_id}))
"""


def fork_with_v2_code(url: str, run_id: str, from_step: str) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if k != "TETHER_DEPLOYMENT_ID"}
    env["PYTHONPATH"] = os.pathsep.join([str(V2), str(REPO), str(REPO / "src")])
    done = subprocess.run(
        [sys.executable, "-c", FORKER, url, run_id, from_step],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result: dict[str, object] = json.loads(done.stdout)
    return result


def worker_of(version: str, url: str, tmp_path: Path) -> WorkerProcess:
    code = V1 if version == "v1" else V2
    log = tmp_path / f"{version}.log"
    return WorkerProcess(
        url, ["orders"], log, pythonpath=code, env={"TETHER_DEPLOYMENT_ID": version}
    )


def test_a_failed_run_forked_onto_fixed_code_runs_only_what_failed(
    world_url: str, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    with_v1 = worker_of("v1", world_url, tmp_path)
    failed = tether.start(FULFIL, [str(marks), "o-1", 0.2], deployment_id="v1")
    with pytest.raises(tether.RunFailedError, match="no carrier for o-1"):
        failed.result(timeout=30)
    with_v1.stop()
    with_v2 = worker_of("v2", world_url, tmp_path)
    try:
        before = len(tether.list_runs(limit=None))
        # Past the run's history, or not a step number: refused, nothing written.
        beyond = fork_with_v2_code(world_url, failed.run_id, "9")
        assert beyond["error"] == "InvalidValueError" and "made 4 requests" in str(
            beyond["message"]
        )
        assert len(tether.list_runs(limit=None)) == before
        # Request #3 is the shipping: reserve #0, charge #1, the sleep #2 are kept.
        forked = fork_with_v2_code(world_url, failed.run_id, "3")
        assert (forked["forked_from"], forked["fork_point"], forked["deployment"]) == (
            failed.run_id,
            3,
            "v2",
        )
        run = tether.get_run(str(forked["run_id"]))
        assert run.result(timeout=30) == [
            "reserved o-1",
            "charged o-1",
            "shipped o-1",
            "notified o-1",
            "v2",
        ]
        assert run.rerun_of == failed.run_id
        # The same from the shell, by a prefix of the id.
        env = {"PYTHONPATH": os.pathsep.join([str(V2), str(REPO), str(REPO / "src")])}
        args = ("rerun", failed.run_id[:14], "--deployment", "v2", "--from-step", "3")
        shell = tether_exe(*args, "--code", "orders", url=world_url, env=env)
        assert shell.code == 0, shell
        again = tether.get_run(shell.lines[0])
        assert (again.forked_from, again.fork_point) == (failed.run_id, 3)
        assert again.result(timeout=30)[-1] == "v2"
        # Without the code here, v2's live worker checks; auto for a failed run is the
        # step that failed it.
        plain = {"PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "src")])}
        auto = ("rerun", failed.run_id, "--deployment", "v2", "--from-step", "auto")
        by_worker = tether_exe(*auto, url=world_url, env=plain)
        assert by_worker.code == 0, by_worker
        third = tether.get_run(by_worker.lines[0])
        assert (third.forked_from, third.fork_point) == (failed.run_id, 3)
        assert third.result(timeout=30)[-1] == "v2"
    finally:
        with_v2.stop()
    labels = sorted(label for label, _ in read_marks(marks))
    # Reserved and charged once in all (on v1); shipped on v1 (failed), then by each fork.
    assert labels == [
        "charge:o-1:v1",
        *["notify:o-1:v2"] * 3,
        "reserve:o-1:v1",
        "ship:o-1:v1",
        *["ship:o-1:v2"] * 3,
    ]
    # The sleep kept its deadline: the fork did not sleep again.
    kinds = [e.type for e in run.events()]
    assert kinds.count("wait_created") == 1 and kinds.count("wait_completed") == 1
    original_sleep = next(e for e in failed.events() if e.type == "wait_created")
    forked_sleep = next(e for e in run.events() if e.type == "wait_created")
    assert forked_sleep.attrs == original_sleep.attrs and forked_sleep.created_at == (
        original_sleep.created_at
    )


def test_a_fork_onto_a_deployment_never_registered_is_refused(
    world_url: str, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    with_v1 = worker_of("v1", world_url, tmp_path)
    failed = tether.start(FULFIL, [str(marks), "o-2", 0.1], deployment_id="v1")
    with pytest.raises(tether.RunFailedError):
        failed.result(timeout=30)
    with_v1.stop()
    # v2 is not registered yet: the fork says so, and writes nothing.
    missing = fork_with_v2_code(world_url, failed.run_id, "3")
    assert missing["error"] == "DeploymentNotFoundError" and "'v2'" in str(missing["message"])
    assert [r.run_id for r in tether.list_runs(limit=None)] == [failed.run_id]
