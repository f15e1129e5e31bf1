"""``tether inspect``: listings with each filter, JSON output, paging, run detail."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from tests.cli.helpers import (
    HELLO,
    NAPPER,
    TOTALS,
    create_run,
    error_line,
    hello_deployment,
    tether,
    tether_exe,
)
from tether.worlds.base import World

pytestmark = pytest.mark.both_worlds

RUN_KEYS = {
    "run_id",
    "workflow_name",
    "deployment_id",
    "status",
    "created_at",
    "started_at",
    "completed_at",
    "parent_run_id",
    "rerun_of",
}


def run_ids(url: str, *args: str) -> list[str]:
    result = tether("inspect", "runs", "--json", *args, url=url)
    assert result.code == 0, result
    return [row["run_id"] for row in json.loads(result.out)]


def test_runs_table_shows_short_names_and_the_full_names_to_copy(url: str, world: World) -> None:
    first = create_run(world, HELLO, ["ann", "!"])
    second = create_run(world, NAPPER, [5])
    result = tether_exe("inspect", "runs", url=url)
    assert result.code == 0, result
    rows = [line.split() for line in result.lines if line.startswith("run_")]
    assert [row[:4] for row in rows] == [
        [second, "napper", "pending", "d1"],
        [first, "hello", "pending", "d1"],
    ]
    assert f"hello   {HELLO}" in result.out and f"napper  {NAPPER}" in result.out
    assert "next page" not in result.err


def test_runs_json_has_stable_keys_and_iso_utc_times(url: str, world: World) -> None:
    run_id = create_run(world, HELLO, ["ann", "!"], deployment_id="v7")
    result = tether("inspect", "runs", "--json", url=url)
    (row,) = json.loads(result.out)
    assert set(row) == RUN_KEYS
    assert row["run_id"] == run_id and row["workflow_name"] == HELLO
    assert row["deployment_id"] == "v7" and row["status"] == "pending"
    created = datetime.fromisoformat(row["created_at"])
    assert row["created_at"].endswith("Z") and created.tzinfo == UTC
    assert abs(created.timestamp() - world.get_run(run_id).created_at) < 0.001  # type: ignore[union-attr]
    with_data = json.loads(tether("inspect", "runs", "--json", "--with-data", url=url).out)
    assert set(with_data[0]) == RUN_KEYS | {"input", "input_kwargs", "output", "error"}
    assert with_data[0]["input"] == ["ann", "!"] and with_data[0]["output"] is None


def test_runs_with_data_decodes_inputs(url: str, world: World) -> None:
    create_run(world, TOTALS, [{"apples": 2, "pears": 3}])
    result = tether("inspect", "runs", "--with-data", url=url)
    assert '{"apples": 2, "pears": 3}' in result.out


def test_each_run_filter(url: str, world: World) -> None:
    a1 = create_run(world, HELLO, ["a"], deployment_id="d1")
    a2 = create_run(world, HELLO, ["b"], deployment_id="d2")
    n1 = create_run(world, NAPPER, [1], deployment_id="d1")
    n2 = create_run(world, NAPPER, [2], deployment_id="d2")
    world.cancel_runs([a2, n1])
    assert run_ids(url) == [n2, n1, a2, a1]
    assert run_ids(url, "--status", "cancelled") == [n1, a2]
    assert run_ids(url, "--status", "pending") == [n2, a1]
    assert run_ids(url, "--workflow-name", HELLO) == [a2, a1]
    assert run_ids(url, "--deployment", "d1") == [n1, a1]
    assert run_ids(url, "--run-id", n2) == [n2]
    assert run_ids(url, "--run-id", n2, "--status", "cancelled") == []
    assert run_ids(url, "--workflow-name", NAPPER, "--deployment", "d2", "--status", "pending") == [
        n2
    ]
    assert run_ids(url, "--sort", "asc") == [a1, a2, n1, n2]


def test_paging_follows_the_printed_cursor(url: str, world: World) -> None:
    created = [create_run(world, HELLO, [str(i)]) for i in range(5)]
    seen: list[str] = []
    cursor: list[str] = []
    for _ in range(4):
        result = tether("inspect", "runs", "--json", "--limit", "2", *cursor, url=url)
        page = [row["run_id"] for row in json.loads(result.out)]
        seen += page
        hint = [line for line in result.err.splitlines() if line.startswith("next page:")]
        if not hint:
            break
        assert len(page) == 2
        cursor = ["--cursor", hint[0].split("--cursor ", 1)[1]]
    assert seen == created[::-1]
    # The table prints the same hint, and ascending pages continue upwards.
    first = tether("inspect", "runs", "--limit", "3", "--sort", "asc", url=url)
    assert first.err.startswith("next page: --cursor ")
    rest = run_ids(url, "--sort", "asc", "--cursor", first.err.split("--cursor ")[1].strip())
    assert rest == created[3:]


def test_run_detail_shows_parent_children_and_reruns(url: str, world: World) -> None:
    parent = create_run(world, HELLO, ["p"])
    child = create_run(world, NAPPER, [3], parent_run_id=parent)
    again = create_run(world, HELLO, ["p"], rerun_of=parent)
    result = tether("inspect", "runs", parent, url=url)
    assert result.code == 0, result
    assert HELLO in result.out and '"p"' in result.out
    assert "children (1)" in result.out and child in result.out
    assert "reruns (1)" in result.out and again in result.out
    detail = json.loads(tether("inspect", "runs", child, "--json", url=url).out)
    assert detail["run_id"] == child and detail["parent"]["run_id"] == parent
    assert detail["input"] == [3] and detail["steps"] == [] and detail["children"] == []
    assert (
        json.loads(tether("inspect", "runs", parent, "--json", url=url).out)["reruns"][0]["run_id"]
        == again
    )


def test_inspect_deployments(url: str, world: World) -> None:
    hello_deployment(world, "v1")
    create_run(world, HELLO, ["x"], deployment_id="v1")
    (row,) = json.loads(tether("inspect", "deployments", "--json", url=url).out)
    assert row == {
        "deployment_id": "v1",
        "environment": "default",
        "created_at": row["created_at"],
        "in_flight": 1,
        "live_workers": 0,
        "last_heartbeat_at": row["last_heartbeat_at"],
        "stranded": True,
    }
    detail = tether("inspect", "deployments", "v1", url=url)
    assert detail.code == 0 and HELLO in detail.out and "name, punctuation" in detail.out
    assert json.loads(tether("inspect", "deployments", "v1", "--json", url=url).out)["manifest"][
        "workflows"
    ][HELLO]["steps"] == ["step//tests.apps.cli_app//greet"]


def test_a_run_needs_an_id_for_steps_events_and_sleeps(url: str) -> None:
    for what in ("steps", "events", "sleeps"):
        result = tether("inspect", what, url=url)
        assert result.code == 2
        assert f"tether inspect {what} RUN_ID" in error_line(result)
