"""The two rules that keep a run on the code that started it.

A deployment id names one version of the code: a worker with other code
under a registered id refuses to start. And a run is only pinned to a
deployment some worker registered: else ``start()`` says so, with the fix.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import tether
from tests.cli.helpers import tether_exe
from tests.integration.processes import REPO, WorkerProcess

pytestmark = pytest.mark.both_worlds

V1, V2 = REPO / "tests" / "apps" / "v1", REPO / "tests" / "apps" / "v2"
REFUND = "workflow//shop//refund"
SORT_WORD = "workflow//tests.apps.sets//sort_word"


def serve(url: str, code: Path, version: str, log: Path) -> None:
    """A worker of ``code`` registers ``version``, then stops."""
    WorkerProcess(url, ["shop"], log, pythonpath=code, env={"TETHER_DEPLOYMENT_ID": version}).stop()


def worker_exe(url: str, code: Path, version: str, *flags: str) -> tuple[int, str]:
    """``tether worker shop`` for code that is refused: it exits by itself."""
    env = {"TETHER_DEPLOYMENT_ID": version, "PYTHONPATH": f"{code}:{REPO}:{REPO / 'src'}"}
    done = tether_exe("worker", "shop", *flags, url=url, env=env, timeout=30)
    return done.code, done.err


def test_a_deployment_id_cannot_be_reused_for_other_code(world_url: str, tmp_path: Path) -> None:
    serve(world_url, V1, "v1", tmp_path / "v1.log")
    before = tether.deployments.diff("v1", "v1").workflows
    code, stderr = worker_exe(world_url, V2, "v1")
    assert code == 2, stderr
    assert "deployment 'v1' was registered with other code" in stderr
    # It names what differs, and the fix.
    assert "workflow//shop//checkout (code, steps)" in stderr
    assert "workflow//shop//refund (code, parameters)" in stderr
    assert "TETHER_DEPLOYMENT_ID=" in stderr and "--replace-deployment" in stderr
    # Nothing of v2 was registered under v1: v1's refund still takes two arguments.
    assert tether.deployments.diff("v1", "v1").workflows == before
    with pytest.raises(TypeError, match="too many positional arguments"):
        tether.start(REFUND, ["p", "o", 5], deployment_id="v1")


def test_the_same_code_joins_and_new_names_are_added(world_url: str, tmp_path: Path) -> None:
    serve(world_url, V1, "v1", tmp_path / "a.log")
    with pytest.raises(tether.WorkflowNotFoundError):
        tether.start(SORT_WORD, ["apple"], deployment_id="v1")
    # A second worker of the same code, which imports one module more: it joins, and
    # what only it defines is added to v1.
    WorkerProcess(
        world_url,
        ["shop", "tests.apps.sets"],
        tmp_path / "b.log",
        pythonpath=V1,
        env={"TETHER_DEPLOYMENT_ID": "v1"},
    ).stop()
    assert [d.deployment_id for d in tether.deployments.list_deployments()] == ["v1"]
    assert tether.start(SORT_WORD, ["apple"], deployment_id="v1").deployment_id == "v1"


def test_replace_deployment_is_the_explicit_override(world_url: str, tmp_path: Path) -> None:
    serve(world_url, V1, "v1", tmp_path / "v1.log")
    proc = WorkerProcess(
        world_url,
        ["shop"],
        tmp_path / "replace.log",
        pythonpath=V2,
        env={"TETHER_DEPLOYMENT_ID": "v1"},
        args=("--replace-deployment",),
    )
    proc.stop()
    # It says what it took over, and v1 now records v2's code.
    assert "replaced deployment 'v1': it was registered with other code for" in proc.output()
    assert "workflow//shop//refund (code, parameters)" in proc.output()
    with pytest.raises(TypeError, match="missing a required argument: 'amount'"):
        tether.start(REFUND, ["p", "o"], deployment_id="v1")  # v2's refund, under v1


@tether.workflow
async def greet(name: str) -> str:
    return f"hello {name}"


def test_start_on_an_unregistered_own_deployment_names_both_fixes(
    world_url: str, tmp_path: Path, deployment_id: str
) -> None:
    with pytest.raises(tether.DeploymentNotFoundError, match="registered: none"):
        tether.start(greet, ["ann"])
    serve(world_url, V1, "v1", tmp_path / "v1.log")
    with pytest.raises(tether.DeploymentNotFoundError) as info:
        tether.start(greet, ["ann"])
    message = str(info.value)
    assert f"this process's deployment {deployment_id!r} (from TETHER_DEPLOYMENT_ID)" in message
    assert "(registered: v1)" in message
    assert "TETHER_DEPLOYMENT_ID=v1" in message and "deployment_id='latest'" in message
    assert tether.list_runs() == []  # nothing was written
    # Once a worker of this deployment has registered it, the same start works.
    with tether.Worker():
        assert tether.start(greet, ["ann"]).result(timeout=10) == "hello ann"


def test_a_client_with_an_id_that_cannot_name_a_deployment_is_told(
    world_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TETHER_DEPLOYMENT_ID", "latest")
    with pytest.raises(tether.ConfigurationError, match="TETHER_DEPLOYMENT_ID: invalid"):
        tether.start(greet, ["ann"])
