"""``tether cancel``: one run or many, shown first, confirmed with -y, refused with no terminal."""

from __future__ import annotations

import pytest

from tests.cli.helpers import HELLO, NAPPER, create_run, error_line, tether, tether_exe
from tether.worlds.base import World

pytestmark = pytest.mark.both_worlds


def statuses(world: World, run_ids: list[str]) -> list[str]:
    return [world.get_run(r).status for r in run_ids]  # type: ignore[union-attr]


def test_cancel_one_run(url: str, world: World) -> None:
    run_id = create_run(world, HELLO, ["a"])
    refused = tether_exe("cancel", run_id, url=url)
    assert refused.code == 2
    assert "refusing to cancel 1 run without confirmation" in error_line(refused)
    assert run_id in refused.err  # it showed what it would have cancelled
    assert statuses(world, [run_id]) == ["pending"]
    done = tether_exe("cancel", run_id, "-y", url=url)
    assert done.code == 0, done
    assert done.lines == [run_id] and "cancelled 1 run" in done.err
    assert statuses(world, [run_id]) == ["cancelled"]
    again = tether("cancel", run_id, "--yes", url=url)
    assert again.code == 1
    assert "has already ended (cancelled): nothing to cancel" in error_line(again)


def test_bulk_cancel_shows_the_matching_runs_and_cancels_only_those(url: str, world: World) -> None:
    targets = [create_run(world, NAPPER, [i], deployment_id="old") for i in range(12)]
    other_workflow = create_run(world, HELLO, ["x"], deployment_id="old")
    other_deployment = create_run(world, NAPPER, [1], deployment_id="new")
    args = ["cancel", "--status", "pending", "--workflow-name", NAPPER, "--deployment", "old"]
    refused = tether(*args, url=url)
    assert refused.code == 2 and "refusing to cancel 12 runs" in refused.err
    assert "12 runs to cancel" in refused.err and "... and 2 more" in refused.err
    assert targets[-1] in refused.err and targets[0] not in refused.err  # newest 10 shown
    assert set(statuses(world, targets)) == {"pending"}
    limited = tether(*args, "--limit", "2", "-y", url=url)
    assert limited.code == 0, limited
    assert limited.lines == [targets[-1], targets[-2]]
    done = tether(*args, "-y", url=url)
    assert done.code == 0, done
    assert sorted(done.lines) == sorted(targets[:-2]) and "cancelled 10 runs" in done.err
    assert set(statuses(world, targets)) == {"cancelled"}
    assert statuses(world, [other_workflow, other_deployment]) == ["pending", "pending"]
    nothing = tether(*args, "-y", url=url)
    assert nothing.code == 0 and nothing.lines == [] and "nothing to cancel" in nothing.err


def test_bulk_cancel_of_many_runs_goes_in_chunks(url: str, world: World) -> None:
    many = [create_run(world, NAPPER, [i]) for i in range(230)]
    done = tether("cancel", "--workflow-name", NAPPER, "-y", url=url)
    assert done.code == 0, done
    assert len(done.lines) == 230 and "cancelled 230 runs" in done.err
    assert set(statuses(world, many)) == {"cancelled"}


def test_cancel_needs_a_run_or_filters_and_unfinished_statuses(url: str, world: World) -> None:
    run_id = create_run(world, HELLO, ["a"])
    for args, message in [
        ([], "give RUN_IDs, or filters for a bulk cancel"),
        ([run_id, "--status", "pending"], "give either RUN_IDs or filters"),
        (["--status", "completed"], "runs with status 'completed' have ended"),
        (["--status", "stuck"], "invalid status 'stuck': expected one of pending, running,"),
        (["--workflow-name", "hello"], "expected workflow//<module>//<function>"),
    ]:
        result = tether("cancel", *args, "-y", url=url)
        assert result.code == 2, (args, result)
        assert message in error_line(result)
    assert statuses(world, [run_id]) == ["pending"]


def test_cancel_several_runs_by_id(url: str, world: World) -> None:
    first, second, third = (create_run(world, HELLO, [name]) for name in "abc")
    ended = create_run(world, HELLO, ["d"])
    world.cancel_runs([ended])
    missing = tether("cancel", first, "run_missing", "-y", url=url)
    assert missing.code == 1 and "run 'run_missing' not found" in error_line(missing)
    assert statuses(world, [first]) == ["pending"]  # every id is found before any is cancelled
    done = tether_exe("cancel", first, second[:20], ended, first, "-y", url=url)
    assert done.code == 0, done
    assert done.lines == [first, second]
    assert f"skipping {ended}: it has already ended (cancelled)" in done.err
    assert "2 runs to cancel" in done.err and "cancelled 2 runs" in done.err
    assert statuses(world, [first, second, third]) == ["cancelled", "cancelled", "pending"]
    all_ended = tether("cancel", first, ended, "-y", url=url)
    assert all_ended.code == 1
    assert "all 2 runs have already ended: nothing to cancel" in error_line(all_ended)
