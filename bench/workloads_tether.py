"""tether side of the workloads: a SQLite or PostgreSQL world and an in-process worker.

tether names workflows by module + qualname, so every workflow and step is defined at module level
here, and run.py imports this file as the module `workloads_tether` (never runs it as __main__).
Only imported by run.py's child process for engine "tether".
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import tether
from common import Counts, Deadline, Metrics, latency_metrics, step_time_metrics
from tether import get_run, sleep, start, step, workflow

# --- workflows (module level: tether names them by module + qualname) ---------------------------


@step
async def add_one(x: int) -> int:
    """The trivial step of W1, W2 and W5."""
    return x + 1


@workflow
async def three_steps(x: int) -> int:
    """W1/W2: three trivial steps in a row."""
    a = await add_one(x)
    b = await add_one(a)
    c: int = await add_one(b)
    return c


@step
async def now() -> float:
    """Wall-clock time, taken inside a step."""
    return time.time()


@workflow
async def sleeper(seconds: float) -> list[float]:
    """W3: time before a durable sleep and after waking up."""
    before = await now()
    await sleep(f"{seconds:g}s")
    after = await now()
    return [before, after]


@workflow
async def fan_child(i: int) -> int:
    """W5 child: one step."""
    result: int = await add_one(i)
    return result


# W5 parent. A workflow body must stay deterministic and replayable, so it neither starts runs nor
# blocks on them itself: one step starts all children and checkpoints their run ids, a second step
# waits for their results. On a replay, both steps return their recorded outputs, so no child is
# started twice. The two steps are plain `def`s so the blocking `result(timeout=...)` calls run
# off the worker's event loop (tether runs sync steps in a thread).


@step
def start_children(n: int) -> list[str]:
    """W5: start n children; their run ids are this step's checkpointed output."""
    return [start(fan_child, [i]).run_id for i in range(n)]


@step
def await_children(run_ids: list[str], budget_s: float) -> list[int]:
    """W5: wait for every child's result, within budget_s seconds in all."""
    deadline = Deadline(budget_s)
    return [get_run(run_id).result(timeout=deadline.left()) for run_id in run_ids]


@workflow
async def fan_parent(n: int, budget_s: float) -> int:
    """W5 parent: children started by one step, awaited by another."""
    run_ids = await start_children(n)
    results = await await_children(run_ids, budget_s)
    return sum(results)


@workflow
async def step_chain(n: int) -> list[float]:
    """W6: n sequential steps, each returning the time it ran at."""
    return [await now() for _ in range(n)]


# --- helpers -------------------------------------------------------------------------------------


def expect(got: object, want: object, what: str) -> None:
    """Fail the workload loudly if an engine returned a wrong result."""
    if got != want:
        raise RuntimeError(f"{what}: expected {want!r}, got {got!r}")


#: Deployment of the client and of the worker processes of W2P (they must agree).
BENCH_DEPLOYMENT = "bench"
HERE = Path(__file__).resolve().parent


@contextmanager
def session(db_dir: Path, world_url: str | None = None, workload: str = "") -> Iterator[None]:
    """A configured tether on `world_url` (default: SQLite at `db_dir/tether.db`).

    Every workload but W2P gets an in-process worker; W2P starts worker processes itself.
    """
    os.environ["TETHER_DEPLOYMENT_ID"] = BENCH_DEPLOYMENT
    tether.configure(world=world_url or f"sqlite:///{(db_dir / 'tether.db').resolve()}")
    with ExitStack() as stack:
        if workload != "W2P":
            stack.enter_context(tether.Worker())
        yield


# --- workloads -----------------------------------------------------------------------------------


def w1_latency(counts: Counts, deadline: Deadline) -> Metrics:
    """Start one 3-step workflow and wait for it, one after another."""
    samples: list[float] = []
    for i in range(counts.w1_warmup + counts.w1_measured):
        t0 = time.perf_counter()
        result = start(three_steps, [i]).result(timeout=deadline.left())
        elapsed = time.perf_counter() - t0
        expect(result, i + 3, "three_steps")
        if i >= counts.w1_warmup:
            samples.append(elapsed)
    return latency_metrics(samples)


def w2_throughput(counts: Counts, deadline: Deadline) -> Metrics:
    """Start all 3-step workflows in a loop, then wait for every result."""
    n = counts.w2_workflows
    t0 = time.perf_counter()
    runs = [start(three_steps, [i]) for i in range(n)]
    started = time.perf_counter()
    for i, run in enumerate(runs):
        expect(run.result(timeout=deadline.left()), i + 3, "three_steps")
    total = time.perf_counter() - t0
    return {
        "n": n,
        "wf_per_s": round(n / total, 2),
        "total_s": round(total, 3),
        "start_all_s": round(started - t0, 3),
    }


@contextmanager
def worker_processes(count: int, log_dir: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """`count` `tether worker workloads_tether` processes, each with its own asyncio loop."""
    procs: list[subprocess.Popen[bytes]] = []
    logs = [open(log_dir / f"worker-{i}.log", "wb") for i in range(count)]  # noqa: SIM115
    try:
        for log in logs:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "tether", "worker", "workloads_tether"],
                    cwd=HERE,
                    env={
                        **os.environ,
                        "PYTHONPATH": str(HERE)
                        + os.pathsep
                        + os.environ.get("TETHER_EXTRA_PATH", ""),
                        "TETHER_WORLD": tether.config.world_url(),
                    },
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        for i, proc in enumerate(procs):
            while b" ready: deployment " not in (log_dir / f"worker-{i}.log").read_bytes():
                if proc.poll() is not None:
                    raise RuntimeError(f"worker process {i} exited early")
                time.sleep(0.05)
        yield procs
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        for log in logs:
            log.close()


def busy_cpu_seconds() -> float:
    """CPU seconds this machine has spent busy (all processes, all cores) since boot."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle and iowait
    return (sum(fields) - idle) / os.sysconf("SC_CLK_TCK")


def w2_processes(counts: Counts, deadline: Deadline) -> Metrics:
    """W2 served by 1, then 4 worker processes; this process only starts runs and waits.

    Also records how many of the machine's cores were busy during each pass (every
    process: client, workers, database server), which bounds what more workers can add.
    """
    log_dir = Path(os.environ.get("TETHER_BENCH_LOG_DIR", "."))
    rates: dict[int, float] = {}
    busy: dict[int, float] = {}
    for workers in (1, 4):
        with worker_processes(workers, log_dir):
            cpu0, t0 = busy_cpu_seconds(), time.perf_counter()
            rates[workers] = float(w2_throughput(counts, deadline)["wf_per_s"])
            busy[workers] = (busy_cpu_seconds() - cpu0) / (time.perf_counter() - t0)
    return {
        "n": counts.w2_workflows,
        "wf_per_s_1": rates[1],
        "wf_per_s_4": rates[4],
        "speedup_4_over_1": round(rates[4] / rates[1], 2),
        "cores_busy_1": round(busy[1], 2),
        "cores_busy_4": round(busy[4], 2),
        "cores": os.cpu_count() or 0,
    }


def w3_timers(counts: Counts, deadline: Deadline) -> Metrics:
    """Many concurrent durable sleeps; lateness = woke up - (before sleeping + duration)."""
    seconds = counts.w3_sleep_s
    runs = [start(sleeper, [seconds]) for _ in range(counts.w3_workflows)]
    late: list[float] = []
    for run in runs:
        before, after = run.result(timeout=deadline.left())
        late.append(after - (before + seconds))
    return {"sleep_s": seconds, **latency_metrics(late)}


def w5_fan_out(counts: Counts, deadline: Deadline) -> Metrics:
    """One workflow starting children and awaiting all of their results."""
    n = counts.w5_children
    t0 = time.perf_counter()
    total = start(fan_parent, [n, deadline.left()]).result(timeout=deadline.left())
    elapsed = time.perf_counter() - t0
    expect(total, sum(range(1, n + 1)), "fan_parent")
    return {"children": n, "total_s": round(elapsed, 3)}


def w6_long_chain(counts: Counts, deadline: Deadline) -> Metrics:
    """One workflow of many sequential steps; compares early and late per-step cost."""
    t0 = time.perf_counter()
    stamps = start(step_chain, [counts.w6_steps]).result(timeout=deadline.left())
    elapsed = time.perf_counter() - t0
    expect(len(stamps), counts.w6_steps, "step_chain length")
    return {"total_s": round(elapsed, 3), **step_time_metrics(stamps, counts.w6_window)}


WORKLOADS: dict[str, Callable[[Counts, Deadline], Metrics]] = {
    "W1": w1_latency,
    "W2": w2_throughput,
    "W2P": w2_processes,
    "W3": w3_timers,
    "W5": w5_fan_out,
    "W6": w6_long_chain,
}
