"""Run every workload for tether and DBOS, each in its own process, and write RESULTS.md.

Every (engine, workload) pair runs in a fresh interpreter (`run.py --child ENGINE --workload W`)
with a fresh temporary directory for its SQLite file; the child prints one JSON object on its last
stdout line, `{"ok": true, "metrics": {...}}` or `{"ok": false, "error": "..."}`.
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
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from common import BUDGET_S, FULL, QUICK, WORKLOADS, Counts, Deadline, Metrics

HERE = Path(__file__).resolve().parent
ENGINES: tuple[str, ...] = ("tether", "dbos")
LABEL = {"tether": "tether", "dbos": "DBOS"}
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


def child_main(engine: str, workload: str, db_dir: Path, quick: bool) -> None:
    """Run one workload of one engine in this process, report it, and exit."""
    counts = QUICK if quick else FULL
    reported: dict[str, Any] | None = None
    try:
        module = importlib.import_module(f"workloads_{engine}")
        run_workload: Callable[[Counts, Deadline], Metrics] = module.WORKLOADS[workload]
        with module.session(db_dir):
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


def run_child(engine: str, workload: str, quick: bool) -> Outcome:
    """Run one workload of one engine in a fresh interpreter and temp dir."""
    timeout = BUDGET_S[workload] + CHILD_SLACK_S
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"tether-bench-{engine}-{workload}-") as tmp:
        cmd = [sys.executable, str(HERE / "run.py"), "--child", engine]
        cmd += ["--workload", workload, "--db-dir", tmp] + (["--quick"] if quick else [])
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
        return f"{t:g}{target.unit}", "PASS" if t <= target.threshold else "FAIL"
    if not dbos.ok:
        return "-", "NOT RUN (DBOS)" if not dbos.ran else "n/a (DBOS failed)"
    d = dbos.metrics.get(target.key)
    if not isinstance(d, int | float) or t <= 0 or d <= 0:
        return "-", "n/a (bad metric)"
    ratio = t / d if target.higher_is_better else d / t
    return f"{ratio:.1f}x", "PASS" if ratio >= target.threshold else "FAIL"


def render(
    results: dict[str, dict[str, Outcome]],
    counts: Counts,
    quick: bool,
    argv: list[str],
    wall: float,
) -> str:
    """The whole RESULTS.md."""
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    out = [
        "# tether vs DBOS benchmark",
        "",
        f"Written by `bench/run.py` on {now} "
        f"({'QUICK smoke-test counts, not comparable' if quick else 'full counts'}; "
        f"`{' '.join(['run.py', *argv])}`, {wall:.0f} s wall).",
        "",
        "Each engine and workload ran in its own fresh Python process with a fresh temporary "
        "directory holding an on-disk SQLite database. DBOS ran with its defaults apart from "
        "`system_database_url` (SQLite); tether with `tether.configure(world=sqlite:///...)` "
        "and an in-process `tether.Worker()`.",
        "",
        "| machine | |",
        "| --- | --- |",
        *[f"| {k} | {v} |" for k, v in machine_info()],
        "",
        "## Targets (tether)",
        "",
        "| target | measured | verdict |",
        "| --- | --- | --- |",
        *[
            f"| {t.label.format(**vars(counts))} | {' | '.join(judge(t, results))} |"
            for t in TARGETS
        ],
        "",
    ]
    failures: list[str] = []
    for workload in WORKLOADS:
        title, rows = TABLES[workload]
        outcomes = results[workload]
        tether, dbos = outcomes["tether"], outcomes["dbos"]
        out += [
            f"## {title.format(**vars(counts))}",
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
            if outcome.error is not None:
                failures.append(f"- {workload} {LABEL[engine]}: `{outcome.error}`")
            if outcome.warning is not None:
                failures.append(
                    f"- {workload} {LABEL[engine]} (warning, results kept): {outcome.warning}"
                )
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
    "- Ratios: 'tether Nx faster' is DBOS time / tether time (or tether rate / DBOS rate).",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=ENGINES, help="run one engine only")
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
    args = parser.parse_args()

    if args.child:
        if not args.workload or not args.db_dir:
            parser.error("--child needs --workload and --db-dir")
        child_main(args.child, args.workload, args.db_dir, args.quick)

    selected = [w.strip().upper() for w in args.workloads.split(",") if w.strip()]
    unknown = [w for w in selected if w not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workloads: {', '.join(unknown)}")
    engines = [args.only] if args.only else list(ENGINES)
    counts = QUICK if args.quick else FULL
    results = {w: {e: Outcome() for e in ENGINES} for w in WORKLOADS}

    start = time.monotonic()
    for workload in (w for w in WORKLOADS if w in selected):
        for engine in engines:
            print(
                f"[{time.monotonic() - start:6.1f}s] {workload} {LABEL[engine]:6} ...", flush=True
            )
            outcome = run_child(engine, workload, args.quick)
            results[workload][engine] = outcome
            status = headline(workload, outcome.metrics) if outcome.ok else outcome.error
            if outcome.warning:
                status = f"{status} (warning: {outcome.warning})"
            print(
                f"[{time.monotonic() - start:6.1f}s] {workload} {LABEL[engine]:6} "
                f"{'ok' if outcome.ok else 'FAILED'} in {outcome.seconds:.1f}s: {status}",
                flush=True,
            )

    wall = time.monotonic() - start
    out = HERE / (args.out or ("RESULTS-quick.md" if args.quick else "RESULTS.md"))
    out.write_text(render(results, counts, args.quick, sys.argv[1:], wall))
    print(f"wrote {out} ({wall:.0f} s)")


if __name__ == "__main__":
    main()
