"""Helpers of the CLI tests: the real ``tether`` executable, fresh Worlds, data set up in-process.

Tests drive ``tether`` in-process through click's ``CliRunner`` (``tether()``),
a few per command group through the real executable (``tether_exe()``), and
set up data through the World API, which is quicker than starting runs
through a worker when all a test needs is rows to list or cancel.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tether import cli, manifest, serde
from tether.cli import render
from tether.worlds.base import World
from tether.worlds.records import NewRun, WorkerInfo

REPO = Path(__file__).resolve().parents[2]
APP = "tests.apps.cli_app"
HELLO = f"workflow//{APP}//hello"
NAPPER = f"workflow//{APP}//napper"
DOOMED = f"workflow//{APP}//doomed"
TOTALS = f"workflow//{APP}//totals"
APPROVAL = f"workflow//{APP}//approval"
COUNTER = f"workflow//{APP}//counter"

_EXE = Path(sys.executable).with_name("tether")
TETHER = [str(_EXE)] if _EXE.exists() else [sys.executable, "-m", "tether"]

# Every backend the CLI is tested against. PostgreSQL joins when its World exists.
BACKENDS = ["sqlite"]
if importlib.util.find_spec("tether.worlds.postgres") is not None:
    BACKENDS.append("postgres")


# -- running the command ------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    """What one ``tether`` invocation did."""

    code: int
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        """The stdout lines (ids, JSON results)."""
        return self.out.splitlines()


def tether(
    *args: str, url: str | None, env: dict[str, str] | None = None, timeout: float = 60
) -> Result:
    """Run ``tether ARGS`` in this process, as the executable would; never a traceback.

    The command sees ``$TETHER_WORLD=url`` and no other ``TETHER_`` variable,
    no terminal, and a process that defines no workflows (a pure client, as
    the executable is: ``start`` then targets the latest deployment). A
    command that raised instead of printing its one-line error fails the test.
    ``timeout`` is for the executable only (``tether_exe``); here pytest-timeout
    bounds a command that hangs.
    """
    full_env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("TETHER_")}
    full_env.update({"NO_COLOR": "1", "COLUMNS": None, "LINES": None})
    if url is not None:
        full_env["TETHER_WORLD"] = url
    full_env.update(env or {})
    # The consoles are made once per process; a fresh command makes them anew.
    render.out.cache_clear()
    render.err.cache_clear()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(manifest, "defines_workflows", lambda: False)
        outcome = CliRunner().invoke(cli.main, list(args), env=full_env)
    result = Result(outcome.exit_code, outcome.stdout, outcome.stderr)
    if outcome.exception is not None and not isinstance(outcome.exception, SystemExit):
        raise AssertionError(f"tether {' '.join(args)} raised: {result}") from outcome.exception
    assert "Traceback" not in result.out + result.err, result
    return result


def tether_exe(
    *args: str, url: str | None, env: dict[str, str] | None = None, timeout: float = 60
) -> Result:
    """Run the real ``tether`` executable with ``$TETHER_WORLD=url`` and no terminal.

    Slower than ``tether()`` (a Python start-up per call): a few tests per
    command group use it, so that the installed entry point itself is tested.
    """
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    full_env.update(
        {"PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "src")]), "NO_COLOR": "1"}
    )
    if url is not None:
        full_env["TETHER_WORLD"] = url
    full_env.update(env or {})
    proc = subprocess.run(
        [*TETHER, *args],
        cwd=REPO,
        env=full_env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    result = Result(proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stdout + proc.stderr, result
    return result


def error_line(result: Result) -> str:
    """The one ``Error: ...`` line a failing command printed (last, after any preview)."""
    lines = [line for line in result.err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result
    return errors[0]


# -- data ---------------------------------------------------------------------------

_clock = itertools.count()


def create_run(
    world: World,
    workflow_name: str,
    args: list[Any],
    *,
    deployment_id: str = "d1",
    parent_run_id: str | None = None,
    rerun_of: str | None = None,
) -> str:
    """A pending run pinned to ``deployment_id`` (no worker needed); returns its id."""
    run_id = f"run_{uuid.uuid4().hex}"
    world.create_run(
        NewRun(
            run_id=run_id,
            workflow_name=workflow_name,
            deployment_id=deployment_id,
            input=serde.dumps([args, {}]),
            parent_run_id=parent_run_id,
            rerun_of=rerun_of,
            # Distinct, increasing creation times: listings have one true order.
            created_at=time.time() + next(_clock) * 1e-3,
        )
    )
    return run_id


def workflow_entry(params: list[str], steps: list[str], fingerprint: str = "f1") -> dict[str, Any]:
    """One workflow of a hand-written manifest: untyped positional parameters.

    A parameter written ``"name="`` has a default.
    """
    return {
        "fingerprint": fingerprint,
        "params": [
            {
                "name": p.rstrip("="),
                "kind": "POSITIONAL_OR_KEYWORD",
                "default": p.endswith("="),
                "annotation": "",
            }
            for p in params
        ],
        "returns": "",
        "steps": steps,
    }


def register_deployment(
    world: World,
    deployment_id: str,
    workflows: dict[str, dict[str, Any]],
    steps: dict[str, dict[str, Any]] | None = None,
) -> None:
    """Register a deployment as a worker would (its worker then stops at once)."""
    worker_id = f"test:{deployment_id}:{uuid.uuid4().hex[:6]}"
    info = WorkerInfo(worker_id, deployment_id, "default", "test-host", os.getpid())
    world.register_worker(info, {"workflows": workflows, "steps": steps or {}})
    world.unregister_worker(worker_id)


def hello_deployment(world: World, deployment_id: str) -> None:
    """A deployment that defines the test app's workflows."""
    register_deployment(
        world,
        deployment_id,
        {
            HELLO: workflow_entry(["name", "punctuation="], [f"step//{APP}//greet"]),
            NAPPER: workflow_entry(["seconds"], []),
            TOTALS: workflow_entry(["order"], []),
        },
        {f"step//{APP}//greet": {"fingerprint": "g1", "params": [], "returns": ""}},
    )


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    """Poll ``predicate()`` until true; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
