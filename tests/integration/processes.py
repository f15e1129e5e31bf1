"""Start and stop real ``tether worker`` processes for the integration tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


class WorkerProcess:
    """A ``tether worker`` subprocess whose output goes to a log file.

    Every one still running when its test ends is stopped then (``stop_leftovers``,
    from tests/conftest.py): a test that fails before its own ``stop`` leaks none.
    """

    running: set[WorkerProcess] = set()

    def __init__(
        self,
        url: str,
        modules: list[str],
        log_path: Path,
        *,
        pythonpath: Path | None = None,
        env: dict[str, str] | None = None,
        lease_seconds: float = 2.0,
        concurrency: int = 512,
        wait_ready: bool = True,
        args: tuple[str, ...] = (),
    ) -> None:
        self.log_path = log_path
        full_env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                [str(p) for p in (pythonpath, REPO, REPO / "src") if p is not None]
            ),
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tether",
                "worker",
                *modules,
                "--backend",
                url,
                "--lease-seconds",
                str(lease_seconds),
                "--concurrency",
                str(concurrency),
                *args,
            ],
            cwd=REPO,
            env=full_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        WorkerProcess.running.add(self)
        if wait_ready:
            self._wait_ready()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the worker, which goes on (or not) by itself."""
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        """Wait for the worker to exit; returns its exit code."""
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        """``kill -9``: no cleanup, no lease released."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self._log.close()
        WorkerProcess.running.discard(self)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, which drains in-flight work; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        WorkerProcess.running.discard(self)
        return self.proc.returncode

    def _wait_ready(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if " ready: deployment " in self.output():
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited early:\n{self.output()}")
            time.sleep(0.02)
        raise RuntimeError(f"worker not ready after {timeout}s:\n{self.output()}")


def stop_leftovers(keep: set[WorkerProcess]) -> None:
    """Stop every worker process still running but those of ``keep`` (a wider fixture's)."""
    for leftover in list(WorkerProcess.running - keep):
        leftover.stop(timeout=10)


@contextmanager
def worker_process(
    url: str, modules: list[str], log_path: Path, **kwargs: object
) -> Iterator[WorkerProcess]:
    """A worker process for the duration of a ``with`` block."""
    proc = WorkerProcess(url, modules, log_path, **kwargs)  # type: ignore[arg-type]
    try:
        yield proc
    finally:
        proc.stop()


def read_marks(path: Path) -> list[tuple[str, int]]:
    """The lines steps appended: (label, pid)."""
    if not path.exists():
        return []
    marks = []
    for line in path.read_text().splitlines():
        label, pid = line.rsplit(" ", 1)
        marks.append((label, int(pid)))
    return marks


def wait_for(predicate: object, timeout: float, what: str) -> None:
    """Poll ``predicate()`` until true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
