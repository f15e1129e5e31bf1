"""``tether deployments upgrade``: runs sleeping on v1 move to v2 without redoing their work.

v1 and v2 of ``orders.fulfil`` (``tests/apps/fork_v1``, ``fork_v2``) agree up
to the sleep; v1's shipping fails, v2's works. Runs asleep on v1 replay on v2
with nothing re-run: the move keeps their reservation, charge and sleep.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from pathlib import Path

import pytest

import tether
from tests.cli.helpers import TETHER, tether_exe
from tests.integration.processes import REPO, WorkerProcess, read_marks, wait_for

pytestmark = pytest.mark.both_worlds

V1, V2 = REPO / "tests" / "apps" / "fork_v1", REPO / "tests" / "apps" / "fork_v2"
FULFIL = "workflow//orders//fulfil"
RUNS = 20


def worker_of(version: str, url: str, tmp_path: Path) -> WorkerProcess:
    code = V1 if version == "v1" else V2
    log = tmp_path / f"{version}.log"
    return WorkerProcess(
        url, ["orders"], log, pythonpath=code, env={"TETHER_DEPLOYMENT_ID": version}
    )


def test_upgrade_moves_sleeping_runs_keeping_what_they_did(world_url: str, tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    v1 = worker_of("v1", world_url, tmp_path)
    runs = [
        tether.start(FULFIL, [str(marks), f"o-{i}", 6.0], deployment_id="v1") for i in range(RUNS)
    ]
    for run in runs:
        wait_for(lambda r=run: bool(r._world.list_waits(r.run_id)), 20, "a run to sleep")
    v1.stop()  # v1 is gone: its runs would wait for it forever
    deadlines = {r.run_id: r._world.list_waits(r.run_id)[0].resume_at for r in runs}
    v2 = worker_of("v2", world_url, tmp_path)
    try:
        # This shell has neither release's code: v2's live worker checks each run.
        env = {"COLUMNS": "200"}  # one table row a line, whatever the terminal
        dry = tether_exe("deployments", "upgrade", "v1", "--dry-run", url=world_url, env=env)
        assert dry.code == 0, dry
        assert f"{RUNS} would move" in dry.err
        assert all(r.status() == "running" for r in runs)  # a dry run moves nothing
        moved = tether_exe(
            "deployments", "upgrade", "v1", "--to", "latest", "-y", url=world_url, env=env
        )
        assert moved.code == 0, moved
        assert f"{RUNS} moved" in moved.err and moved.out.count("nothing re-run") == RUNS
        for i, run in enumerate(runs):
            events = run.events()
            assert run.status() == "cancelled"
            upgraded_to = events[-1].attrs["upgraded_to"]  # type: ignore[index]
            new = tether.get_run(upgraded_to)
            assert (new.deployment_id, new.forked_from, new.fork_point) == ("v2", run.run_id, 3)
            done = [f"{verb} o-{i}" for verb in ("reserved", "charged", "shipped", "notified")]
            assert new.result(timeout=30) == [*done, "v2"]
            kinds = {e.type: e for e in new.events()}
            resume_at = kinds["wait_created"].attrs["resume_at"]  # type: ignore[index]
            assert resume_at == deadlines[run.run_id]
            # The sleep ended at its original deadline, not a new one counted from the move.
            assert deadlines[run.run_id] <= kinds["wait_completed"].created_at
    finally:
        v2.stop()
    labels = sorted(label for label, _ in read_marks(marks))
    expected = sorted(
        label
        for i in range(RUNS)
        for label in (
            f"reserve:o-{i}:v1",
            f"charge:o-{i}:v1",
            f"ship:o-{i}:v2",
            f"notify:o-{i}:v2",
        )
    )
    # Steps 1-2 ran exactly once in all, on v1; step 3 (fixed) and 4 once each, on v2.
    assert labels == expected


def test_a_run_waiting_on_a_hook_moves_with_its_token(world_url: str, tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    v1 = worker_of("v1", world_url, tmp_path)
    run = tether.start("workflow//orders//approve", [str(marks), "o-7"], deployment_id="v1")
    wait_for(lambda: bool(run.hooks()), 20, "the run to wait on its hook")
    v1.stop()
    v2 = worker_of("v2", world_url, tmp_path)
    try:
        env = {"PYTHONPATH": os.pathsep.join([str(V2), str(REPO), str(REPO / "src")])}
        moved = tether_exe(
            "deployments",
            "upgrade",
            "v1",
            "--to",
            "v2",
            "--code",
            "orders",
            "-y",
            url=world_url,
            env=env,
        )
        assert moved.code == 0, moved
        new = tether.get_run(run.events()[-1].attrs["upgraded_to"])  # type: ignore[index]
        assert [h.status for h in run.hooks()] == ["disposed"]
        assert [(h.token, h.status) for h in new.hooks()] == [("approve-o-7", "active")]
        # Whoever holds the token delivers to the new run.
        assert tether.resume_hook("approve-o-7", "yes") == new.run_id
        assert new.result(timeout=30) == ["reserved o-7", "yes", "v2"]
    finally:
        v2.stop()
    assert [label for label, _ in read_marks(marks)] == ["reserve:o-7:v1"]


def test_an_upgrade_killed_midway_leaves_each_run_moved_or_not(
    world_url: str, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    v1 = worker_of("v1", world_url, tmp_path)
    count = 60
    runs = [
        tether.start(FULFIL, [str(marks), f"k-{i}", 3600], deployment_id="v1") for i in range(count)
    ]
    world = runs[0]._world
    for run in runs:
        wait_for(lambda r=run: bool(world.list_waits(r.run_id)), 30, "a run to sleep")
    v1.stop()
    worker_of("v2", world_url, tmp_path).stop()  # v2 registered; no worker needed to move
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(V2), str(REPO), str(REPO / "src")]),
        "TETHER_WORLD": world_url,
    }
    env.pop("TETHER_DEPLOYMENT_ID", None)
    args = ["deployments", "upgrade", "v1", "--to", "v2", "--code", "orders", "-y"]
    upgrading = subprocess.Popen([*TETHER, *args], env=env, cwd=REPO, stderr=subprocess.DEVNULL)

    def some_moved() -> bool:
        return upgrading.poll() is not None or any(r.status() == "cancelled" for r in runs)

    wait_for(some_moved, 60, "the upgrade to move a first run")
    upgrading.send_signal(signal.SIGKILL)  # mid-way, most likely: no cleanup at all
    upgrading.wait(timeout=10)

    def forks() -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for record in tether.list_runs(deployment_id="v2", limit=None):
            found.setdefault(str(record.forked_from), []).append(record.run_id)
        return found

    moved = forks()
    for run in runs:
        if run.status() == "cancelled":
            target = run.events()[-1].attrs["upgraded_to"]  # type: ignore[index]
            assert moved.get(run.run_id) == [target], run.run_id  # moved: exactly one fork
        else:
            assert run.status() == "running" and run.run_id not in moved  # not moved at all
    # The rest moves when the upgrade is run again; nothing is doubled.
    again = tether_exe(*args, url=world_url, env={"PYTHONPATH": env["PYTHONPATH"]})
    assert again.code == 0, again
    assert all(r.status() == "cancelled" for r in runs)
    assert sorted(forks()) == sorted(r.run_id for r in runs)
    assert all(len(ids) == 1 for ids in forks().values())


def test_streams_and_hook_payloads_follow_runs_that_move(world_url: str, tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    count = 24
    v1 = worker_of("v1", world_url, tmp_path)
    runs = [
        tether.start("workflow//orders//dispatch", [str(marks), f"d-{i}"], deployment_id="v1")
        for i in range(count)
    ]
    for run in runs:
        wait_for(lambda r=run: bool(r.hooks()), 20, "a run to wait for its carrier")
    v1.stop()
    v2 = worker_of("v2", world_url, tmp_path)
    read: dict[int, list[object]] = {}

    def reader(i: int, run: tether.Run) -> None:
        read[i] = list(run.readable)  # the original's stream, read until it closes

    readers = [
        threading.Thread(target=reader, args=(i, r), daemon=True) for i, r in enumerate(runs)
    ]
    for thread in readers:
        thread.start()
    try:
        args = ("deployments", "upgrade", "v1", "--to", "latest", "-y")
        env = {**os.environ, "TETHER_WORLD": world_url, "PYTHONPATH": f"{REPO}:{REPO / 'src'}"}
        env.pop("TETHER_DEPLOYMENT_ID", None)
        upgrading = subprocess.Popen([*TETHER, *args], env=env, cwd=REPO, stdout=subprocess.PIPE)
        wait_for(
            lambda: upgrading.poll() is not None or any(r.status() == "cancelled" for r in runs),
            60,
            "the upgrade to move a first run",
        )
        # Each payload races the move: it reaches the original, or the run that replaced
        # it, never neither (a HookNotFoundError here would be a payload lost).
        for i in range(count):
            assert tether.resume_hook(f"carrier-d-{i}", f"c{i}")
        assert upgrading.wait(timeout=60) == 0
        # A run a payload reached after its check was left; moving again takes it.
        again = tether_exe(*args, url=world_url, env={"PYTHONPATH": env["PYTHONPATH"]})
        assert again.code == 0, again
        for i, run in enumerate(runs):
            assert run.status() == "cancelled" and run.upgraded_to is not None
            new = tether.get_run(run.upgraded_to)
            assert new.result(timeout=30) == [f"packed d-{i}", f"labelled d-{i}", "v2"]
        for thread in readers:
            thread.join(timeout=30)
            assert not thread.is_alive(), "a reader of a moved run never ended"
    finally:
        v2.stop()
    for i in range(count):
        # The reader of the original read on in its replacement: the packing once (v1's
        # chunk, copied), the label once (v2's).
        assert read[i] == [f"packed d-{i} on v1", f"labelled d-{i} for c{i} on v2"]
    labels = sorted(label for label, _ in read_marks(marks))
    assert labels == sorted(
        label for i in range(count) for label in (f"pack:d-{i}:v1", f"label:d-{i}:v2")
    )


def test_children_started_before_the_move_stay_linked(world_url: str, tmp_path: Path) -> None:
    v1 = worker_of("v1", world_url, tmp_path)
    run = tether.start("workflow//orders//escalate", ["e-1", 3600], deployment_id="v1")
    wait_for(lambda: bool(run._world.list_waits(run.run_id)), 20, "the run to sleep")
    [child] = run.children()
    assert child.result(timeout=30) == "ticket for e-1 on v1"
    v1.stop()
    v2 = worker_of("v2", world_url, tmp_path)
    try:
        moved = tether_exe("deployments", "upgrade", "v1", "-y", url=world_url)
        assert moved.code == 0, moved
        assert run.upgraded_to is not None
        new = tether.get_run(run.upgraded_to)
        # The step that opened the ticket was kept, not run again: the same child, linked.
        assert [c.run_id for c in new.children()] == [child.run_id]
        assert tether.get_run(child.run_id).parent_run_id == run.run_id
        assert len(tether.list_runs(workflow_name="workflow//orders//ticket", limit=None)) == 1
        new.cancel()
    finally:
        v2.stop()


def test_a_workflow_the_target_dropped_is_incompatible_and_nothing_moves(
    world_url: str, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    v1 = worker_of("v1", world_url, tmp_path)
    run = tether.start("workflow//orders//gift_card", [str(marks), "g-1"], deployment_id="v1")
    wait_for(lambda: bool(run._world.list_waits(run.run_id)), 20, "the run to sleep")
    v1.stop()
    logged = len(run.events())
    v2 = worker_of("v2", world_url, tmp_path)
    try:
        checked = tether_exe("deployments", "check", "v1", "--json", url=world_url)
        assert checked.code == 0, checked
        [found] = json.loads(checked.out)
        assert (found["verdict"], found["fork_point"]) == ("incompatible", None)
        assert "does not define workflow//orders//gift_card" in found["reason"]
        moved = tether_exe(
            "deployments", "upgrade", "v1", "-y", url=world_url, env={"COLUMNS": "200"}
        )
        assert moved.code == 0, moved
        assert moved.err.strip().splitlines()[-1] == "1 left"  # none moved
        assert "does not define" in moved.out
    finally:
        v2.stop()
    # Nothing moved: the run sleeps on v1 as it was, and no run was made on v2.
    assert run.status() == "running" and len(run.events()) == logged
    assert tether.list_runs(deployment_id="v2", limit=None) == []


def test_a_step_run_again_after_the_move_writes_to_the_replacements_stream(
    world_url: str, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    v1 = worker_of("v1", world_url, tmp_path)
    run = tether.start("workflow//orders//replenish", [str(marks), "r-1"], deployment_id="v1")
    # v1's restock wrote its chunk, failed, and waits an hour to try again.
    wait_for(lambda: any(e.type == "step_retrying" for e in run.events()), 20, "a retry")
    v1.stop()
    reader = run.readable
    seen: list[object] = []
    for chunk in reader:  # what a reader had when the run moved
        seen.append(chunk)
        if len(seen) == 2:
            break
    assert seen == ["noted r-1 on v1", "restocking r-1 on v1"]
    v2 = worker_of("v2", world_url, tmp_path)
    try:
        moved = tether_exe("deployments", "upgrade", "v1", "-y", url=world_url)
        assert moved.code == 0, moved
        assert run.upgraded_to is not None
        new = tether.get_run(run.upgraded_to)
        assert new.fork_point == 2 and new.result(timeout=30) == "restocked r-1"
    finally:
        v2.stop()
    # The replacement's stream: the kept step's chunk, then the step run again on v2;
    # not v1's failed attempt, and closed by the replacement.
    assert list(new.readable) == ["noted r-1 on v1", "restocking r-1 on v2"]
    # A reader of the original that had read past the kept chunks reads the step's
    # chunks again, as after a retry, and ends when the replacement closes the stream.
    follower = tether.get_readable(run.run_id, start_index=2)
    assert list(follower) == ["restocking r-1 on v2"]
    assert list(run.readable) == ["noted r-1 on v1", "restocking r-1 on v1", "restocking r-1 on v2"]
    assert sorted(label for label, _ in read_marks(marks)) == ["restock:r-1:v1", "restock:r-1:v2"]
