"""Run every workload for tether and DBOS, each in its own process, and write RESULTS.md.

Every (backend, engine, workload) runs in a fresh interpreter (`run.py --child ENGINE --workload
W`) with a fresh temporary directory for its SQLite file, or a fresh PostgreSQL database created
for it (and dropped afterwards) on the server `$TETHER_BENCH_POSTGRES_URL` names (default: the
local one); the child prints one JSON object on its last stdout line, `{"ok": true, "metrics":
{...}}` or `{"ok": false, "error": "..."}`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from common import (
    BUDGET_S,
    FULL,
    QUICK,
    TETHER_ONLY,
    WORKLOADS,
    Counts,
    Deadline,
    Metrics,
    with_check_section,
)

HERE = Path(__file__).resolve().parent
ENGINES: tuple[str, ...] = ("tether", "dbos")
LABEL = {"tether": "tether", "dbos": "DBOS"}
BACKENDS: tuple[str, ...] = ("sqlite", "postgres")
BACKEND_LABEL = {"sqlite": "SQLite", "postgres": "PostgreSQL"}
POSTGRES_URL = os.environ.get(
    "TETHER_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
# Slack on top of a workload's in-child budget for interpreter start, setup and shutdown.
CHILD_SLACK_S = 30.0
# How long a child waits for its engine to shut down after reporting, before it exits anyway.
SHUTDOWN_GRACE_S = 20.0
SHUTDOWN_HUNG_EXIT = 3


# --- child side ----------------------------------------------------------------------------------


def emit(payload: dict[str, Any]) -> None:
    """Print the child's result as the last stdout line."""
    sys.stdout.write("\n" + json.dumps(payload) + "\n")
    sys.stdout.flush()


def shutdown_hung() -> None:
    """Exit a child whose engine did not shut down in time (its report is already out)."""
    print(f"engine did not shut down within {SHUTDOWN_GRACE_S:.0f} s", file=sys.stderr)
    sys.stderr.flush()
    os._exit(SHUTDOWN_HUNG_EXIT)


def child_main(
    engine: str, workload: str, db_dir: Path, quick: bool, world_url: str | None
) -> None:
    """Run one workload of one engine in this process, report it, and exit."""
    counts = QUICK if quick else FULL
    reported: dict[str, Any] | None = None
    try:
        module = importlib.import_module(f"workloads_{engine}")
        run_workload: Callable[[Counts, Deadline], Metrics] = module.WORKLOADS[workload]
        os.environ["TETHER_BENCH_LOG_DIR"] = str(db_dir)
        with module.session(db_dir, world_url, workload):
            try:
                metrics = run_workload(counts, Deadline(BUDGET_S[workload]))
                reported = {"ok": True, "metrics": metrics}
            except Exception as exc:
                traceback.print_exc()
                reported = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            emit(reported)
            # Report first, then shut down; a shutdown that hangs must not hang the bench.
            threading.Timer(SHUTDOWN_GRACE_S, shutdown_hung).start()
    except BaseException as exc:
        traceback.print_exc()
        if reported is None:
            reported = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            emit(reported)
        else:
            print(f"engine shutdown failed: {exc!r}", file=sys.stderr)
    sys.stderr.flush()
    os._exit(0 if reported and reported.get("ok") else 1)


# --- parent side ---------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What one child reported: metrics, or an error, or that it was not run."""

    ran: bool = False
    metrics: Metrics = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0
    warning: str | None = None

    @property
    def ok(self) -> bool:
        return self.ran and self.error is None


def parse_report(stdout: str) -> dict[str, Any] | None:
    """The last stdout line that is a JSON object with an "ok" key."""
    for line in reversed(stdout.strip().splitlines()):
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict) and "ok" in obj:
            return obj
    return None


def tail(text: str, lines: int = 8) -> str:
    """The last lines of a child's stderr, indented for the console."""
    return "\n".join("    " + line for line in text.strip().splitlines()[-lines:])


@contextmanager
def fresh_database(backend: str, engine: str, workload: str) -> Iterator[str | None]:
    """A new PostgreSQL database's URL for one child (dropped afterwards); None for SQLite."""
    if backend != "postgres":
        yield None
        return
    import psycopg

    name = f"bench_{engine}_{workload.lower()}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        base, _, _ = POSTGRES_URL.rpartition("/")
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def run_child(engine: str, workload: str, quick: bool, backend: str = "sqlite") -> Outcome:
    """Run one workload of one engine in a fresh interpreter and temp dir (or database)."""
    timeout = BUDGET_S[workload] + CHILD_SLACK_S
    t0 = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix=f"tether-bench-{engine}-{workload}-") as tmp,
        fresh_database(backend, engine, workload) as world_url,
    ):
        cmd = [sys.executable, str(HERE / "run.py"), "--child", engine]
        cmd += ["--workload", workload, "--db-dir", tmp] + (["--quick"] if quick else [])
        cmd += ["--world-url", world_url] if world_url else []
        try:
            proc = subprocess.run(
                cmd, cwd=HERE, capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired as exc:
            stderr = exc.stderr or ""
            if isinstance(stderr, bytes):
                stderr = stderr.decode(errors="replace")
            if stderr:
                print(tail(stderr), file=sys.stderr)
            return Outcome(
                ran=True,
                error=f"no report: killed after {timeout:.0f} s",
                seconds=time.monotonic() - t0,
            )
    seconds = time.monotonic() - t0
    report = parse_report(proc.stdout)
    if report is None:
        print(tail(proc.stderr), file=sys.stderr)
        return Outcome(
            ran=True,
            error=f"no report (exit code {proc.returncode}): {tail(proc.stderr, 1).strip()}",
            seconds=seconds,
        )
    if not report["ok"]:
        print(tail(proc.stderr), file=sys.stderr)
        return Outcome(ran=True, error=str(report.get("error")), seconds=seconds)
    warning = None
    if proc.returncode == SHUTDOWN_HUNG_EXIT:
        warning = f"engine did not shut down within {SHUTDOWN_GRACE_S:.0f} s of reporting"
    elif proc.returncode != 0:
        warning = f"child exited with code {proc.returncode} after reporting"
    return Outcome(ran=True, metrics=report["metrics"], seconds=seconds, warning=warning)


def headline(workload: str, metrics: Metrics) -> str:
    """One short progress summary of a workload's metrics."""
    keys = {
        "W1": ("p50_ms", "p95_ms"),
        "W2": ("wf_per_s", "total_s"),
        "W3": ("p50_ms", "p95_ms"),
        "W5": ("total_s",),
        "W6": ("first_ms_per_step", "last_ms_per_step", "last_over_first"),
        "W2P": ("wf_per_s_1", "wf_per_s_4", "speedup_4_over_1"),
    }[workload]
    return ", ".join(f"{k}={metrics.get(k)}" for k in keys)


# --- report --------------------------------------------------------------------------------------


def sh(*cmd: str) -> str:
    """Output of a read-only command, or "" if it fails."""
    try:
        return subprocess.run(
            cmd, cwd=HERE, capture_output=True, text=True, timeout=10, check=False
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine_info() -> list[tuple[str, str]]:
    """Rows describing the machine and the software measured."""
    cpu = "unknown"
    mem = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    except OSError:
        pass
    sha = sh("git", "rev-parse", "--short=12", "HEAD") or "unknown"
    if sh("git", "status", "--porcelain", "--", str(HERE.parent / "src")):
        sha += " (src/ has uncommitted changes)"

    def pkg(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    return [
        ("CPU", cpu),
        ("cores", str(os.cpu_count())),
        ("memory", mem),
        ("OS", platform.platform()),
        ("Python", platform.python_version()),
        ("DBOS", pkg("dbos")),
        ("tether", f"{pkg('tether')}, git {sha}"),
    ]


def fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"
    return str(value)


def compare(tether: float, dbos: float, higher_is_better: bool, words: tuple[str, str]) -> str:
    """E.g. "tether 6.1x faster": how tether's value compares with DBOS's."""
    if tether <= 0 or dbos <= 0:
        return "n/a"
    ratio = tether / dbos if higher_is_better else dbos / tether
    better, worse = words
    return f"tether {ratio:.1f}x {better}" if ratio >= 1 else f"tether {1 / ratio:.1f}x {worse}"


@dataclass(frozen=True)
class Row:
    """One metric row of a workload table."""

    key: str
    label: str
    higher_is_better: bool = False
    words: tuple[str, str] = ("faster", "slower")
    compared: bool = True


TABLES: dict[str, tuple[str, list[Row]]] = {
    "W1": (
        "W1 sequential latency of a 3-step workflow ({w1_warmup} warm-up, {w1_measured} measured)",
        [
            Row("p50_ms", "p50 ms"),
            Row("p95_ms", "p95 ms"),
            Row("mean_ms", "mean ms"),
            Row("max_ms", "max ms", compared=False),
        ],
    ),
    "W2": (
        "W2 throughput: {w2_workflows} 3-step workflows started at once",
        [
            Row("wf_per_s", "workflows/s", higher_is_better=True),
            Row("total_s", "total s (first start to last result)"),
            Row("start_all_s", "s to start all", compared=False),
        ],
    ),
    "W3": (
        "W3 timer lateness: {w3_workflows} workflows sleeping {w3_sleep_s:g} s",
        [
            Row("p50_ms", "p50 ms late", words=("lower", "higher")),
            Row("p95_ms", "p95 ms late", words=("lower", "higher")),
            Row("max_ms", "max ms late", compared=False),
        ],
    ),
    "W5": (
        "W5 fan-out: one workflow starting {w5_children} children and awaiting them",
        [Row("total_s", "total s")],
    ),
    "W6": (
        "W6 one workflow of {w6_steps} sequential steps (windows of {w6_window} steps)",
        [
            Row("first_ms_per_step", "first-window mean ms/step"),
            Row("last_ms_per_step", "last-window mean ms/step"),
            Row("last_over_first", "last/first", words=("flatter", "steeper")),
            Row("total_s", "total s"),
        ],
    ),
    "W2P": (
        "W2P throughput of W2 served by tether worker processes (this process only starts runs)",
        [
            Row("wf_per_s_1", "workflows/s, 1 worker process", compared=False),
            Row("wf_per_s_4", "workflows/s, 4 worker processes", compared=False),
            Row("speedup_4_over_1", "4 processes / 1", compared=False),
            Row("cores_busy_1", "cores busy, 1 worker process (whole machine)", compared=False),
            Row("cores_busy_4", "cores busy, 4 worker processes (whole machine)", compared=False),
            Row("cores", "cores on the machine", compared=False),
        ],
    ),
}


def cell(outcome: Outcome, key: str) -> str:
    if not outcome.ran:
        return "not run"
    if outcome.error is not None:
        return "failed (see below)"
    return fmt(outcome.metrics.get(key, "-"))


@dataclass(frozen=True)
class Target:
    """One of tether's targets: a speed-up over DBOS (`vs_dbos`) or an absolute limit."""

    workload: str
    key: str
    label: str
    threshold: float
    vs_dbos: bool
    higher_is_better: bool = False
    unit: str = ""


#: The targets on PostgreSQL (issue 5); SQLite's are TARGETS.
POSTGRES_TARGETS: list[Target] = [
    Target("W1", "p50_ms", "W1 p50 latency ≥4x faster than DBOS", 4.0, vs_dbos=True),
    Target("W2", "wf_per_s", "W2 throughput ≥8x DBOS", 8.0, True, higher_is_better=True),
    Target("W3", "p95_ms", "W3 p95 timer lateness ≤ 20 ms", 20.0, vs_dbos=False, unit=" ms"),
    Target(
        "W2P",
        "speedup_4_over_1",
        "W2 with 4 worker processes ≥1.6x one",
        1.6,
        False,
        higher_is_better=True,
        unit="x",
    ),
]

TARGETS: list[Target] = [
    Target("W1", "p50_ms", "W1 p50 latency ≥5x faster than DBOS", 5.0, vs_dbos=True),
    Target("W2", "wf_per_s", "W2 throughput ≥10x DBOS", 10.0, True, higher_is_better=True),
    Target("W3", "p95_ms", "W3 p95 timer lateness ≤ 20 ms", 20.0, vs_dbos=False, unit=" ms"),
    Target("W5", "total_s", "W5 fan-out ≥5x faster than DBOS", 5.0, vs_dbos=True),
    Target(
        "W6",
        "last_over_first",
        "W6 last-{w6_window} mean ≤ 1.2x first-{w6_window} mean",
        1.2,
        False,
        unit="x",
    ),
]


def judge(target: Target, results: dict[str, dict[str, Outcome]]) -> tuple[str, str]:
    """(measured, verdict) of one target."""
    tether, dbos = results[target.workload]["tether"], results[target.workload]["dbos"]
    if not tether.ran:
        return "-", "NOT RUN (tether)"
    if tether.error is not None:
        return "-", "FAIL (tether failed)"
    t = tether.metrics.get(target.key)
    if not isinstance(t, int | float):
        return "-", "FAIL (missing metric)"
    if not target.vs_dbos:
        ok = t >= target.threshold if target.higher_is_better else t <= target.threshold
        return f"{t:g}{target.unit}", "PASS" if ok else "FAIL"
    if not dbos.ok:
        return "-", "NOT RUN (DBOS)" if not dbos.ran else "n/a (DBOS failed)"
    d = dbos.metrics.get(target.key)
    if not isinstance(d, int | float) or t <= 0 or d <= 0:
        return "-", "n/a (bad metric)"
    ratio = t / d if target.higher_is_better else d / t
    return f"{ratio:.1f}x", "PASS" if ratio >= target.threshold else "FAIL"


Results = dict[str, dict[str, dict[str, Outcome]]]


def render(
    results: Results,
    backends: list[str],
    counts: Counts,
    quick: bool,
    argv: list[str],
    wall: float,
) -> str:
    """The whole RESULTS.md: the machine, then targets and tables per backend."""
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    out = [
        "# tether vs DBOS benchmark",
        "",
        f"Written by `bench/run.py` on {now} "
        f"({'QUICK smoke-test counts, not comparable' if quick else 'full counts'}; "
        f"`{' '.join(['run.py', *argv])}`, {wall:.0f} s wall).",
        "",
        "Each engine and workload ran in its own fresh Python process. On SQLite it got a fresh "
        "temporary directory holding an on-disk database; on PostgreSQL a fresh database on the "
        "same local server (created for the run, dropped after). DBOS ran with its defaults "
        "apart from `system_database_url`; tether with `tether.configure(world=...)` and an "
        "in-process `tether.Worker()` (W2P: `tether worker` processes instead).",
        "",
        "| machine | |",
        "| --- | --- |",
        *[f"| {k} | {v} |" for k, v in machine_info()],
        "",
    ]
    failures: list[str] = []
    for backend in backends:
        label = BACKEND_LABEL[backend]
        by_workload = results[backend]
        targets = POSTGRES_TARGETS if backend == "postgres" else TARGETS
        out += [
            f"## Targets on {label} (tether)",
            "",
            "| target | measured | verdict |",
            "| --- | --- | --- |",
            *[
                f"| {t.label.format(**vars(counts))} | {' | '.join(judge(t, by_workload))} |"
                for t in targets
                if by_workload[t.workload]["tether"].ran
            ],
            "",
        ]
        for workload in WORKLOADS:
            title, rows = TABLES[workload]
            outcomes = by_workload[workload]
            tether, dbos = outcomes["tether"], outcomes["dbos"]
            if not tether.ran and not dbos.ran:
                continue
            out += [
                f"## {label}: {title.format(**vars(counts))}",
                "",
                "| metric | tether | DBOS | tether vs DBOS |",
                "| --- | --- | --- | --- |",
            ]
            for row in rows:
                ratio = "-"
                t, d = tether.metrics.get(row.key), dbos.metrics.get(row.key)
                if row.compared and isinstance(t, int | float) and isinstance(d, int | float):
                    ratio = compare(float(t), float(d), row.higher_is_better, row.words)
                out.append(
                    f"| {row.label} | {cell(tether, row.key)} | {cell(dbos, row.key)} | {ratio} |"
                )
            out.append(
                f"| process wall s | {fmt(tether.seconds) if tether.ran else '-'} "
                f"| {fmt(dbos.seconds) if dbos.ran else '-'} | - |"
            )
            out.append("")
            for engine, outcome in outcomes.items():
                where = f"{label} {workload} {LABEL[engine]}"
                if outcome.error is not None:
                    failures.append(f"- {where}: `{outcome.error}`")
                if outcome.warning is not None:
                    failures.append(f"- {where} (warning, results kept): {outcome.warning}")
    if failures:
        out += ["## Failures and warnings", "", *failures, ""]
    out += ["## How each workload is measured", "", *NOTES, ""]
    return "\n".join(out)


NOTES: list[str] = [
    "- W1: wall time from the start call to the result in hand, one workflow at a time; "
    "three trivial steps (x + 1).",
    "- W2: all workflows started in a loop from one thread, then every result awaited in start "
    "order; workflows/s = count / (first start to last result).",
    "- W3: each workflow takes time.time() in a step, sleeps durably, takes time.time() in a "
    "second step; lateness = after - (before + sleep). All workflows start together.",
    "- W5: a parent workflow starts the children (tether: from one step, awaited by a second "
    "step; DBOS: DBOS.start_workflow inside the workflow, then each handle's get_result); "
    "total = parent start to parent result.",
    "- W6: every step returns time.time(); per-step time = gap between consecutive steps, "
    "averaged over the first and the last window.",
    "- W2P (tether only): W2 with this process only starting runs (a pure client) and 1, then "
    "4, `tether worker` processes serving them; the speed-up is the 4-process rate over the "
    "1-process rate. 'Cores busy' is the whole machine's CPU time (client, workers, database "
    "server) over the pass's wall time, from /proc/stat: when it nears the core count, more "
    "workers cannot add throughput.",
    "- Ratios: 'tether Nx faster' is DBOS time / tether time (or tether rate / DBOS rate).",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=ENGINES, help="run one engine only")
    parser.add_argument(
        "--backend",
        choices=[*BACKENDS, "both"],
        default="sqlite",
        help="database both engines run on (default: sqlite; W2P runs on postgres only)",
    )
    parser.add_argument("--quick", action="store_true", help="smaller counts, for smoke tests")
    parser.add_argument(
        "--out",
        type=Path,
        help="report path relative to bench/ (default: RESULTS.md; RESULTS-quick.md if --quick)",
    )
    parser.add_argument(
        "--workloads", default=",".join(WORKLOADS), help="comma-separated subset, e.g. W1,W3"
    )
    parser.add_argument("--child", choices=ENGINES, help=argparse.SUPPRESS)
    parser.add_argument("--workload", choices=WORKLOADS, help=argparse.SUPPRESS)
    parser.add_argument("--db-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--world-url", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        if not args.workload or not args.db_dir:
            parser.error("--child needs --workload and --db-dir")
        child_main(args.child, args.workload, args.db_dir, args.quick, args.world_url)

    selected = [w.strip().upper() for w in args.workloads.split(",") if w.strip()]
    unknown = [w for w in selected if w not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workloads: {', '.join(unknown)}")
    engines = [args.only] if args.only else list(ENGINES)
    backends = list(BACKENDS) if args.backend == "both" else [args.backend]
    counts = QUICK if args.quick else FULL
    results: Results = {
        b: {w: {e: Outcome() for e in ENGINES} for w in WORKLOADS} for b in BACKENDS
    }

    start = time.monotonic()
    for backend in backends:
        for workload in (w for w in WORKLOADS if w in selected):
            if workload == "W2P" and backend != "postgres":
                continue  # worker processes on one machine: measured where they scale out
            for engine in engines:
                if workload in TETHER_ONLY and engine != "tether":
                    continue
                what = f"{BACKEND_LABEL[backend]:10} {workload:3} {LABEL[engine]:6}"
                print(f"[{time.monotonic() - start:6.1f}s] {what} ...", flush=True)
                outcome = run_child(engine, workload, args.quick, backend)
                results[backend][workload][engine] = outcome
                status = headline(workload, outcome.metrics) if outcome.ok else outcome.error
                if outcome.warning:
                    status = f"{status} (warning: {outcome.warning})"
                print(
                    f"[{time.monotonic() - start:6.1f}s] {what} "
                    f"{'ok' if outcome.ok else 'FAILED'} in {outcome.seconds:.1f}s: {status}",
                    flush=True,
                )

    wall = time.monotonic() - start
    out = HERE / (args.out or ("RESULTS-quick.md" if args.quick else "RESULTS.md"))
    report = render(results, backends, counts, args.quick, sys.argv[1:], wall)
    out.write_text(report if args.quick else with_check_section(report, HERE))
    print(f"wrote {out} ({wall:.0f} s)")


if __name__ == "__main__":
    main()
