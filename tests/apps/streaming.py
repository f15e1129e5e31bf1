"""Workflows that write streams, served by worker processes in the tests."""

from __future__ import annotations

import time
from pathlib import Path

import tether
from tether import StreamHandle, step, workflow


@step
def tick(stream: StreamHandle, gate: str, count: int) -> int:
    """Write the first tick, wait for the test to open the gate, write the rest, close."""
    stream.write({"tick": 0})
    deadline = time.monotonic() + 20
    while not Path(gate).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    for i in range(1, count):
        stream.write({"tick": i})
    stream.close()
    return count


@workflow
async def ticker(gate: str, count: int) -> int:
    return int(await tick(tether.get_writable(), gate, count))


@workflow
async def writes_in_workflow() -> None:
    tether.get_writable().write("not from a step")


@step
def note(stream: StreamHandle, text: str) -> None:
    stream.write(text)


@step
def hand_over(stream: StreamHandle) -> str:
    return tether.start(never_closes, [stream, False]).run_id


@workflow
async def never_closes(stream: StreamHandle | None = None, first: bool = True) -> str | None:
    """Writes to a stream it never closes, once in this run and once in a continuation."""
    handle = stream if stream is not None else tether.get_writable()
    await note(handle, "first run" if first else "continuation")
    return await hand_over(handle) if first else None
