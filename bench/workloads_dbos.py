"""DBOS side of the workloads: DBOS defaults, except for the system database (SQLite or Postgres).

DBOS 3.4.0 takes SQLite through the system database URL of its config dict:
`DBOS(config={"name": ..., "system_database_url": "sqlite:////abs/path.sqlite"})`, then
`DBOS.launch()`; on PostgreSQL the URL is `postgresql://...` instead. Everything else
(executor threads, polling intervals, pool size) is left as is.
Only imported by run.py's child process for engine "dbos".
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from concurrent.futures import wait as wait_futures
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from dbos import DBOS, DBOSConfig, WorkflowHandle

from common import Counts, Deadline, Metrics, latency_metrics, step_time_metrics

R = TypeVar("R")


# --- workflows (module level, registered with DBOS at import) ---------------------------------


@DBOS.step()
def add_one(x: int) -> int:
    """The trivial step of W1, W2 and W5."""
    return x + 1


@DBOS.workflow()
def three_steps(x: int) -> int:
    """W1/W2: three trivial steps in a row."""
    return add_one(add_one(add_one(x)))


@DBOS.step()
def now() -> float:
    """Wall-clock time, taken inside a step."""
    return time.time()


@DBOS.workflow()
def sleeper(seconds: float) -> list[float]:
    """W3: time before a durable sleep and after waking up."""
    before = now()
    DBOS.sleep(seconds)
    after = now()
    return [before, after]


@DBOS.workflow()
def fan_child(i: int) -> int:
    """W5 child: one step."""
    return add_one(i)


@DBOS.workflow()
def fan_parent(n: int, budget_s: float) -> int:
    """W5 parent: start n children from the workflow, then wait for every result."""
    deadline = Deadline(budget_s)
    handles = [DBOS.start_workflow(fan_child, i) for i in range(n)]
    return sum(wait_result(h, deadline) for h in handles)


@DBOS.workflow()
def step_chain(n: int) -> list[float]:
    """W6: n sequential steps, each returning the time it ran at."""
    return [now() for _ in range(n)]


# --- helpers -------------------------------------------------------------------------------------


def wait_result(handle: WorkflowHandle[R], deadline: Deadline) -> R:
    """`handle.get_result()` bounded by the deadline (DBOS's get_result takes no timeout).

    Handles of workflows started in this process wrap a concurrent Future: wait on it with a
    timeout, then get_result() returns at once (and, inside a workflow, is checkpointed as usual).
    Any other handle falls back to a plain get_result(), bounded by run.py's child timeout.
    """
    future: Any = getattr(handle, "future", None)
    if isinstance(future, Future):
        done, _ = wait_futures([future], timeout=deadline.left())
        if not done:
            raise TimeoutError(f"workflow {handle.get_workflow_id()} did not finish in time")
    return handle.get_result()


def expect(got: object, want: object, what: str) -> None:
    """Fail the workload loudly if an engine returned a wrong result."""
    if got != want:
        raise RuntimeError(f"{what}: expected {want!r}, got {got!r}")


@contextmanager
def session(db_dir: Path, world_url: str | None = None, workload: str = "") -> Iterator[None]:
    """A launched DBOS whose system database is `world_url` (default `db_dir/dbos.sqlite`)."""
    config: DBOSConfig = {
        "name": "tether-bench",
        "system_database_url": world_url or f"sqlite:///{(db_dir / 'dbos.sqlite').resolve()}",
    }
    DBOS(config=config)
    DBOS.launch()
    try:
        yield
    finally:
        DBOS.destroy()


# --- workloads -----------------------------------------------------------------------------------


def w1_latency(counts: Counts, deadline: Deadline) -> Metrics:
    """Start one 3-step workflow and wait for it, one after another."""
    samples: list[float] = []
    for i in range(counts.w1_warmup + counts.w1_measured):
        t0 = time.perf_counter()
        result = wait_result(DBOS.start_workflow(three_steps, i), deadline)
        elapsed = time.perf_counter() - t0
        expect(result, i + 3, "three_steps")
        if i >= counts.w1_warmup:
            samples.append(elapsed)
    return latency_metrics(samples)


def w2_throughput(counts: Counts, deadline: Deadline) -> Metrics:
    """Start all 3-step workflows in a loop, then wait for every result."""
    n = counts.w2_workflows
    t0 = time.perf_counter()
    handles = [DBOS.start_workflow(three_steps, i) for i in range(n)]
    started = time.perf_counter()
    for i, handle in enumerate(handles):
        expect(wait_result(handle, deadline), i + 3, "three_steps")
    total = time.perf_counter() - t0
    return {
        "n": n,
        "wf_per_s": round(n / total, 2),
        "total_s": round(total, 3),
        "start_all_s": round(started - t0, 3),
    }


def w3_timers(counts: Counts, deadline: Deadline) -> Metrics:
    """Many concurrent durable sleeps; lateness = woke up - (before sleeping + duration)."""
    seconds = counts.w3_sleep_s
    handles = [DBOS.start_workflow(sleeper, seconds) for _ in range(counts.w3_workflows)]
    late: list[float] = []
    for handle in handles:
        before, after = wait_result(handle, deadline)
        late.append(after - (before + seconds))
    return {"sleep_s": seconds, **latency_metrics(late)}


def w5_fan_out(counts: Counts, deadline: Deadline) -> Metrics:
    """One workflow starting children and awaiting all of their results."""
    n = counts.w5_children
    t0 = time.perf_counter()
    total = wait_result(DBOS.start_workflow(fan_parent, n, deadline.left()), deadline)
    elapsed = time.perf_counter() - t0
    expect(total, sum(range(1, n + 1)), "fan_parent")
    return {"children": n, "total_s": round(elapsed, 3)}


def w6_long_chain(counts: Counts, deadline: Deadline) -> Metrics:
    """One workflow of many sequential steps; compares early and late per-step cost."""
    t0 = time.perf_counter()
    stamps = wait_result(DBOS.start_workflow(step_chain, counts.w6_steps), deadline)
    elapsed = time.perf_counter() - t0
    expect(len(stamps), counts.w6_steps, "step_chain length")
    return {"total_s": round(elapsed, 3), **step_time_metrics(stamps, counts.w6_window)}


WORKLOADS: dict[str, Callable[[Counts, Deadline], Metrics]] = {
    "W1": w1_latency,
    "W2": w2_throughput,
    "W3": w3_timers,
    "W5": w5_fan_out,
    "W6": w6_long_chain,
}
