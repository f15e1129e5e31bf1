"""Every mistake a user can make through the public API raises a ``TetherError``.

Each also subclasses the builtin a Python user would catch (``ValueError``,
``TypeError``, ``LookupError``, ``RuntimeError``), and its message names the
bad value and how to put it right.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import tether
from tether import serde
from tether.clock import ManualClock
from tether.worlds import open_world


@tether.workflow
async def order(order_id: str, cents: int) -> str:
    return f"{order_id}:{cents}"


def _sleep_bad() -> object:
    return asyncio.run(_awaited(tether.sleep("soon")))


async def _awaited(awaitable: Any) -> object:
    return await awaitable


def _plain_def_workflow() -> object:
    def not_async() -> None: ...

    return tether.workflow(not_async)  # type: ignore[arg-type]


def _closed_world(tmp_path: Path) -> object:
    world = open_world(f"sqlite:///{tmp_path / 'closed.db'}")
    world.close()
    return world.cancel_runs(["run_x"])


#: (what the user did, the builtin it is also, text the message must hold)
MISTAKES: list[tuple[str, Callable[..., object], type[Exception], str]] = [
    ("start(print)", lambda: tether.start(print, []), TypeError, "@tether.workflow"),
    ("args not a list", lambda: tether.start(order, "o-1"), TypeError, "as a list"),
    ("args do not fit", lambda: tether.start(order, ["o-1"]), TypeError, "(order_id, cents)"),
    ("a bad workflow name", lambda: tether.start("order", []), ValueError, "workflow//<module>"),
    ("a bad run id", lambda: tether.start(order, ["o", 1], run_id="a b"), ValueError, "'a b'"),
    ("a bad status", lambda: tether.list_runs(status="done"), ValueError, "'done'"),
    ("a bad limit", lambda: tether.list_runs(limit=-1), ValueError, "-1"),
    (
        "cancel ended runs",
        lambda: tether.cancel_runs(status="completed"),
        ValueError,
        "'completed' have ended",
    ),
    ("an unknown run", lambda: tether.get_run("run_nope"), LookupError, "'run_nope'"),
    ("an unknown hook", lambda: tether.resume_hook("nope", 1), LookupError, "'nope'"),
    (
        "an unknown deployment",
        lambda: tether.deployments.diff("v-nope", "v-nope"),
        LookupError,
        "'v-nope'",
    ),
    ("a bad duration", _sleep_bad, ValueError, "'soon'"),
    ("negative retries", lambda: tether.step(max_retries=-1)(len), ValueError, "-1"),
    ("a def workflow", _plain_def_workflow, TypeError, "async def"),
    ("a hook outside a run", lambda: tether.create_hook(), RuntimeError, "inside a @workflow"),
    ("a stream outside a run", lambda: tether.get_writable(), RuntimeError, "inside a @workflow"),
    ("step_info outside", tether.step_info, RuntimeError, "inside a @step"),
    ("a workflow called", lambda: order("o", 1), RuntimeError, "tether.start(order"),
    ("a bad World URL", lambda: tether.get_run("r", world="mysql://x"), ValueError, "mysql://x"),
    ("time going back", lambda: ManualClock(0.0).advance(-1), ValueError, "-1"),
    ("registering no class", lambda: serde.register_type(42, "t", str, str), TypeError, "42"),  # type: ignore[arg-type]
    ("a bad hook token", lambda: tether.resume_hook("", 1), LookupError, "''"),
    (
        "a short workflow name",
        lambda: tether.list_runs(workflow_name="order"),
        ValueError,
        "'order'",
    ),
    (
        "waiting too little",
        lambda: tether.start(order, ["o", 1]).result(0.01),
        TimeoutError,
        "0.01s",
    ),
    ("unserializable args", lambda: tether.start(order, [object(), 1]), TypeError, "object"),
]


@pytest.mark.parametrize(
    ("did", "mistake", "builtin", "names"), MISTAKES, ids=[m[0] for m in MISTAKES]
)
def test_a_mistake_raises_a_tether_error_naming_it(
    registered: str,
    did: str,
    mistake: Callable[[], object],
    builtin: type[Exception],
    names: str,
) -> None:
    with pytest.raises(tether.TetherError) as info:
        mistake()
    assert isinstance(info.value, builtin), f"{did}: {type(info.value).__mro__}"
    assert names in str(info.value), f"{did}: {info.value}"


def test_a_closed_world_says_so(tmp_path: Path) -> None:
    with pytest.raises(tether.WorldClosedError, match="is closed") as info:
        _closed_world(tmp_path)
    assert isinstance(info.value, RuntimeError)
