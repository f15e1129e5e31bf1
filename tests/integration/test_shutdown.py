"""Shutdown says what it does: real ``tether worker`` processes sent real signals.

The first SIGINT/SIGTERM drains: the steps running finish and are recorded,
a step leased but not started is handed back (any worker takes it at once),
and the worker says so, naming steps and runs. A second signal exits at once
and names the steps it abandons. Tests synchronise on the steps' marks, the
workers' log lines and the runs' events, never on time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import tether
from tests.apps import shutdown
from tests.integration.processes import (
    REPO,
    WorkerProcess,
    read_marks,
    wait_for,
    worker_process,
)
from tether.worlds.records import EventRecord

APP = ["tests.apps.shutdown"]
#: Far longer than any test takes: a step another worker runs before it ran out was
#: handed back, not taken over after its lease expired.
LONG_LEASE = 60.0
#: The lease of a worker whose abandoned step another worker must take over.
SHORT_LEASE = 1.0
#: With one thread for def steps, the second of two steps leased together waits for it.
ONE_STEP_THREAD = ("--step-threads", "1")


def step_events(run: Any, step_id: str) -> list[EventRecord]:
    """The events of one step of the run."""
    return [e for e in run.events() if e.type.startswith("step_") and e.correlation_id == step_id]


def kinds(events: list[EventRecord]) -> list[tuple[str, dict[str, Any] | None]]:
    return [(e.type, e.attrs) for e in events]


def began(marks: Path, label: str, worker: WorkerProcess) -> bool:
    return (label, worker.pid) in read_marks(marks)


@pytest.mark.both_worlds
def test_a_step_leased_but_not_started_is_handed_back_at_once(
    world_url: str, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    first = WorkerProcess(
        world_url, APP, tmp_path / "w1.log", lease_seconds=LONG_LEASE, args=ONE_STEP_THREAD
    )
    try:
        run = tether.start(shutdown.held_beside_queued, [str(marks)])
        wait_for(lambda: began(marks, "held-start", first), 20, "the held step to start")
        # Both steps are leased to the first worker: the second has nothing to take...
        with worker_process(world_url, APP, tmp_path / "w2.log") as second:
            first.signal(signal.SIGTERM)
            # ...until the first hands the queued one back, long before its lease ran out.
            wait_for(lambda: began(marks, "queued", second), 20, "another worker to run it")
            assert first.proc.poll() is None, "the first worker still drains the held step"
            shutdown.release(str(marks))
            assert first.wait(timeout=20) == 0
            assert run.result(timeout=20) == ["held", "queued"]
    finally:
        first.stop()
    held, queued = run.steps()
    log = first.output()
    assert (
        f"draining (SIGTERM): waiting up to 30 s for 1 running step: {held.step_name} "
        f"(step 0 of run {run.run_id}, attempt 1) to finish; starting nothing new" in log
    )
    assert (
        f"handed back {queued.step_name} (step 1 of run {run.run_id}, attempt 1): "
        "leased here but not started; due now" in log
    )
    # Attempt 1's step_started is ended by the hand-back; attempt 1 is then the one that
    # ran, on the other worker: a hand-back spends none of the step's retries.
    events = step_events(run, "1")
    handed_back = {"attempt": 1, "retry_at": events[2].created_at, "handed_back": True}
    assert kinds(events) == [
        ("step_created", None),
        ("step_started", {"attempt": 1}),
        ("step_retrying", handed_back),
        ("step_started", {"attempt": 1}),
        ("step_completed", {"attempt": 1}),
    ]
    assert read_marks(marks).count(("queued", second.pid)) == 1
    assert [label for label, _ in read_marks(marks)].count("queued") == 1
    assert ("held", first.pid) in read_marks(marks)  # drained: the running step finished


@pytest.mark.both_worlds
def test_a_step_that_ends_while_draining_leaves_its_run_to_other_workers(
    world_url: str, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    first = WorkerProcess(world_url, APP, tmp_path / "w1.log", lease_seconds=LONG_LEASE)
    try:
        run = tether.start(shutdown.held_then_note, [str(marks)])
        wait_for(lambda: began(marks, "held-start", first), 20, "the held step to start")
        first.signal(signal.SIGTERM)
        wait_for(lambda: "draining (SIGTERM)" in first.output(), 20, "the worker to drain")
        shutdown.release(str(marks))
        assert first.wait(timeout=20) == 0
    finally:
        first.stop()
    # The held step's result is recorded; no step of the run was leased to the stopping
    # worker after it, so no step_started stands in the log for code that never ran.
    assert [e.type for e in run.events()] == [
        "run_created",
        "run_started",
        "step_created",
        "step_started",
        "step_completed",
    ]
    (held,) = run.steps()
    assert (
        f"{held.step_name} (step 0 of run {run.run_id}, attempt 1) completed while draining: "
        "recorded; its run goes on on the next worker of " in first.output()
    )
    with worker_process(world_url, APP, tmp_path / "w2.log", lease_seconds=LONG_LEASE):
        assert run.result(timeout=20) == ["held", "next"]
    assert kinds(step_events(run, "1")) == [
        ("step_created", None),
        ("step_started", {"attempt": 1}),
        ("step_completed", {"attempt": 1}),
    ]


@pytest.mark.both_worlds
def test_a_second_signal_exits_at_once_naming_what_it_abandons(
    world_url: str, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    first = WorkerProcess(
        world_url, APP, tmp_path / "w1.log", lease_seconds=SHORT_LEASE, args=ONE_STEP_THREAD
    )
    try:
        run = tether.start(shutdown.held_beside_queued, [str(marks)])
        wait_for(lambda: began(marks, "held-start", first), 20, "the held step to start")
        first.signal(signal.SIGTERM)
        wait_for(lambda: "handed back" in first.output(), 20, "the queued step to be handed back")
        first.signal(signal.SIGINT)
        assert first.wait(timeout=20) == 130  # the held step never ended: it did not wait
    finally:
        first.stop()
    held = run.steps()[0]
    assert (
        f"SIGINT while draining: exiting at once with code 130, abandoning 1 running step: "
        f"{held.step_name} (step 0 of run {run.run_id}, attempt 1); they run again on another "
        "worker when their leases expire, within 1 s (--lease-seconds)" in first.output()
    )
    # Abandoned, like a crash: its step_started stands until another worker takes it over.
    assert kinds(step_events(run, "0"))[-1] == ("step_started", {"attempt": 1})
    shutdown.release(str(marks))
    with worker_process(world_url, APP, tmp_path / "w2.log") as second:
        assert run.result(timeout=30) == ["held", "queued"]
    assert run.steps()[0].attempt == 2
    assert [m for m in read_marks(marks) if m[0].startswith("held")] == [
        ("held-start", first.pid),
        ("held-start", second.pid),
        ("held", second.pid),
    ]


def test_sigterm_twice_exits_with_143(world_url: str, tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    first = WorkerProcess(world_url, APP, tmp_path / "w1.log", lease_seconds=LONG_LEASE)
    try:
        run = tether.start(shutdown.held_then_note, [str(marks)])
        wait_for(lambda: began(marks, "held-start", first), 20, "the held step to start")
        first.signal(signal.SIGTERM)
        wait_for(lambda: "draining (SIGTERM)" in first.output(), 20, "the worker to drain")
        first.signal(signal.SIGTERM)
        assert first.wait(timeout=20) == 143
    finally:
        first.stop()
    assert (
        f"SIGTERM while draining: exiting at once with code 143, abandoning 1 running step: "
        f"step//tests.apps.shutdown//held (step 0 of run {run.run_id}, attempt 1); "
        "they run again on another worker when their leases expire, within 60 s"
    ) in first.output()


def test_a_worker_with_nothing_running_says_so_and_exits_0(world_url: str, tmp_path: Path) -> None:
    first = WorkerProcess(world_url, APP, tmp_path / "w1.log")
    first.signal(signal.SIGINT)
    assert first.wait(timeout=20) == 0
    first.stop()
    log = first.output()
    assert "draining (SIGINT): nothing is running; starting nothing new" in log
    assert log.rstrip().endswith("tether worker stopped")


def test_a_drain_that_outlasts_its_timeout_exits_1_naming_what_it_abandons(
    world_url: str, tmp_path: Path
) -> None:
    # The public Worker.run in a process of its own: the CLI has no drain timeout option.
    marks = tmp_path / "marks"
    serve = (
        "import logging, tether, tests.apps.shutdown\n"
        "logging.basicConfig(level=logging.INFO)\n"
        f"worker = tether.Worker(world={world_url!r}, lease_seconds=60, drain_timeout=0.5)\n"
        "worker.run(on_ready=lambda: print(' ready: deployment ', flush=True))\n"
    )
    log_path = tmp_path / "w.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-c", serve],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'src'}"},
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: " ready: deployment " in log_path.read_text(), 20, "the worker")
        run = tether.start(shutdown.held_then_note, [str(marks)])
        wait_for(lambda: ("held-start", proc.pid) in read_marks(marks), 20, "the held step")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 1  # the held step never ends
    finally:
        proc.kill()
        proc.wait()
    assert (
        "the drain timeout (0.5 s) ran out: exiting at once with code 1, abandoning 1 running "
        f"step: step//tests.apps.shutdown//held (step 0 of run {run.run_id}, attempt 1)"
    ) in log_path.read_text()
