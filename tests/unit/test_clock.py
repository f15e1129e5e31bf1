"""Clocks: the real one, and the manual one tests step instead of waiting."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from tether.clock import SYSTEM_CLOCK, ManualClock, SystemClock


def test_the_system_clock_is_real_time() -> None:
    before = time.time()
    now = SYSTEM_CLOCK.time()
    assert before <= now <= time.time()
    assert isinstance(SYSTEM_CLOCK, SystemClock)

    async def nap() -> float:
        began = time.monotonic()
        await SYSTEM_CLOCK.sleep(0.02)
        return time.monotonic() - began

    assert asyncio.run(nap()) >= 0.02


def test_a_manual_clock_moves_only_when_advanced() -> None:
    clock = ManualClock(start=100.0)
    assert clock.time() == 100.0
    clock.advance(0)
    clock.advance(2.5)
    assert clock.time() == 102.5
    with pytest.raises(ValueError, match=r"a clock cannot go back: advance\(-1\)"):
        clock.advance(-1)
    assert clock.time() == 102.5
    assert ManualClock().time() == 1_700_000_000.0


def test_a_sleep_ends_when_the_clock_reaches_its_deadline() -> None:
    clock = ManualClock(start=0.0)
    woke: list[float] = []

    async def sleeper() -> None:
        await clock.sleep(10)
        woke.append(clock.time())

    async def main() -> None:
        task = asyncio.create_task(sleeper())
        await asyncio.sleep(0)  # the sleep is registered
        clock.advance(9.5)
        for _ in range(3):  # a wake-up would be scheduled by now: it takes two loop turns
            await asyncio.sleep(0)
        assert woke == [] and not task.done()
        clock.advance(0.5)
        await asyncio.wait_for(task, timeout=5)

    asyncio.run(main())
    assert woke == [10.0]


def test_a_sleep_of_nothing_returns_at_once() -> None:
    clock = ManualClock(start=0.0)

    async def main() -> None:
        await asyncio.wait_for(clock.sleep(0), timeout=1)
        await asyncio.wait_for(clock.sleep(-3), timeout=1)

    asyncio.run(main())
    assert clock.time() == 0.0


def test_advance_from_another_thread_wakes_sleeps_on_their_loops() -> None:
    clock = ManualClock(start=0.0)
    waiting = threading.Event()
    done: list[str] = []

    def loop_thread(name: str, seconds: float) -> None:
        async def main() -> None:
            sleep = asyncio.ensure_future(clock.sleep(seconds))
            await asyncio.sleep(0)
            waiting.set()
            await asyncio.wait_for(sleep, timeout=10)
            done.append(name)

        asyncio.run(main())

    threads = [threading.Thread(target=loop_thread, args=(n, s)) for n, s in (("a", 1), ("b", 3))]
    for thread in threads:
        waiting.clear()
        thread.start()
        assert waiting.wait(5)
    clock.advance(1)
    threads[0].join(5)
    assert done == ["a"]
    clock.advance(2)
    threads[1].join(5)
    assert done == ["a", "b"]


def test_a_cancelled_sleep_is_forgotten() -> None:
    clock = ManualClock(start=0.0)

    async def main() -> None:
        sleep = asyncio.ensure_future(clock.sleep(5))
        await asyncio.sleep(0)
        sleep.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sleep

    asyncio.run(main())
    clock.advance(10)  # nothing left to wake: no loop is called
    assert clock.time() == 10.0


def test_a_sleep_whose_loop_has_closed_is_skipped() -> None:
    clock = ManualClock(start=0.0)
    loop = asyncio.new_event_loop()
    sleep = loop.create_task(clock.sleep(1))
    loop.run_until_complete(asyncio.sleep(0))  # registered, waiting
    loop.close()
    clock.advance(1)  # does not call the closed loop
    assert not sleep.done()
