"""Shared fixtures: a fresh World per test (SQLite, or each World) and an in-process worker on it.

A test gets an embedded SQLite World through ``world_url``. Marked
``@pytest.mark.both_worlds`` (or in a module with ``pytestmark =
pytest.mark.both_worlds``) it runs once per World instead, with ids
``test_x[sqlite]`` and ``test_x[postgres]``; the conformance suite runs every
test on both (``tests/conformance/conftest.py``). Under ``CI=true`` a
PostgreSQL test fails, rather than skips, when the server is unreachable.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import tether
from tests.conformance import backends
from tests.conformance.backends import WORLDS, configured, new_world_url
from tests.integration.processes import WorkerProcess, stop_leftovers

#: Tests that cut every connection named ``tether`` (tether's default application_name)
#: on the shared PostgreSQL server, meaning their own: only theirs get that name
#: (``backends.APPLICATION_NAME``). Their module runs on one xdist worker, as its
#: other tests may use the server under the default name.
ALONE_ON_THE_SERVER = frozenset(
    {
        "tests/integration/test_postgres_connections.py"
        "::test_killed_connections_are_replaced_and_nothing_is_written_twice",
    }
)

#: Modules whose tests pytest-xdist runs on one worker, one after the other.
ONE_WORKER_MODULES = frozenset(
    {
        # A worker process per backend for the whole module (the ``served`` fixture).
        "tests/cli/test_served.py",
        # Fleets of worker processes under load: one fleet at a time.
        "tests/integration/test_postgres_faults.py",
        # ALONE_ON_THE_SERVER.
        *(nodeid.split("::")[0] for nodeid in ALONE_ON_THE_SERVER),
    }
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "both_worlds: run the test once per World (sqlite, postgres) via world_url"
    )
    config.addinivalue_line(
        "markers", "postgres_alone: the test's PostgreSQL connections keep tether's default name"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.nodeid in ALONE_ON_THE_SERVER:
            item.add_marker(pytest.mark.postgres_alone)
        elif isinstance(item, pytest.Function):
            _check_alone_still_exist(item)


def _check_alone_still_exist(item: pytest.Function) -> None:
    """A renamed ALONE_ON_THE_SERVER test would cut no one's connections but its neighbours'."""
    for nodeid in ALONE_ON_THE_SERVER:
        module, name = nodeid.split("::", 1)
        if item.nodeid.startswith(module + "::") and not hasattr(item.module, name):
            raise pytest.UsageError(
                f"ALONE_ON_THE_SERVER in tests/conftest.py names {nodeid}, "
                "which does not exist: update it"
            )


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """With ``-n``: tests spread one by one, but ``ONE_WORKER_MODULES`` kept together.

    (``--dist loadgroup`` would do it with ``xdist_group`` marks, but pytest-xdist
    3.8 cannot group under pytest 9: it renames ``item._nodeid``, which pytest 9
    no longer reads.) Another ``--dist`` mode given on the command line wins.
    """
    if config.getoption("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ModulesKeptTogether(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return module if module in ONE_WORKER_MODULES else nodeid

    return ModulesKeptTogether(config, log)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "world_kind" in metafunc.fixturenames and metafunc.definition.get_closest_marker(
        "both_worlds"
    ):
        metafunc.parametrize("world_kind", WORLDS, indirect=True)


@pytest.fixture(autouse=True)
def _no_leftover_workers() -> Iterator[None]:
    """Worker processes a failing test left running are stopped when it ends (not those of
    wider fixtures, made before it began)."""
    before = set(WorkerProcess.running)
    yield
    stop_leftovers(keep=before)


@pytest.fixture(autouse=True)
def deployment_id(monkeypatch: pytest.MonkeyPatch) -> str:
    """One explicit deployment for the test process and the workers it spawns.

    Without it each process would be its own deployment, fingerprinted from
    the modules it imported (the test process imports more than a worker).
    """
    monkeypatch.setenv("TETHER_DEPLOYMENT_ID", "tests")
    return "tests"


@pytest.fixture(autouse=True)
def _postgres_application_name(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Name a ``postgres_alone`` test's connections as tether does by default."""
    if request.node.get_closest_marker("postgres_alone"):
        monkeypatch.setattr(backends, "APPLICATION_NAME", "tether")


@pytest.fixture
def world_kind(request: pytest.FixtureRequest) -> str:
    """Which World the test runs on: ``sqlite`` unless parametrised (``both_worlds``)."""
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture
def world_url(world_kind: str, tmp_path: Path) -> Iterator[str]:
    """A fresh World of ``world_kind``, configured as this process's default."""
    with new_world_url(world_kind, tmp_path) as url, configured(url):
        yield url


@pytest.fixture
def worker(world_url: str) -> Iterator[tether.Worker]:
    """An in-process worker serving every workflow the tests imported."""
    with tether.Worker(lease_seconds=2.0) as w:
        yield w


@pytest.fixture
def registered(world_url: str) -> str:
    """The test deployment registered (a worker of it started and stopped), none serving now."""
    with tether.Worker():
        pass
    return world_url
