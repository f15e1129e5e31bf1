"""The manual clock that tests step instead of waiting."""

from __future__ import annotations

import asyncio
import threading

import pytest

from tether.clock import SYSTEM_CLOCK, ManualClock


def test_it_moves_only_when_advanced() -> None:
    clock = ManualClock(start=100.0)
    assert clock.time() == 100.0
    clock.advance(2.5)
    assert clock.time() == 102.5


def test_it_cannot_go_back() -> None:
    with pytest.raises(ValueError, match="cannot go back"):
        ManualClock().advance(-1)


def test_a_sleep_ends_when_the_clock_passes_its_deadline() -> None:
    clock = ManualClock(start=0.0)

    async def main() -> list[str]:
        order: list[str] = []

        async def sleeper(name: str, seconds: float) -> None:
            await clock.sleep(seconds)
            order.append(name)

        tasks = [asyncio.ensure_future(sleeper("b", 20)), asyncio.ensure_future(sleeper("a", 10))]
        await asyncio.sleep(0)
        clock.advance(5)
        await asyncio.sleep(0)
        assert order == []
        clock.advance(5)
        await asyncio.wait_for(tasks[1], 1.0)
        assert order == ["a"]
        clock.advance(10)
        await asyncio.wait_for(tasks[0], 1.0)
        return order

    assert asyncio.run(main()) == ["a", "b"]


def test_a_sleep_is_woken_from_another_thread() -> None:
    clock = ManualClock(start=0.0)

    async def main() -> float:
        sleeping = asyncio.ensure_future(clock.sleep(60))
        await asyncio.sleep(0)
        threading.Thread(target=clock.advance, args=(60,)).start()
        await asyncio.wait_for(sleeping, 5.0)
        return clock.time()

    assert asyncio.run(main()) == 60.0


def test_a_sleep_of_nothing_returns_at_once() -> None:
    asyncio.run(asyncio.wait_for(ManualClock().sleep(0), 1.0))


def test_the_system_clock_is_real_time() -> None:
    import time

    before = time.time()
    assert before <= SYSTEM_CLOCK.time() <= time.time()
