"""``--workflow-name``: a full name that nothing knows is refused, naming the closest ones."""

from __future__ import annotations

import pytest

from tests.cli.helpers import (
    APP,
    HELLO,
    NAPPER,
    create_run,
    error_line,
    hello_deployment,
    register_deployment,
    tether,
    tether_exe,
    workflow_entry,
)
from tether.worlds.base import World

pytestmark = pytest.mark.both_worlds

#: Every command that filters by workflow name.
FILTERS = [["cancel", "-y"], ["inspect", "runs"]]


@pytest.mark.parametrize("command", FILTERS)
def test_a_misspelt_name_is_refused_with_the_closest_names(
    url: str, world: World, command: list[str]
) -> None:
    hello_deployment(world, "v1")
    pending = create_run(world, HELLO, ["a"])
    for typed, suggested in (
        (f"workflow//{APP}//helo", HELLO),
        (f"workflow//{APP}//naper", NAPPER),
        ("workflow//cli_app//hello", HELLO),  # the module mistyped
    ):
        result = tether(*command, "--workflow-name", typed, url=url)
        assert result.code == 2, result
        assert error_line(result) == (
            f"Error: no deployment defines workflow {typed!r} and no run has it: "
            f"did you mean {suggested}?"
        )
    assert world.get_run(pending).status == "pending"  # type: ignore[union-attr]


def test_nothing_close_names_what_the_deployments_define(url: str, world: World) -> None:
    unknown = "workflow//billing//refund_everyone"
    bare = tether_exe("cancel", "--workflow-name", unknown, "-y", url=url)
    assert bare.code == 2, bare
    assert error_line(bare) == (
        f"Error: no deployment defines workflow {unknown!r} and no run has it: "
        "no deployment is registered yet (a worker registers its own)"
    )
    names = [f"workflow//shop//flow{i}" for i in range(7)]
    register_deployment(world, "v1", {name: workflow_entry([], []) for name in names})
    listed = tether("inspect", "runs", "--workflow-name", unknown, url=url)
    assert listed.code == 2, listed
    assert error_line(listed).endswith(
        f": the deployments define {', '.join(names[:5])} and 2 more"
        " (tether inspect deployments ID lists them)"
    )


def test_a_name_that_runs_have_is_accepted_without_a_deployment(url: str, world: World) -> None:
    retired = "workflow//old.module//retired"
    run_id = create_run(world, retired, [], deployment_id="gone")
    listed = tether("inspect", "runs", "--json", "--workflow-name", retired, url=url)
    assert listed.code == 0, listed
    assert run_id in listed.out
    done = tether("cancel", "--workflow-name", retired, "-y", url=url)
    assert done.code == 0 and done.lines == [run_id], done
    nothing = tether("cancel", "--workflow-name", retired, "-y", url=url)
    assert nothing.code == 0 and "nothing to cancel" in nothing.err
    hello_deployment(world, "v1")
    defined = tether("inspect", "runs", "--workflow-name", NAPPER, url=url)
    assert defined.code == 0 and "no runs match" in defined.err
