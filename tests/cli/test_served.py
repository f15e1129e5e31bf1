"""Commands whose runs really execute: one ``tether worker`` of deployment ``cli-new`` per backend.

Deployment ``old`` is registered before the worker starts (so ``cli-new`` is
latest) and has no worker: runs pinned to it wait, as after a bad deploy.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

import pytest

from tests.cli.helpers import (
    APP,
    APPROVAL,
    COUNTER,
    DOOMED,
    HELLO,
    NAPPER,
    REPO,
    TETHER,
    TOTALS,
    create_run,
    error_line,
    hello_deployment,
    tether,
    tether_exe,
    wait_until,
)
from tests.conformance.backends import WORLDS, new_world_url
from tests.integration.processes import WorkerProcess, worker_process
from tether.worlds import open_world
from tether.worlds.base import World
from tether.worlds.records import RunFilter

NEW = "cli-new"


@dataclass(frozen=True)
class Served:
    url: str
    world: World
    worker: WorkerProcess

    def status(self, run_id: str) -> str:
        return self.world.get_run(run_id).status  # type: ignore[union-attr]


@pytest.fixture(scope="module", params=WORLDS)
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("served")
    with new_world_url(request.param, folder) as url:
        world = open_world(url)
        hello_deployment(world, "old")
        env = {"TETHER_DEPLOYMENT_ID": NEW}
        with worker_process(url, [APP], folder / "worker.log", env=env, lease_seconds=2.0) as w:
            yield Served(url, world, w)
        world.close()


def test_start_with_json_args_and_wait(served: Served) -> None:
    result = tether_exe(
        "start", TOTALS, '{"a": 2, "b": 3}', "--wait", "--timeout", "30", url=served.url
    )
    assert result.code == 0, result
    run_id, output = result.lines
    assert json.loads(output) == {"items": 2, "sum": 5}
    assert served.world.get_run(run_id).deployment_id == NEW  # type: ignore[union-attr]
    assert f"started {run_id} (totals on {NEW})" in result.err
    two_args = tether("start", HELLO, '"ann"', '"?"', "--wait", url=served.url)
    assert two_args.code == 0 and json.loads(two_args.lines[1]) == "hello ann?"
    before = len(served.world.list_runs(RunFilter()))
    too_many = tether("start", HELLO, '"a"', '"b"', '"c"', url=served.url)
    assert too_many.code == 2, too_many
    line = error_line(too_many)
    assert HELLO in line and "(name, punctuation=...)" in line and "['a', 'b', 'c']" in line
    assert len(served.world.list_runs(RunFilter())) == before  # nothing was started


def test_start_on_a_chosen_deployment(served: Served) -> None:
    pinned = tether("start", HELLO, '"x"', "--deployment", "old", url=served.url)
    assert pinned.code == 0, pinned
    assert served.world.get_run(pinned.lines[0]).deployment_id == "old"  # type: ignore[union-attr]
    latest = tether("start", NAPPER, "0", "--latest", "--wait", url=served.url)
    assert latest.code == 0 and json.loads(latest.lines[1]) == "rested"
    missing = tether("start", DOOMED, '"x"', "--deployment", "old", url=served.url)
    assert missing.code == 1
    assert f"workflow {DOOMED!r} is not defined in deployment 'old'" in error_line(missing)
    unknown = tether("start", HELLO, '"x"', "--deployment", "nope", url=served.url)
    assert unknown.code == 1 and "deployment 'nope' is not registered" in error_line(unknown)
    served.world.cancel_runs([pinned.lines[0]])


def test_start_with_a_run_id_is_idempotent(served: Served) -> None:
    first = tether_exe("start", HELLO, '"id"', "--run-id", "greet-id-1", "--wait", url=served.url)
    assert first.code == 0, first
    assert first.lines == ["greet-id-1", '"hello id!"']
    assert "started greet-id-1 (hello on cli-new)" in first.err
    again = tether("start", HELLO, '"id"', "--run-id", "greet-id-1", "--wait", url=served.url)
    assert again.code == 0 and again.lines == ["greet-id-1", '"hello id!"']
    assert "run exists, not started again: greet-id-1" in again.err
    assert [r.run_id for r in served.world.list_runs(RunFilter())].count("greet-id-1") == 1
    taken = tether("start", NAPPER, "0", "--run-id", "greet-id-1", url=served.url)
    assert taken.code == 1 and "'greet-id-1' is taken by a run of" in error_line(taken)
    bad = tether("start", HELLO, '"x"', "--run-id", "no spaces", url=served.url)
    assert bad.code == 2 and "invalid run id 'no spaces'" in error_line(bad)


def read_line(stream: IO[str], timeout: float = 30) -> str:
    """A line from a child's pipe, or a failure after ``timeout`` (the child died or hung)."""
    ready, _, _ = select.select([stream], [], [], timeout)
    assert ready, f"no line within {timeout}s"
    return stream.readline()


def test_ctrl_c_while_waiting_leaves_the_run_going(served: Served) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    env.update(TETHER_WORLD=served.url, PYTHONPATH=f"{REPO}:{REPO / 'src'}", NO_COLOR="1")
    proc = subprocess.Popen(
        [*TETHER, "start", NAPPER, "600", "--wait"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    run_id = read_line(proc.stdout).strip()  # printed once the run is written
    assert read_line(proc.stderr).startswith(f"started {run_id}")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert f"stopped waiting; run {run_id} goes on" in err and "Traceback" not in err
    assert served.status(run_id) in ("pending", "running")
    served.world.cancel_runs([run_id])


def test_wait_reports_a_failed_run_and_a_timeout(served: Served) -> None:
    failed = tether("start", DOOMED, '"out of stock"', "--wait", url=served.url)
    assert failed.code == 1
    assert "failed: tether.errors.FatalError: out of stock" in error_line(failed)
    slow = tether("start", NAPPER, "600", "--wait", "--timeout", "0.5", url=served.url)
    assert slow.code == 1 and "did not finish within 0.5s" in slow.err
    served.world.cancel_runs(slow.lines)


def test_rerun_on_latest_runs_the_same_inputs_on_the_new_deployment(served: Served) -> None:
    original = create_run(served.world, HELLO, ["bo", "."], deployment_id="old")
    served.world.cancel_runs([original])
    result = tether_exe("rerun", original, "--latest", url=served.url)
    assert result.code == 0, result
    (new,) = result.lines
    record = served.world.get_run(new)
    assert record is not None and record.deployment_id == NEW and record.rerun_of == original
    wait_until(lambda: served.status(new) == "completed", 20, "the rerun to complete")
    assert "hello bo." in (served.world.get_run(new).output or "")  # type: ignore[union-attr]
    stays = tether("rerun", original, url=served.url)
    assert served.world.get_run(stays.lines[0]).deployment_id == "old"  # type: ignore[union-attr]
    both = tether("rerun", original, "--latest", "--deployment", "old", url=served.url)
    assert both.code == 2 and "not both" in error_line(both)
    served.world.cancel_runs(stays.lines)


def test_rerun_many_and_warn_about_originals_still_running(served: Served) -> None:
    a = create_run(served.world, HELLO, ["a", "!"], deployment_id="old")
    b = create_run(served.world, HELLO, ["b", "!"], deployment_id="old")
    served.world.cancel_runs([a])
    result = tether("rerun", "--latest", a, b, url=served.url)
    assert result.code == 0, result
    assert len(result.lines) == 2
    assert f"the original is still pending: tether cancel {b}" in result.err
    for new in result.lines:
        wait_until(lambda new=new: served.status(new) == "completed", 20, "the reruns")
    served.world.cancel_runs([b])


def test_wake_a_sleeping_run(served: Served) -> None:
    run_id = tether("start", NAPPER, "3600", url=served.url).lines[0]
    wait_until(lambda: served.world.list_waits(run_id), 20, "the run to sleep")
    (sleep,) = json.loads(tether("inspect", "sleeps", run_id, "--json", url=served.url).out)
    assert sleep["status"] == "waiting" and sleep["wait_id"] == "0"
    table = tether("inspect", "sleeps", run_id, url=served.url)
    (row,) = [line for line in table.lines if line.startswith("0 ")]
    assert row.split()[1] == "waiting" and "(in 59m)" in row and row.rstrip().endswith("-")
    woke = tether_exe("sleeps", "wake", run_id, url=served.url)
    assert woke.code == 0, woke
    assert f"woke 1 sleep of {run_id}" in woke.err
    wait_until(lambda: served.status(run_id) == "completed", 20, "the woken run to complete")
    (sleep,) = json.loads(tether("inspect", "sleeps", run_id, "--json", url=served.url).out)
    assert sleep["status"] == "completed"
    again = tether("sleeps", "wake", run_id, url=served.url)
    assert again.code == 1 and "has ended (completed): no sleep to wake" in error_line(again)


def test_steps_and_events_of_a_finished_run(served: Served) -> None:
    run_id = tether("start", HELLO, '"cy"', "--wait", url=served.url).lines[0]
    (step,) = json.loads(
        tether("inspect", "steps", run_id, "--json", "--with-data", url=served.url).out
    )
    assert step["step_name"] == f"step//{APP}//greet" and step["status"] == "completed"
    assert step["attempt"] == 1 and step["input"] == ["cy", "!"] and step["output"] == "hello cy!"
    table = tether("inspect", "steps", "--run-id", run_id, url=served.url)
    assert "greet" in table.out and "completed" in table.out
    assert (
        json.loads(
            tether("inspect", "steps", run_id, "--status", "failed", "--json", url=served.url).out
        )
        == []
    )
    types = [
        e["type"]
        for e in json.loads(tether("inspect", "events", run_id, "--json", url=served.url).out)
    ]
    assert types[0] == "run_created" and types[-1] == "run_completed"
    assert "step_completed" in types
    first = tether("inspect", "events", run_id, "--json", "--limit", "2", url=served.url)
    assert [e["seq"] for e in json.loads(first.out)] == [1, 2]
    assert "next page: --cursor 2" in first.err
    rest = tether("inspect", "events", run_id, "--json", "--cursor", "2", url=served.url)
    assert [e["seq"] for e in json.loads(rest.out)] == list(range(3, len(types) + 1))
    newest = json.loads(
        tether(
            "inspect", "events", run_id, "--json", "--sort", "desc", "--limit", "1", url=served.url
        ).out
    )
    assert newest[0]["type"] == "run_completed"
    events_table = tether("inspect", "events", run_id, "--with-data", url=served.url)
    assert events_table.code == 0, events_table
    rows = [line.split() for line in events_table.lines if line.split()[:1] in (["1"], ["3"])]
    assert rows[0][:3] == ["1", "run_created", "hello"] and rows[0][-2:] == [
        'deployment_id="cli-new"',
        '"cy"',
    ]
    assert rows[1][:5] == ["3", "step_created", "step", "0", "greet"]
    assert '"hello cy!"' in events_table.out and "attempt=1" in events_table.out


def test_resume_a_hook_by_its_token(served: Served) -> None:
    run_id = tether("start", APPROVAL, '"o-7"', url=served.url).lines[0]
    wait_until(lambda: served.world.list_hooks(run_id), 20, "the run to create its hook")
    (hook,) = json.loads(tether("inspect", "hooks", run_id, "--json", url=served.url).out)
    assert hook["token"] == "approve-o-7" and hook["status"] == "active"
    assert hook["metadata"] == {"order": "o-7"} and hook["webhook"] is False
    listed = tether("inspect", "hooks", "--status", "active", url=served.url)
    assert "approve-o-7" in listed.out and run_id in listed.out
    resumed = tether_exe("hooks", "resume", "approve-o-7", '{"ok": true}', url=served.url)
    assert resumed.code == 0, resumed
    assert resumed.lines == [run_id] and f"run {run_id} continues on {NEW}" in resumed.err
    wait_until(lambda: served.status(run_id) == "completed", 20, "the resumed run to complete")
    detail = json.loads(tether("inspect", "runs", run_id, "--json", url=served.url).out)
    assert detail["output"] == {"order": "o-7", "decision": {"ok": True}}
    assert [(h["token"], h["status"]) for h in detail["hooks"]] == [("approve-o-7", "disposed")]
    again = tether("hooks", "resume", "approve-o-7", "1", url=served.url)
    assert again.code == 1 and "no active hook has token 'approve-o-7'" in error_line(again)


def test_streams_of_a_run(served: Served) -> None:
    run_id = tether("start", COUNTER, "3", "--wait", url=served.url).lines[0]
    (stream,) = json.loads(
        tether("inspect", "streams", run_id, "--json", "--with-data", url=served.url).out
    )
    assert stream["run_id"] == run_id and stream["namespace"] == "default"
    assert stream["chunks"] == 3 and stream["closed"] is True
    assert stream["last_chunk"] == {"n": 2}
    table = tether("inspect", "streams", "--run-id", run_id, "--with-data", url=served.url)
    assert '{"n": 2}' in table.out and "closed" in table.out
    detail = tether("inspect", "runs", run_id, url=served.url)
    assert "streams (1)" in detail.out and "steps (1)" in detail.out


def test_deployments_list_shows_the_live_worker(served: Served) -> None:
    rows = {
        row["deployment_id"]: row
        for row in json.loads(tether("deployments", "list", "--json", url=served.url).out)
    }
    assert rows[NEW]["live_workers"] >= 1 and not rows[NEW]["stranded"]
    assert next(iter(rows)) == NEW  # newest first
    table = tether("deployments", "list", url=served.url)
    assert "serving" in table.out
