"""Workflows served by worker processes in the integration tests.

Steps append a line to a marks file (its path is an argument) so that a test
can count how often each step really ran, whichever process ran it.
"""

from __future__ import annotations

import os
import time

import tether
from tether import step, workflow


def mark(path: str, text: str) -> None:
    """Append one line atomically (O_APPEND), visible to the test process."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{text} {os.getpid()}\n".encode())
    finally:
        os.close(fd)


@step
def record(path: str, label: str) -> str:
    mark(path, label)
    return label


@step
def slow_record(path: str, label: str, seconds: float) -> str:
    mark(path, f"{label}-start")
    time.sleep(seconds)
    mark(path, label)
    return label


@workflow
async def sleepy(path: str, seconds: float) -> list[str]:
    first = await record(path, "first")
    await tether.sleep(seconds)
    second = await record(path, "second")
    return [first, second]


@step
def record_slowly(path: str, label: str, seconds: float) -> str:
    time.sleep(seconds)
    mark(path, label)
    return label


@workflow
async def three_marks(path: str, run_key: str, seconds: float = 0.0) -> int:
    for i in range(3):
        await record_slowly(path, f"{run_key}:{i}", seconds)
    return 3


@workflow
async def interrupted(path: str, seconds: float) -> str:
    return str(await slow_record(path, "slow", seconds))
