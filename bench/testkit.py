"""How long tests take under ``tether.testing.TetherEnv`` (issue 16's benchmark).

The README's order workflow with its two-day sleep, and a step that fails
twice with 60 s of ``retry_after`` each, run in a fresh environment (a new
SQLite file or PostgreSQL schema, an in-process worker, the virtual clock)
REPEAT times each; the wall time of each whole test (environment made,
run, result, environment closed) is measured. tether only. Writes
``TESTKIT-RESULTS.md``.

    .venv/bin/python testkit.py [--repeat 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg

import tether
from tether import RetryableError, step, workflow
from tether.testing import TetherEnv

HERE = Path(__file__).resolve().parent
POSTGRES = os.environ.get("TETHER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
_calls: dict[str, int] = {}


@step
def reserve(order_id: str) -> str:
    return f"reserved {order_id}"


@step
def charge(order_id: str, cents: int) -> int:
    return cents


@workflow
async def fulfill_order(order_id: str, cents: int) -> int:
    await reserve(order_id)
    await tether.sleep("2d")
    return await charge(order_id, cents)


@step(max_retries=3)
def flaky(key: str) -> str:
    _calls[key] = _calls.get(key, 0) + 1
    if _calls[key] <= 2:
        raise RetryableError("busy", retry_after="60s")
    return "ok"


@workflow
async def retried(key: str) -> str:
    return await flaky(key)


def order_test(env: TetherEnv) -> None:
    assert env.result(env.start(fulfill_order, ["o-1", 4599])) == 4599


def retry_test(env: TetherEnv) -> None:
    assert env.result(env.start(retried, [uuid.uuid4().hex])) == "ok"


def timed(test: Callable[[TetherEnv], None], url: Callable[[], str], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        with TetherEnv(url()) as env:
            test(env)
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    os.environ["TETHER_DEPLOYMENT_ID"] = "testkit-bench"
    rows = []
    with tempfile.TemporaryDirectory(prefix="tether-testkit-") as tmp:
        schemas: list[str] = []

        def sqlite() -> str:
            return f"sqlite:///{tmp}/{uuid.uuid4().hex}.db"

        def postgres() -> str:
            schemas.append(f"testkit_{uuid.uuid4().hex[:10]}")
            return f"{POSTGRES}?schema={schemas[-1]}"

        try:
            for name, url in (("SQLite", sqlite), ("PostgreSQL", postgres)):
                for label, test in (
                    ("order, 2-day sleep", order_test),
                    ("3 attempts, 2x60 s backoff", retry_test),
                ):
                    times = timed(test, url, args.repeat)
                    rows.append((name, label, statistics.median(times), max(times)))
        finally:
            with psycopg.connect(POSTGRES, autocommit=True) as conn:
                for schema in schemas:
                    conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    lines = [
        "# tether.testing: the wall time of a test under TetherEnv",
        "",
        f"`bench/testkit.py --repeat {args.repeat}`: each test makes a fresh environment (World,"
        " in-process worker, virtual clock), runs one workflow to its result, and closes it;"
        f" {os.cpu_count()} cores. Written by `testkit.py`.",
        "",
        "| World | test | p50 | max |",
        "|---|---|---|---|",
        *[f"| {w} | {t} | {p50 * 1000:.0f} ms | {mx * 1000:.0f} ms |" for w, t, p50, mx in rows],
        "",
    ]
    text = "\n".join(lines)
    (HERE / "TESTKIT-RESULTS.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
