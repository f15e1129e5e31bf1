"""Scale-out on PostgreSQL: CPU per workflow as worker processes are added, and idle cost.

    .venv/bin/python scaleout.py [--workflows 3000] [--workers 1,2,4,8] [--idle-s 30]
                                 [--save-before]

W2's 3-step workflows are started by this process (a pure client) and served by 1, 2, 4
and 8 `tether worker` processes on a fresh database of the local PostgreSQL server. Each
pass counts the CPU time of every process involved: this client, the workers and the
PostgreSQL server (its backends, the background processes and the postmaster's reaped
children), from /proc. Core-ms per workflow is that CPU time over the workflows served:
on a machine whose cores are all busy, throughput cannot show scaling, but CPU per
workflow can (a fleet needs that many more machines). Then 8 idle workers are watched for
`--idle-s` seconds.

Writes SCALEOUT-RESULTS-postgres.md (with the figures of SCALEOUT-BEFORE-postgres.json,
if present, beside the new ones) and RESULTS.md's part of it; `--save-before` stores this
run as that baseline instead.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import tether
import workloads_tether
from common import with_check_section
from run import fresh_database, sh
from tether import start

HERE = Path(__file__).resolve().parent
TICK = os.sysconf("SC_CLK_TCK")
#: Workflows served by each pass before it is measured: caches, plans and pools warm up.
WARM_UP = 200
#: Quiet time after the workers are ready, before a measurement begins.
SETTLE_S = 2.0
#: Quiet time after the last pass before idle is watched: long enough for the workers to
#: count as idle and for the server's clean-up after the burst (autovacuum) to end.
IDLE_SETTLE_S = 15.0


def process_cpu(pid: int, *, children: bool = False) -> float:
    """CPU seconds of one process (all its threads); with ``children``, its reaped ones too."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    # After the ")" of comm: state is field 0, so utime, stime, cutime, cstime are 11 to 14.
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / TICK


def postgres_pids() -> tuple[int | None, list[int]]:
    """The postmaster and every other PostgreSQL server process on this machine."""
    postmaster, others = None, []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        if comm != "postgres":
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        try:
            parent_comm = Path(f"/proc/{parent}/comm").read_text().strip()
        except OSError:
            parent_comm = ""
        if parent_comm == "postgres":
            others.append(int(entry.name))
        else:
            postmaster = int(entry.name)
    return postmaster, others


def postgres_cpu() -> float:
    """CPU seconds of the PostgreSQL server: live processes, and those that have exited."""
    postmaster, others = postgres_pids()
    total = sum(process_cpu(pid) for pid in others)
    if postmaster is not None:
        total += process_cpu(postmaster, children=True)
    return total


def client_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Sample:
    """CPU seconds so far of each kind of process, and the time they were read."""

    client: float
    workers: float
    server: float
    at: float

    @staticmethod
    def take(workers: list[subprocess.Popen[bytes]]) -> Sample:
        return Sample(
            client_cpu(),
            sum(process_cpu(p.pid) for p in workers),
            postgres_cpu(),
            time.perf_counter(),
        )


@dataclass
class Pass:
    """One measured pass: N workers serving `workflows` workflows."""

    workers: int
    workflows: int
    wf_per_s: float
    client_ms: float  # core-ms per workflow, each kind of process
    workers_ms: float
    server_ms: float

    @property
    def total_ms(self) -> float:
        return self.client_ms + self.workers_ms + self.server_ms


@dataclass
class Idle:
    """Idle workers watched for a while: each kind's share of one core, in percent."""

    workers: int
    seconds: float
    workers_pct: float
    server_pct: float

    @property
    def total_pct(self) -> float:
        return self.workers_pct + self.server_pct


def serve(n: int) -> None:
    """Start ``n`` three-step workflows, then wait for each result."""
    runs = [start(workloads_tether.three_steps, [i]) for i in range(n)]
    for i, run in enumerate(runs):
        got = run.result(timeout=300)
        if got != i + 3:
            raise RuntimeError(f"three_steps({i}) returned {got!r}")


def measure(workers: int, workflows: int, log_dir: Path, idle_s: float) -> tuple[Pass, Idle | None]:
    """One pass with ``workers`` processes; with ``idle_s``, then watch them idle that long."""
    with workloads_tether.worker_processes(workers, log_dir) as procs:
        serve(WARM_UP)
        time.sleep(SETTLE_S)  # let the warm-up's tail settle before counting
        before = Sample.take(procs)
        serve(workflows)
        after = Sample.take(procs)
        per = 1000.0 / workflows
        measured = Pass(
            workers,
            workflows,
            round(workflows / (after.at - before.at), 1),
            round((after.client - before.client) * per, 3),
            round((after.workers - before.workers) * per, 3),
            round((after.server - before.server) * per, 3),
        )
        idle = None
        if idle_s > 0:
            time.sleep(IDLE_SETTLE_S)
            before = Sample.take(procs)
            time.sleep(idle_s)  # the measurement itself: nothing happens, on purpose
            after = Sample.take(procs)
            span = after.at - before.at
            idle = Idle(
                workers,
                round(span, 1),
                round((after.workers - before.workers) / span * 100, 3),
                round((after.server - before.server) / span * 100, 3),
            )
        return measured, idle


def table(passes: list[Pass], idle: Idle | None, cores: int) -> list[str]:
    one = passes[0].total_ms
    lines = [
        "| worker processes | workflows/s | core-ms/workflow: client | workers | PostgreSQL"
        " | all | vs 1 process |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in passes:
        lines.append(
            f"| {p.workers} | {p.wf_per_s:,.0f} | {p.client_ms:.2f} | {p.workers_ms:.2f}"
            f" | {p.server_ms:.2f} | {p.total_ms:.2f} | {p.total_ms / one:.2f}x |"
        )
    if idle is not None:
        lines += [
            "",
            f"{idle.workers} idle worker processes over {idle.seconds:g} s: workers"
            f" {idle.workers_pct:.2f}% of one core, PostgreSQL {idle.server_pct:.2f}%,"
            f" together **{idle.total_pct:.2f}%** of one core ({cores} cores on the machine).",
        ]
    return lines


def load(path: Path) -> tuple[list[Pass], Idle | None, str] | None:
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    idle = Idle(**data["idle"]) if data["idle"] else None
    return [Pass(**p) for p in data["passes"]], idle, data["what"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workflows", type=int, default=3000, help="workflows per pass")
    parser.add_argument("--workers", default="1,2,4,8", help="worker process counts")
    parser.add_argument("--idle-s", type=float, default=30.0, help="idle watch (0: none)")
    parser.add_argument("--save-before", action="store_true", help="store as the baseline")
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(",")]
    cores = os.cpu_count() or 0
    passes: list[Pass] = []
    idle: Idle | None = None
    os.environ["TETHER_DEPLOYMENT_ID"] = workloads_tether.BENCH_DEPLOYMENT
    with (
        tempfile.TemporaryDirectory(prefix="tether-scaleout-") as tmp,
        fresh_database("postgres", "tether", "scaleout") as url,
    ):
        assert url is not None
        tether.configure(world=url)
        for n in counts:
            watch = args.idle_s if n == max(counts) else 0.0
            measured, watched = measure(n, args.workflows, Path(tmp), watch)
            passes.append(measured)
            idle = watched or idle
            print(f"{n} workers: {measured} {measured.total_ms:.2f} core-ms/wf", flush=True)
        if idle:
            print(f"idle: {idle} total {idle.total_pct:.2f}% of a core", flush=True)
        tether.config.close()
    sha = sh("git", "rev-parse", "--short=12", "HEAD") or "unknown"
    if sh("git", "status", "--porcelain", "--", str(HERE.parent / "src")):
        sha += " (src/ has uncommitted changes)"
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    what = f"git {sha}, {when}"
    baseline = HERE / "SCALEOUT-BEFORE-postgres.json"
    if args.save_before:
        data = {"what": what, "passes": [asdict(p) for p in passes]}
        baseline.write_text(json.dumps({**data, "idle": asdict(idle) if idle else None}, indent=1))
        print(f"wrote {baseline}")
        return
    lines = [
        "# tether: scale-out on PostgreSQL (worker processes added on one machine)",
        "",
        f"`bench/scaleout.py --workflows {args.workflows} --workers {args.workers}"
        f" --idle-s {args.idle_s:g}` on {cores} cores: W2's 3-step workflows started by a"
        " client process, served by `tether worker` processes. Core-ms per workflow counts"
        " every process (client, workers, PostgreSQL server) from /proc; while the machine's"
        " cores are all busy, throughput cannot grow with workers, but CPU per workflow shows"
        " what each added process costs. Targets: 4 workers at most 1.25x the CPU per"
        " workflow of 1, 8 at most 1.5x; 8 idle workers under 2% of one core, server included"
        f" (watched from {IDLE_SETTLE_S:g} s after the last pass).",
        "",
        f"After ({what}):",
        "",
        *table(passes, idle, cores),
        "",
    ]
    before = load(baseline)
    if before is not None:
        old_passes, old_idle, old_what = before
        lines += [f"Before ({old_what}):", "", *table(old_passes, old_idle, cores), ""]
    text = "\n".join(lines)
    (HERE / "SCALEOUT-RESULTS-postgres.md").write_text(text)
    results = HERE / "RESULTS.md"
    results.write_text(with_check_section(results.read_text(), HERE))
    print(text)


if __name__ == "__main__":
    sys.exit(main())
