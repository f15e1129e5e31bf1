"""Helpers of the CLI tests: the real ``tether`` executable, fresh Worlds, data set up in-process.

Tests drive ``tether`` in subprocesses and set up data through the World
API, which is quicker than starting runs through a worker when all a test
needs is rows to list or cancel.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tether import serde
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

#: Admin connection used to make a database per test module (trust auth locally).
POSTGRES_ADMIN_URL = os.environ.get(
    "TETHER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)

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
    """Run ``tether ARGS`` with ``$TETHER_WORLD=url`` and no terminal; never a traceback."""
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


# -- worlds -------------------------------------------------------------------------


def _postgres_database() -> Iterator[str]:
    """A fresh database on the local server, dropped afterwards."""
    psycopg = pytest.importorskip("psycopg")
    name = f"tether_cli_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"no PostgreSQL server at {POSTGRES_ADMIN_URL}: {exc}")
    with admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def make_url(kind: str, folder: Path) -> Iterator[str]:
    """A World URL of backend ``kind`` that nobody used yet."""
    if kind == "sqlite":
        yield f"sqlite:///{folder}/tether.db"
    else:
        yield from _postgres_database()


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
    """One workflow of a hand-written manifest: untyped positional parameters."""
    return {
        "fingerprint": fingerprint,
        "params": [
            {"name": p, "kind": "POSITIONAL_OR_KEYWORD", "default": False, "annotation": ""}
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
            HELLO: workflow_entry(["name", "punctuation"], [f"step//{APP}//greet"]),
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
