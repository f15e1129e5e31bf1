"""``make demo``: the versioning story, with real worker processes on the embedded World.

A v1 worker serves orders; v2 (charges shipping, holds orders less) is
deployed beside it. The order that was asleep finishes on v1, new orders
go to v2, a buggy v1 order is cancelled and forked onto v2 keeping its
reservation and its sleep, and a daily digest continues itself from v1
onto v2. This process is a pure client: it
imports none of the store's code and starts runs by name.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import tether
from tether import serde
from tether.worlds.base import World
from tether.worlds.records import RunFilter

ROOT = Path(__file__).resolve().parent.parent
DB = ROOT / ".tether" / "demo.db"
SRC = ROOT / "src"
ORDER = "workflow//store//fulfill_order"
DIGEST = "workflow//store//daily_digest"


def main() -> None:
    """Tell the story, one plain sentence per step, with the runs' steps as they happen."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{DB}{suffix}").unlink(missing_ok=True)
    url = f"sqlite:///{DB}"
    tether.configure(url)
    world = tether.config.resolve_world()
    follower = Follower(world)
    workers: list[subprocess.Popen[bytes]] = []
    began = time.monotonic()
    try:
        say("1. Deploy v1: start a worker for deployment store-v1.")
        workers.append(start_worker(url, "v1"))
        follower.start()
        o1 = tether.start(ORDER, ["o-1001", 4599], deployment_id="latest")
        follower.name(o1, "order o-1001")
        say(
            f"2. Order o-1001 starts on latest = {o1.deployment_id}; it sleeps 4 s before charging."
        )
        digest = tether.start(
            DIGEST,
            [{"user": "ada", "round": 1, "rounds": 3, "every": "2s"}],
            deployment_id="latest",
        )
        follower.name(digest, "digest #1")
        say("   A daily digest starts on store-v1; each run continues itself on latest.")
        o2 = tether.start(ORDER, ["o-1002", 2500], deployment_id="latest")
        follower.name(o2, "order o-1002")
        say("   Order o-1002 starts on store-v1 too, which charges no shipping (the bug).")
        time.sleep(1.0)
        say("3. Deploy v2 (charges shipping, holds 1 s): a second worker, store-v2.")
        workers.append(start_worker(url, "v2"))
        o3 = tether.start(ORDER, ["o-1003", 1200], deployment_id="latest")
        follower.name(o3, "order o-1003")
        say(f"4. A new order, o-1003, starts on latest = {o3.deployment_id}.")
        say("5. Move the buggy order onto v2 without reserving its stock again: cancel o-1002,")
        say("   then fork it onto store-v2 from where it is (tether rerun --from-step auto).")
        o2.cancel()
        fixed = tether.get_run(fork_onto_v2(url, o2.run_id))
        follower.name(fixed, "o-1002 fork")
        say(
            f"   o-1002 is {o2.status()}; its fork runs on {fixed.deployment_id}, keeping its"
            f" first {fixed.fork_point} requests (the reservation and the sleep's deadline)."
        )
        results = {
            name: run.result(timeout=30) for name, run in [("o-1003", o3), ("o-1002 fork", fixed)]
        }
        results["o-1001"] = o1.result(timeout=30)
        chain = follow_chain(digest)
        time.sleep(0.2)
        follower.stop()
        say("6. What happened:")
        for name, result in results.items():
            say(f"   {name:13} finished on {result['code']}: charged {result['charged']} cents")
        say("   o-1001 slept through the deploy and still finished on the code it started with.")
        say(
            "   o-1002 was reserved once, on v1: its fork kept that step's result and the"
            " sleep's deadline, and only charged and shipped on v2."
        )
        say(
            "   digest chain: "
            + " -> ".join(f"{run.run_id[:12]} on {run.deployment_id}" for run in chain)
        )
        say(f"Done in {time.monotonic() - began:.1f} s. Look around:")
        command = f"{tether_command()} inspect runs --backend {shlex.quote(url)}"
        say(f"   {command}")
        say(f"   {command} {chain[-1].run_id[:12]}   (the start of a run id will do)")
        web = f"{tether_command()} web --backend {shlex.quote(url)} --open"
        say(f"   {web}   (the web UI on http://127.0.0.1:8484/; Ctrl-C stops it)")
    finally:
        follower.stop()
        for proc in workers:
            proc.terminate()
        for proc in workers:
            proc.wait(timeout=30)


def start_worker(url: str, version: str) -> subprocess.Popen[bytes]:
    """A ``tether worker store`` process running that version's code."""
    code = ROOT / "examples" / "versions" / version
    log = open(DB.parent / f"demo-worker-{version}.log", "wb")  # noqa: SIM115 - the process owns it
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(code), str(ROOT / "src")]),
        "TETHER_DEPLOYMENT_ID": f"store-{version}",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "tether", "worker", "store", "--backend", url],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 20
    while b" ready: deployment " not in Path(log.name).read_bytes():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"worker {version} did not start; see {log.name}")
        time.sleep(0.02)
    return proc


def fork_onto_v2(url: str, run_id: str) -> str:
    """``tether rerun RUN --deployment store-v2 --from-step auto --code store``, as v2's code."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(ROOT / "examples" / "versions" / "v2"), str(ROOT / "src")]
        ),
    }
    env.pop("TETHER_DEPLOYMENT_ID", None)
    args = ["rerun", run_id, "--deployment", "store-v2", "--from-step", "auto", "--code", "store"]
    done = subprocess.run(
        [sys.executable, "-m", "tether", *args, "--backend", url],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.split()[0]


def tether_command() -> str:
    """How to run ``tether`` from this shell.

    ``make demo`` installs it in .venv/bin, which a fresh shell does not have
    on its PATH: name the script itself (relative when it is below here).
    """
    script = Path(sys.executable).with_name("tether")
    if not script.exists():
        return f"{shlex.quote(sys.executable)} -m tether"
    with contextlib.suppress(ValueError):
        script = script.relative_to(Path.cwd())
    return shlex.quote(str(script))


def follow_chain(first: tether.Run) -> list[tether.Run]:
    """Wait for each run of a self-continuing chain; return them in order."""
    chain, run = [first], first
    while True:
        result = run.result(timeout=30)
        if "continued_as" not in result:
            return chain
        run = tether.get_run(result["continued_as"])
        chain.append(run)


def say(line: str) -> None:
    print(line, flush=True)


class Follower:
    """Prints every run's steps, sleeps and endings as they happen, on a thread."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.labels: dict[str, str] = {}
        self.seen: dict[str, int] = {}
        self.steps: dict[tuple[str, str], str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def name(self, run: tether.Run, label: str) -> None:
        self.labels[run.run_id] = label

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            for run in self.world.list_runs(RunFilter(limit=50, descending=False)):
                parent = self.labels.get(run.parent_run_id or "", "")
                if run.run_id not in self.labels and run.rerun_of in self.labels:
                    self.labels[run.run_id] = f"{self.labels[run.rerun_of].split()[-1]} fork"
                if run.run_id not in self.labels and parent.startswith("digest #"):
                    self.labels[run.run_id] = f"digest #{int(parent.removeprefix('digest #')) + 1}"
                for event in self.world.list_events(run.run_id, self.seen.get(run.run_id, 0)):
                    self.seen[run.run_id] = event.seq
                    line = self._describe(event.type, event.correlation_id, event, run.run_id)
                    if line and event.created_at < run.created_at:
                        # A fork's history: recorded by its original, not run again.
                        kept = self.labels.get(run.rerun_of or "", "its original")
                        line = f"(kept from {kept}) {line}"
                    if line:
                        label = self.labels.get(run.run_id, run.run_id[:12])
                        say(f"      [{label:13} @ {run.deployment_id}] {line}")
            time.sleep(0.02)

    def _describe(self, kind: str, cid: str | None, event: Any, run_id: str) -> str | None:
        if kind == "step_created":
            self.steps[(run_id, cid or "")] = (event.name or "").rsplit("//", 1)[-1]
            return None
        step = self.steps.get((run_id, cid or ""), "")
        if kind == "step_completed":
            return f"{step} -> {serde.loads(event.payload)!r}"
        if kind == "wait_created":
            return f"sleeping {event.attrs['resume_at'] - event.created_at:.0f} s"
        if kind == "wait_completed":
            return "woke up"
        if kind in ("run_completed", "run_cancelled", "run_failed"):
            return kind.removeprefix("run_")
        return None


if __name__ == "__main__":
    main()
