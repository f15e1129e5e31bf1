"""How long ``deployments.check`` and ``upgrade`` take per in-flight run (issue 14's benchmark).

RUNS runs of a STEPS-step workflow are driven to a long sleep by an
in-process worker, then checked against this process's own code (``"local"``):
each check reads the run's log and replays it, running no step. Then a live
worker of a second deployment of the same code checks them again, asked
through the World (``replay="worker"``: what ``tether deployments check``
does on a machine without the code), and the upgrade moves them onto it.
tether only: no peer has a check to compare with. Writes
``CHECK-RESULTS-<backend>.md`` and the part of ``RESULTS.md`` after its mark.

    .venv/bin/python check.py [--runs 1000] [--steps 20] [--backend sqlite|postgres]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

import tether
from common import with_check_section
from tether import step, workflow

HERE = Path(__file__).resolve().parent
POSTGRES = os.environ.get("TETHER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


@step
def work(i: int) -> int:
    return i


@workflow
async def long_order(steps: int) -> int:
    total = 0
    for i in range(steps):
        total += await work(i)
    await tether.sleep("30d")
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    args = parser.parse_args()
    os.environ["TETHER_DEPLOYMENT_ID"] = "check-bench"
    with tempfile.TemporaryDirectory(prefix="tether-check-") as tmp:
        schema = f"check_bench_{uuid.uuid4().hex[:8]}"
        url = (
            f"sqlite:///{tmp}/check.db"
            if args.backend == "sqlite"
            else f"{POSTGRES}?schema={schema}"
        )
        tether.configure(url)
        try:
            timings = measure(args.runs, args.steps)
        finally:
            tether.close()
            if args.backend == "postgres":
                with psycopg.connect(POSTGRES, autocommit=True) as conn:
                    conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    report(args, *timings)


def measure(runs: int, steps: int) -> tuple[float, float, list[float], float, float]:
    """Seconds to drive the runs to their sleep, to check them all here, per-run check times,
    seconds to check them all on a live worker, and to upgrade them all onto its deployment."""
    started = time.perf_counter()
    with tether.Worker():
        handles = [tether.start(long_order, [steps]) for _ in range(runs)]
        world = tether.config.resolve_world()
        with world.watch() as changed:
            for run in handles:
                while not world.list_waits(run.run_id):
                    changed(1.0)
    driven = time.perf_counter() - started
    t0 = time.perf_counter()
    results = tether.deployments.check("check-bench", "local")
    total = time.perf_counter() - t0
    assert len(results) == runs and all(r.verdict == "replays" for r in results), results[:3]
    assert all(r.fork_point == steps + 1 for r in results)  # its steps and its sleep
    # Per run: check a single run's log again, one by one (a sample of 100).
    per_run = []
    world = tether.config.resolve_world()
    from tether.runtime.check import check_run

    for run in handles[:100]:
        record = world.get_run(run.run_id)
        assert record is not None
        t = time.perf_counter()
        check_run(record, world.list_events(run.run_id), long_order)
        per_run.append(time.perf_counter() - t)
    # The same code under another id, served by a live worker that answers checks (and
    # then runs the moved runs, as a real one would, on the same two cores).
    with tether.Worker(deployment_id="check-bench-2"):
        t0 = time.perf_counter()
        remote = tether.deployments.check("check-bench", "check-bench-2", replay="worker")
        by_worker = time.perf_counter() - t0
        assert [r.verdict for r in remote] == ["replays"] * runs, remote[:3]
        t0 = time.perf_counter()
        moved = tether.deployments.upgrade("check-bench", "check-bench-2", replay="worker")
        upgraded = time.perf_counter() - t0
    assert len(moved) == runs and all(m.outcome == "moved" for m in moved), moved[:3]
    return driven, total, per_run, by_worker, upgraded


def report(
    args: argparse.Namespace,
    driven: float,
    total: float,
    per_run: list[float],
    by_worker: float,
    upgraded: float,
) -> None:
    lines = [
        "# tether: `deployments.check` and `upgrade` of in-flight runs",
        "",
        f"`bench/check.py --runs {args.runs} --steps {args.steps} --backend {args.backend}`:"
        f" {args.runs} runs of a {args.steps}-step workflow, each asleep after its steps,",
        'checked against this process\'s code (`"local"`), then by a live worker of a second',
        "deployment of the same code (asked through the World), then upgraded onto it (checked",
        "by that worker, which also starts running the moved runs on the same 2 cores). Written",
        "by `check.py`; no peer has a check to compare with.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| check of all {args.runs} runs | {total:.2f} s |",
        f"| per run, in that check | {total / args.runs * 1000:.2f} ms |",
        f"| one run's log read and replayed, p50 of {len(per_run)}"
        f" | {statistics.median(per_run) * 1000:.2f} ms |",
        f"| check of all {args.runs} runs by a live worker | {by_worker:.2f} s |",
        f"| per run, in that check | {by_worker / args.runs * 1000:.2f} ms |",
        f"| upgrade of all {args.runs} runs (worker's check, fork, cancel) | {upgraded:.2f} s |",
        f"| per run, in that upgrade | {upgraded / args.runs * 1000:.2f} ms |",
        f"| setup: driving the runs to their sleep | {driven:.1f} s |",
        "",
    ]
    text = "\n".join(lines)
    out = HERE / f"CHECK-RESULTS-{args.backend}.md"
    out.write_text(text)
    results = HERE / "RESULTS.md"
    results.write_text(with_check_section(results.read_text(), HERE))
    print(text)


if __name__ == "__main__":
    main()
