"""A deterministic asyncio event loop for workflow code.

User code keeps using plain ``asyncio.gather``, ``asyncio.create_task`` and
``asyncio.wait``: they only need futures, tasks and ``call_soon``. The loop
runs ready callbacks in the order they were scheduled and has no clock of
its own, so the same events fed in the same order always produce the same
run. Durable sleeps (``tether.sleep``) are its only notion of time.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections import deque
from collections.abc import Callable, Coroutine, Generator
from typing import Any, NoReturn, TypeVar

from tether.errors import ContextError

T = TypeVar("T")

_NOT_DURABLE = (
    "asyncio timers are not durable inside a workflow: use `await tether.sleep(...)`, and "
    "asyncio.wait(..., return_when=FIRST_COMPLETED) against a tether.sleep for timeouts"
)


class WorkflowLoop(asyncio.AbstractEventLoop):
    """Runs one run's workflow code; ``run_ready`` drains it until it suspends."""

    def __init__(self) -> None:
        self._ready: deque[asyncio.Handle] = deque()
        self._running = False
        self._closed = False
        self.errors: list[dict[str, Any]] = []
        #: Seconds since the epoch of the event being applied: the only clock.
        self.clock = 0.0
        #: A ``time.monotonic()`` past which ``run_ready`` gives up (``None``: never).
        self.deadline: float | None = None

    def run_ready(self) -> None:
        """Run scheduled callbacks until nothing is ready (the code awaits events).

        Raises ``TimeoutError`` past ``deadline``: workflow code that never
        suspends (``while True: await asyncio.sleep(0)``) would run forever.
        """
        outer = asyncio.events._get_running_loop()
        asyncio.events._set_running_loop(self)
        self._running = True
        ran = 0
        try:
            while self._ready:
                handle = self._ready.popleft()
                if not handle._cancelled:
                    handle._run()
                ran += 1
                if (
                    self.deadline is not None
                    and ran % 256 == 0
                    and time.monotonic() > self.deadline
                ):
                    raise TimeoutError("the workflow code did not suspend before the deadline")
        finally:
            self._running = False
            asyncio.events._set_running_loop(outer)

    # -- the part of the loop API that futures and tasks use ---------------

    def call_soon(  # type: ignore[override]
        self,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.Handle:
        handle = asyncio.Handle(callback, args, self, context)
        self._ready.append(handle)
        return handle

    def create_future(self) -> asyncio.Future[Any]:
        return asyncio.Future(loop=self)

    def create_task(  # type: ignore[override]
        self,
        coro: Coroutine[Any, Any, T] | Generator[Any, None, T],
        *,
        name: str | None = None,
        context: contextvars.Context | None = None,
    ) -> asyncio.Task[T]:
        return asyncio.Task(coro, loop=self, name=name, context=context)

    def time(self) -> float:
        return self.clock

    def get_debug(self) -> bool:
        return False

    def is_running(self) -> bool:
        return self._running

    def is_closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        self._closed = True
        self._ready.clear()

    def call_exception_handler(self, context: dict[str, Any]) -> None:
        self.errors.append(context)

    def default_exception_handler(self, context: dict[str, Any]) -> None:
        self.errors.append(context)

    # -- what workflow code must not do ------------------------------------

    def call_later(self, *args: Any, **kwargs: Any) -> NoReturn:  # type: ignore[override]
        raise ContextError(_NOT_DURABLE)

    def call_at(self, *args: Any, **kwargs: Any) -> NoReturn:  # type: ignore[override]
        raise ContextError(_NOT_DURABLE)

    def call_soon_threadsafe(self, *args: Any, **kwargs: Any) -> NoReturn:  # type: ignore[override]
        raise ContextError("workflow code runs on its own deterministic loop; no threads")

    def run_in_executor(self, *args: Any, **kwargs: Any) -> NoReturn:  # type: ignore[override]
        raise ContextError(
            "workflow code cannot run blocking work: move it into a @step (def steps run "
            "in a thread pool)"
        )
