"""Real worker processes on PostgreSQL: kill -9 under load, and a server restart under load.

This module is also the app its worker processes serve (``tether worker
tests.integration.test_postgres_faults``): its workflow appends to a marks
file so that the tests can count how often each step really ran.
"""

from __future__ import annotations

import collections
import contextlib
import os
import random
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

import tether
from tests.apps.basic import mark
from tests.conformance.backends import admin, close_worlds, postgres_world_url
from tests.integration.processes import WorkerProcess, read_marks, wait_for
from tether import config, step, workflow
from tether.worlds.records import RunFilter

APP = "tests.integration.test_postgres_faults"


@step
def checkpoint(path: str, key: str, index: int, seconds: float) -> int:
    time.sleep(seconds)
    mark(path, f"{key}:{index}")
    return index


@workflow
async def three_with_sleep(path: str, key: str, seconds: float) -> int:
    await checkpoint(path, key, 0, seconds)
    await tether.sleep(0.3)
    await checkpoint(path, key, 1, seconds)
    await checkpoint(path, key, 2, seconds)
    return 3


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL schema, configured as this process's World."""
    yield from postgres_world_url()


class Fleet:
    """Worker processes of this module's app, each with its deployment id."""

    def __init__(self, url: str, tmp_path: Path, lease_seconds: float = 2.0) -> None:
        self.url, self.tmp_path, self.lease_seconds = url, tmp_path, lease_seconds
        self.procs: list[tuple[str, WorkerProcess]] = []
        self.killed: set[int] = set()

    def start(self, deployment: str, *, wait_ready: bool = True) -> WorkerProcess:
        log = self.tmp_path / f"{deployment}-{len(self.procs)}.log"
        proc = WorkerProcess(
            self.url,
            [APP],
            log,
            env={"TETHER_DEPLOYMENT_ID": deployment},
            lease_seconds=self.lease_seconds,
            wait_ready=wait_ready,
        )
        self.procs.append((deployment, proc))
        return proc

    def live(self) -> list[tuple[str, WorkerProcess]]:
        return [(d, p) for d, p in self.procs if p.proc.poll() is None]

    def kill_one(self, rng: random.Random) -> str:
        deployment, proc = rng.choice(self.live())
        proc.kill()
        self.killed.add(proc.pid)
        return deployment

    def stop_all(self) -> None:
        for _, proc in self.live():
            proc.stop()


@pytest.fixture
def fleet(pg_url: str, tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(pg_url, tmp_path)
    yield f
    f.stop_all()


def start_runs(n: int, marks: Path, per_second: float, seconds: float) -> list[tether.Run]:
    """Start ``n`` runs over both deployments at a steady pace, from this thread."""
    runs: list[tether.Run] = []
    began = time.monotonic()
    for i in range(n):
        deployment = "dep-a" if i % 2 == 0 else "dep-b"
        runs.append(
            tether.start(three_with_sleep, [str(marks), f"r{i}", seconds], deployment_id=deployment)
        )
        time.sleep(max(0.0, began + (i + 1) / per_second - time.monotonic()))
    return runs


def in_flight() -> bool:
    """Whether some run has not finished yet."""
    world = config.resolve_world()
    return any(world.list_runs(RunFilter(status=s, limit=1)) for s in ("pending", "running"))


def in_every_state(runs: list[tether.Run]) -> bool:
    """Whether some of ``runs`` are completed, some asleep and some running a step."""
    world = config.resolve_world()
    if not world.list_runs(RunFilter(status="completed", limit=1)):
        return False
    running = world.list_runs(RunFilter(status="running", limit=100))
    waits = any(w.status == "waiting" for r in running for w in world.list_waits(r.run_id))
    return waits and any(s.status == "running" for r in running for s in world.list_steps(r.run_id))


def assert_each_completion_recorded_once(
    url: str, runs: list[tether.Run], server: str | None = None
) -> None:
    schema = url.rsplit("schema=", 1)[1]
    with psycopg.connect(server, autocommit=True) if server else admin() as conn:
        rows = conn.execute(
            f"SELECT run_id, correlation_id, COUNT(*) FROM {schema}.events"
            " WHERE type = 'step_completed' GROUP BY run_id, correlation_id"
        ).fetchall()
        gaps = conn.execute(
            f"SELECT run_id FROM {schema}.events GROUP BY run_id"
            " HAVING MAX(seq) <> COUNT(*) OR MIN(seq) <> 1"
        ).fetchall()
    duplicated = [row for row in rows if row[2] != 1]
    assert duplicated == [], f"step completions recorded twice: {duplicated[:5]}"
    assert len(rows) == 3 * len(runs)
    assert gaps == [], f"event logs with gaps: {gaps[:5]}"


def assert_marks(marks: Path, n: int, killed: set[int]) -> None:
    """Every step ran; a step ran again only if a killed worker ran it before."""
    seen: dict[str, list[int]] = collections.defaultdict(list)
    for label, pid in read_marks(marks):
        seen[label].append(pid)
    assert set(seen) == {f"r{i}:{j}" for i in range(n) for j in range(3)}
    for label, pids in seen.items():
        assert all(pid in killed for pid in pids[:-1]), f"{label} ran again: {pids}"


def test_slow_kill_9_random_workers_under_load(fleet: Fleet, tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    for deployment in ("dep-a", "dep-a", "dep-b", "dep-b"):
        fleet.start(deployment)
    n = 500
    started: list[tether.Run] = []
    starter = threading.Thread(
        target=lambda: started.extend(start_runs(n, marks, per_second=60, seconds=0.01))
    )
    starter.start()
    rng = random.Random(5)
    kills = under_load = 0
    # One kill a second, until eight of them hit workers with runs in flight. The
    # replacement is not waited for (its start-up is slow on a busy machine): it may
    # be the next one killed, before or after it is ready.
    while under_load < 8 and kills < 20:
        tick = time.monotonic()
        fleet.start(fleet.kill_one(rng), wait_ready=False)  # of the same deployment
        kills += 1
        under_load += starter.is_alive() or in_flight()
        time.sleep(max(0.0, tick + 1.0 - time.monotonic()))
    starter.join(timeout=60)
    assert len(started) == n
    for run in started:
        assert run.result(timeout=60) == 3
    assert under_load >= 8, f"only {under_load} of {kills} kills hit runs in flight"
    assert_each_completion_recorded_once(fleet.url, started)
    assert_marks(marks, n, fleet.killed)
    served = {pid for _, pid in read_marks(marks)}
    assert len(served) >= 4, "the work should have been spread over the workers"


class PrivateServer:
    """A throwaway PostgreSQL server of its own (initdb, own port), safe to stop and start.

    Restarting the shared test server would break whatever else runs against it.
    """

    def __init__(self) -> None:
        versions = (
            sorted(os.listdir("/usr/lib/postgresql"))
            if os.path.isdir("/usr/lib/postgresql")
            else []
        )
        self.bin = Path(f"/usr/lib/postgresql/{versions[-1]}/bin") if versions else None
        self.data = Path(tempfile.mkdtemp(prefix="tether-pg-"))
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def available(self) -> str | None:
        """Why this machine cannot run one, or ``None``."""
        if self.bin is None or not (self.bin / "initdb").exists():
            return "no PostgreSQL server binaries under /usr/lib/postgresql"
        if os.geteuid() == 0 and shutil.which("runuser") is None:
            return "running as root without runuser"
        return None

    def _run(self, *cmd: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*prefix, *cmd], check=True, capture_output=True, timeout=60)

    def init(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.data, "postgres", "postgres")
        self._run(str(self.bin / "initdb"), "-D", str(self.data / "db"), "-A", "trust",
                  "-U", "postgres", "--no-sync")  # fmt: skip
        self.start()

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.data}"
        log = str(self.data / "server.log")
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data / "db"), "-o", options,
                  "-l", log, "-w", "start")  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data / "db"), "-m", mode, "-w",
                  "stop")  # fmt: skip

    def remove(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self.stop("immediate")
        shutil.rmtree(self.data, ignore_errors=True)


@pytest.fixture
def private_server() -> Iterator[PrivateServer]:
    server = PrivateServer()
    reason = server.available()
    if reason is not None:
        shutil.rmtree(server.data, ignore_errors=True)
        pytest.skip(f"cannot run a private PostgreSQL server: {reason}")
    try:
        server.init()
        yield server
    finally:
        server.remove()


def test_slow_server_restart_under_load(private_server: PrivateServer, tmp_path: Path) -> None:
    url = f"{private_server.url}?schema=restart"
    config.configure(url)
    # No lease runs out while the server is away: no step runs twice.
    fleet = Fleet(url, tmp_path, lease_seconds=15.0)
    try:
        marks = tmp_path / "marks"
        fleet.start("dep-a")
        fleet.start("dep-b")
        n = 240
        started: list[tether.Run] = []
        starter = threading.Thread(
            target=lambda: started.extend(start_runs(n, marks, per_second=60, seconds=0.01))
        )
        starter.start()
        # Stop the server once runs are in every state: done, sleeping, running steps.
        wait_for(lambda: in_every_state(started), 30, "runs done, sleeping and running")
        private_server.stop()
        time.sleep(1.0)
        private_server.start()
        starter.join(timeout=60)
        assert len(started) == n
        for run in started:
            assert run.result(timeout=60) == 3
        assert all(proc.proc.poll() is None for _, proc in fleet.procs), "a worker died"
        assert_each_completion_recorded_once(url, started, private_server.url)
        assert_marks(marks, n, killed=set())
    finally:
        fleet.stop_all()
        config.configure(None)
        close_worlds(url)
