"""Testing your workflows: an environment on a virtual clock, and replay tests.

``TetherEnv`` (the pytest fixture ``tether_env``) runs the real engine on a
real World of its own, with a virtual clock: whenever every run in it waits
only on time (sleeps, retry backoff, ``retry_after``), the clock jumps to
the next deadline at once, so a two-day sleep takes no time::

    def test_the_order_is_charged_after_two_days(tether_env):
        run = tether_env.start(fulfill_order, ["o-1", 4599])
        assert tether_env.result(run)["charged"] == 4599

Keep a few histories of real runs as fixtures (``tether inspect events RUN
--export FILE``, or ``export_history``) and replay them in CI::

    from tether.testing import replay
    from shop.workflows import fulfill_order

    def test_in_flight_orders_still_replay():
        replay("tests/histories/order-o-1.json", fulfill_order)

Replay tests: ``replay`` runs the same replay as ``tether deployments check``: no step
runs, every answer comes from the history. It raises
``NonDeterminismError`` at the first request the code makes differently
from the history (its position, what the history holds, what the code
asked for), so the deploy that would break in-flight runs fails in CI.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from tether import api, config
from tether.clock import ManualClock
from tether.config import resolve_world
from tether.durations import Duration, seconds_until
from tether.errors import InvalidValueError, NonDeterminismError, RunNotFoundError
from tether.handles import Run
from tether.readers import get_readable
from tether.registry import Step, Workflow
from tether.runtime.check import RunCheck, check_run
from tether.runtime.worker import Worker
from tether.worlds import open_world
from tether.worlds.base import World
from tether.worlds.records import EventRecord, RunFilter, RunRecord, StepRecord

#: Where a test environment's virtual clock starts: 2027-01-15 08:00 UTC.
VIRTUAL_START = 1_800_000_000.0
#: Real seconds between two looks at whether every run waits only on time.
_LOOK_EVERY = 0.005

#: What a history file says it is, and the versions of it this tether reads.
FORMAT = "tether-history"
VERSIONS = (1,)


@dataclasses.dataclass(frozen=True)
class History:
    """A run and its event log, as recorded."""

    run: RunRecord
    events: list[EventRecord]


def export_history(
    run_id: str, path: str | Path | None = None, *, world: World | str | None = None
) -> dict[str, Any]:
    """The run's history as a versioned JSON document, written to ``path`` when given."""
    target = resolve_world(world)
    record = target.get_run(run_id)
    if record is None:
        raise RunNotFoundError(f"no run {run_id!r}: nothing to export")
    document = {
        "format": FORMAT,
        "version": VERSIONS[-1],
        "run": dataclasses.asdict(record),
        "events": [dataclasses.asdict(e) for e in target.list_events(run_id)],
    }
    if path is not None:
        # ASCII JSON: a NUL or a lone surrogate in a payload travels escaped.
        Path(path).write_text(json.dumps(document, indent=1) + "\n")
    return document


def load_history(source: str | Path | dict[str, Any] | History) -> History:
    """A history from a file written by ``export_history``, or from its document."""
    if isinstance(source, History):
        return source
    document = json.loads(Path(source).read_text()) if not isinstance(source, dict) else source
    where = source if not isinstance(source, dict) else "the document"
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise InvalidValueError(
            f'{where} is not a tether history (expected "format": {FORMAT!r}): write one'
            " with tether inspect events RUN --export FILE"
        )
    version = document.get("version")
    if version not in VERSIONS:
        raise InvalidValueError(
            f"{where} is a tether history of version {version!r}; this tether reads versions"
            f" {', '.join(map(str, VERSIONS))}: export it again with this tether"
        )
    run = RunRecord(**document["run"])
    events = [EventRecord(**e) for e in document["events"]]
    return History(run, events)


def replay(
    history: str | Path | dict[str, Any] | History, workflow: Workflow[..., Any]
) -> RunCheck:
    """Replay ``history`` against ``workflow`` as the current code defines it.

    Returns the check (``replays``) when the code asks for every recorded
    request as recorded; raises ``NonDeterminismError`` naming the first
    position where it does not, or why the run could not move to this code
    at all (its arguments no longer fit, the code raises where it is).
    """
    loaded = load_history(history)
    found = check_run(loaded.run, loaded.events, workflow)
    if found.verdict != "replays":
        raise NonDeterminismError(
            f"the history of run {loaded.run.run_id} does not replay on this code"
            f" ({found.verdict}): {found.reason}"
        )
    return found


class TetherEnv:
    """The real engine on a World of its own, with a virtual clock that skips waiting.

    ``url`` names the World (a fresh SQLite file, or a PostgreSQL URL with a
    fresh ``?schema=``). Inside ``with TetherEnv(url) as env`` the process's
    default World is this one and an in-process worker serves the workflows
    the test imported. With ``auto_advance`` (the default) the clock jumps
    to the next deadline whenever every run in flight waits only on time;
    ``advance("2d")`` moves it by hand. Runs, steps and the event log are the
    real ones: read them with the helpers or ``tether``'s own calls.
    """

    def __init__(self, url: str, *, start: float = VIRTUAL_START, auto_advance: bool = True):
        self.url = url
        self.clock = ManualClock(start)
        self.auto_advance = auto_advance
        self.world: World = open_world(url, clock=self.clock)
        self._worker = Worker(world=self.world, lease_seconds=60.0, drain_timeout=5.0)
        self._stop = threading.Event()
        self._skipper: threading.Thread | None = None
        self._previous_url: str | None = None

    def __enter__(self) -> TetherEnv:
        self._previous_url = config.configured_url()
        config.adopt(self.world)
        config.configure(self.world.url)
        self._worker.start()
        if self.auto_advance:
            self._skipper = threading.Thread(
                target=self._skip_time, name="tether-testing-clock", daemon=True
            )
            self._skipper.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._skipper is not None:
            self._skipper.join(timeout=5)
        self._worker.stop()
        config.configure(self._previous_url)
        config.close(self.world.url)
        self.world.close()

    # -- time ---------------------------------------------------------------------

    def now(self) -> float:
        """The virtual time, in seconds since the epoch (what ``tether.now()`` reads)."""
        return self.clock.time()

    def advance(self, duration: Duration) -> None:
        """Move the virtual clock forward by ``duration`` (``"2d"``, seconds, a timedelta)."""
        self.clock.advance(seconds_until(duration, self.clock.time()))

    def _skip_time(self) -> None:
        while not self._stop.wait(_LOOK_EVERY):
            with contextlib.suppress(Exception):  # a World closing under it: the next look
                deadline = self.next_deadline()
                if deadline is not None and deadline > self.clock.time():
                    self.clock.advance(deadline - self.clock.time())

    def next_deadline(self) -> float | None:
        """The next time a run is waiting for, when every run in flight waits only on time.

        ``None`` while any run has work to do now, or waits on something else
        (a hook's payload): then the clock stays where it is.
        """
        now = self.clock.time()
        runs = [
            r
            for status in ("pending", "running")
            for r in self.world.list_runs(RunFilter(status=status, limit=1000))
        ]
        earliest: float | None = None
        for run in runs:
            steps = self.world.list_steps(run.run_id)
            if any(s.status in ("pending", "running") for s in steps):
                return None
            timers = [s.retry_at for s in steps if s.status == "retrying" and s.retry_at]
            timers += [
                w.resume_at for w in self.world.list_waits(run.run_id) if w.status == "waiting"
            ]
            if not timers or min(timers) <= now:
                return None  # due now, or waiting on something other than time
            earliest = min(timers) if earliest is None else min(earliest, min(timers))
        return earliest

    # -- runs ---------------------------------------------------------------------

    def start(self, workflow: Workflow[..., Any] | str, args: Sequence[Any] = (), **kw: Any) -> Run:
        """``tether.start`` on this environment's World."""
        return api.start(workflow, args, world=self.world, **kw)

    def result(self, run: Run, timeout: float = 30.0) -> Any:
        """The run's result, waiting at most ``timeout`` real seconds (virtual time skips)."""
        return run.result(timeout=timeout)

    def resume_hook(self, token: str, payload: Any = None) -> str:
        """Deliver ``payload`` to the hook with ``token``; returns its run id."""
        return api.resume_hook(token, payload, world=self.world)

    def wake(self, run: Run) -> int:
        """End the run's pending sleeps now; how many there were."""
        return self.world.wake_sleeps(run.run_id)

    def read_stream(self, run: Run, namespace: str | None = None) -> list[Any]:
        """Every chunk of the run's stream, once it is closed or its runs have ended."""
        return list(get_readable(run.run_id, namespace, world=self.world))

    def events(self, run: Run) -> list[EventRecord]:
        """The run's event log."""
        return self.world.list_events(run.run_id)

    def steps(self, run: Run) -> list[StepRecord]:
        """The run's steps, in the order it asked for them."""
        return self.world.list_steps(run.run_id)

    def attempts(self, run: Run, step: Step[..., Any]) -> int:
        """How many times ``step`` was attempted in the run, all its calls together."""
        calls = {
            e.correlation_id
            for e in self.events(run)
            if e.type == "step_created" and e.name == step.name
        }
        return sum(
            1 for e in self.events(run) if e.type == "step_started" and e.correlation_id in calls
        )

    def assert_step_ran(self, run: Run, step: Step[..., Any], times: int) -> None:
        """Fail unless ``step`` was attempted exactly ``times`` times in the run."""
        found = self.attempts(run, step)
        assert found == times, f"{step.name} ran {found} times in run {run.run_id}, not {times}"

    def assert_waiting_on_hook(self, run: Run, token: str) -> None:
        """Fail unless the run is in flight with an active hook of ``token``."""
        active = [h.token for h in run.hooks() if h.status == "active"]
        assert run.status() in ("pending", "running") and token in active, (
            f"run {run.run_id} is {run.status()}, its active hooks are {active}, not {token!r}"
        )

    @contextlib.contextmanager
    def replace_step(self, step: Step[..., Any], fake: Callable[..., Any]) -> Iterator[None]:
        """Within the block, ``step`` runs ``fake`` (a fake payment, say) instead of its code."""
        was = (step.fn, step.is_async)
        step.fn, step.is_async = fake, inspect.iscoroutinefunction(fake)
        try:
            yield
        finally:
            step.fn, step.is_async = was


__all__ = [
    "FORMAT",
    "VERSIONS",
    "History",
    "TetherEnv",
    "export_history",
    "load_history",
    "replay",
]
