"""Run ids on the command line: the first characters of one will do, if no other id starts so."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from tests.cli.helpers import HELLO, error_line, hello_deployment, tether, tether_exe
from tests.conformance import backends
from tether import config, serde
from tether.redaction import redact
from tether.worlds import open_world
from tether.worlds.base import World
from tether.worlds.records import NewRun

pytestmark = pytest.mark.both_worlds


def statuses(world: World, *run_ids: str) -> list[str]:
    return [world.get_run(r).status for r in run_ids]  # type: ignore[union-attr]


def named_run(world: World, run_id: str) -> str:
    """A pending run with exactly this id (``start(..., run_id=...)`` makes such ids too)."""
    world.create_run(
        NewRun(
            run_id=run_id,
            workflow_name=HELLO,
            deployment_id="d1",
            input=serde.dumps([["x"], {}]),
            parent_run_id=None,
            rerun_of=None,
            created_at=time.time(),
        )
    )
    return run_id


@pytest.mark.parametrize(
    ("args", "code", "shown"),
    [
        (["inspect", "runs", "{}", "--json"], 0, '"run_id": "{}"'),
        (["inspect", "runs", "--run-id", "{}", "--json"], 0, '"run_id": "{}"'),
        (["inspect", "steps", "{}"], 0, "run {} has no steps"),
        (["inspect", "events", "--run-id", "{}", "--json"], 0, '"run_id": "{}"'),
        (["inspect", "sleeps", "{}"], 0, "run {} has no sleeps"),
        (["inspect", "hooks", "{}", "--json"], 0, "[]"),
        (["inspect", "streams", "{}", "--json"], 0, "[]"),
        (["sleeps", "wake", "{}"], 1, "run {} has no pending sleep"),
        (["rerun", "{}"], 0, "rerun of {}: run_"),
        (["cancel", "{}", "-y"], 0, "cancelled 1 run"),
    ],
)
def test_a_unique_prefix_names_the_run(
    url: str, world: World, args: list[str], code: int, shown: str
) -> None:
    hello_deployment(world, "d1")
    run_id = named_run(world, f"run_e3964c47{uuid.uuid4().hex}")
    other = named_run(world, f"run_e3964c48{uuid.uuid4().hex}")
    result = tether(*(a.format("run_e3964c47") for a in args), url=url)
    assert result.code == code, result
    assert shown.format(run_id) in result.out + result.err, result
    assert statuses(world, other) == ["pending"]


def test_the_real_executable_takes_a_prefix_and_prints_whole_ids(url: str, world: World) -> None:
    run_id = named_run(world, f"run_{uuid.uuid4().hex}")
    done = tether_exe("cancel", run_id[:12], "-y", url=url)
    assert done.code == 0, done
    assert done.lines == [run_id]
    assert statuses(world, run_id) == ["cancelled"]


def test_an_ambiguous_prefix_lists_some_matches_and_does_nothing(url: str, world: World) -> None:
    first = named_run(world, "run_ab1")
    second = named_run(world, "run_ab2")
    result = tether("cancel", "run_ab", "-y", url=url)
    assert result.code == 2, result
    assert error_line(result) == (
        f"Error: run id 'run_ab' is ambiguous: it starts the ids {first}, {second}; "
        "give more of the id"
    )
    assert statuses(world, first, second) == ["pending", "pending"]
    many = [named_run(world, f"batch-{i}") for i in range(7)]
    listed = tether("inspect", "runs", "batch-", url=url)
    assert listed.code == 2, listed
    assert f"it starts the ids {', '.join(many[:5])} and more; give more" in error_line(listed)
    exact = tether("inspect", "runs", "--json", "--run-id", "run_ab1", url=url)
    assert exact.code == 0 and f'"run_id": "{first}"' in exact.out


def test_wildcards_and_case_are_plain_characters(url: str, world: World) -> None:
    underscore = named_run(world, "order_1")
    named_run(world, "orderX1")  # LIKE 'order_%' would match it too
    percent = named_run(world, "order%2")
    upper = named_run(world, "ORDER_3")  # SQLite's LIKE ignores case
    for prefix, expected in (("order_", underscore), ("order%", percent), ("ORDER", upper)):
        result = tether("inspect", "runs", "--json", "--run-id", prefix, url=url)
        assert result.code == 0, (prefix, result)
        assert f'"run_id": "{expected}"' in result.out, (prefix, result)


def test_a_prefix_that_matches_nothing_is_not_found_in_the_named_world(
    url: str, world: World
) -> None:
    named_run(world, "run_abc")
    for missing in ("run_abd", "run_abcd", "RUN_ABC"):
        result = tether("rerun", missing, url=url)
        assert result.code == 1, result
        assert error_line(result) == (
            f"Error: run {missing!r} not found in {redact(url)}: no run id is or starts with it"
        )
    empty = tether("inspect", "runs", "", url=url)
    assert empty.code == 2 and "a run id must not be empty" in error_line(empty)


# -- a PostgreSQL database that orders text as a language does ------------------------


@pytest.fixture
def linguistic_url() -> Iterator[str]:
    """A World on a database of its own whose collation is ICU's English, not code points.

    There a prefix's ids are not one range of the run id index ("batch-{" sorts
    before "batch-z"): the lookup must still find them all.
    """
    backends.require_postgres()
    name = f"tether_test_icu_{uuid.uuid4().hex[:12]}"
    with backends.admin() as conn:
        try:
            conn.execute(
                f"CREATE DATABASE {name} TEMPLATE template0 LOCALE_PROVIDER icu"
                " ICU_LOCALE 'en' LOCALE 'C.UTF-8'"
            )
        except psycopg.Error as exc:
            pytest.skip(f"the server cannot create an ICU database: {exc}")
    parts = urlsplit(backends.POSTGRES_URL)
    url = backends.with_param(
        urlunsplit(parts._replace(path=f"/{name}")), "application_name", backends.APPLICATION_NAME
    )
    try:
        yield url
    finally:
        config.close(url)
        with backends.admin() as conn:
            conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


def test_prefixes_under_a_language_collation(linguistic_url: str) -> None:
    world = open_world(linguistic_url)
    try:
        pair = [named_run(world, "batch-z-1"), named_run(world, "batch-z-2")]
        single = named_run(world, "batch-y-1")
        named_run(world, "BATCH-Z-3")
    finally:
        world.close()
    ambiguous = tether("inspect", "runs", "batch-z", url=linguistic_url)
    assert ambiguous.code == 2, ambiguous
    assert f"it starts the ids {pair[0]}, {pair[1]}; give more" in error_line(ambiguous)
    found = tether("inspect", "runs", "--json", "--run-id", "batch-y", url=linguistic_url)
    assert found.code == 0 and f'"run_id": "{single}"' in found.out, found
