"""Real worker processes on one SQLite file: kill -9, restarts, two workers at once."""

from __future__ import annotations

import collections
from pathlib import Path

import pytest

import tether
from tests.apps import basic
from tests.integration.processes import (
    WorkerProcess,
    read_marks,
    wait_for,
    worker_process,
)

pytestmark = pytest.mark.both_worlds


#: Leases of a worker the test kills: the next worker takes its work over once they run
#: out (a heartbeat renews them every quarter of it while it lives).
KILLED_LEASE = 1.0


def test_sleep_survives_kill_9_and_a_restart(world_url: str, tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    first = WorkerProcess(
        world_url, ["tests.apps.basic"], tmp_path / "w1.log", lease_seconds=KILLED_LEASE
    )
    run = tether.start(basic.sleepy, [str(marks), 2.0])
    wait_for(lambda: any(e.type == "wait_created" for e in run.events()), 10, "the run to sleep")
    first.kill()
    with worker_process(world_url, ["tests.apps.basic"], tmp_path / "w2.log") as second:
        assert run.result(timeout=20) == ["first", "second"]
    labels = [label for label, _ in read_marks(marks)]
    assert labels.count("first") == 1, "a recorded step ran again after the crash"
    assert labels.count("second") == 1
    pids = dict(read_marks(marks))
    assert pids["first"] == first.pid and pids["second"] == second.pid


def test_step_interrupted_by_kill_9_runs_again(world_url: str, tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    first = WorkerProcess(
        world_url, ["tests.apps.basic"], tmp_path / "w1.log", lease_seconds=KILLED_LEASE
    )
    run = tether.start(basic.interrupted, [str(marks), 1.0])
    wait_for(lambda: read_marks(marks), 10, "the slow step to start")
    first.kill()
    with worker_process(world_url, ["tests.apps.basic"], tmp_path / "w2.log"):
        assert run.result(timeout=30) == "slow"
    labels = [label for label, _ in read_marks(marks)]
    assert labels == ["slow-start", "slow-start", "slow"]  # at-least-once: it ran again
    (only,) = run.steps()
    assert only.attempt == 2 and only.status == "completed"


def test_two_workers_on_one_file_run_each_step_once(world_url: str, tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    # Each worker runs at most 4 tasks at once and a step takes 20 ms, so one
    # worker cannot take all 60 runs before the other claims some.
    with (
        worker_process(world_url, ["tests.apps.basic"], tmp_path / "a.log", concurrency=4) as a,
        worker_process(world_url, ["tests.apps.basic"], tmp_path / "b.log", concurrency=4) as b,
    ):
        runs = [tether.start(basic.three_marks, [str(marks), f"r{i}", 0.02]) for i in range(60)]
        assert [r.result(timeout=60) for r in runs] == [3] * 60
    counts = collections.Counter(label for label, _ in read_marks(marks))
    expected = {f"r{i}:{j}" for i in range(60) for j in range(3)}
    assert set(counts) == expected
    assert all(n == 1 for n in counts.values()), [k for k, n in counts.items() if n > 1]
    pids = {pid for _, pid in read_marks(marks)}
    assert pids == {a.pid, b.pid}, "both workers should have taken some of the runs"
    for run in runs:
        events = run.events()
        assert [e.seq for e in events] == list(range(1, len(events) + 1))


def test_worker_drains_on_sigterm(world_url: str, tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    proc = WorkerProcess(world_url, ["tests.apps.basic"], tmp_path / "w.log")
    run = tether.start(basic.interrupted, [str(marks), 0.5])
    wait_for(lambda: read_marks(marks), 10, "the slow step to start")
    assert proc.stop() == 0
    assert [label for label, _ in read_marks(marks)] == ["slow-start", "slow"]
    assert run.steps()[0].status == "completed"


def test_draining_worker_hands_the_rest_of_a_long_run_to_another(
    world_url: str, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    first = WorkerProcess(world_url, ["tests.apps.basic"], tmp_path / "w1.log")
    run = tether.start(basic.three_marks, [str(marks), "long", 0.4])
    wait_for(lambda: read_marks(marks), 10, "the first step to finish")
    assert first.stop() == 0  # drains the step in flight, starts no new one
    done_by_first = {label for label, pid in read_marks(marks) if pid == first.pid}
    assert done_by_first and "long:2" not in done_by_first
    with worker_process(world_url, ["tests.apps.basic"], tmp_path / "w2.log"):
        assert run.result(timeout=20) == 3
    counts = collections.Counter(label for label, _ in read_marks(marks))
    assert counts == {"long:0": 1, "long:1": 1, "long:2": 1}
