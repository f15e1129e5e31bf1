"""``tether worker --deployment ID``: the deployment a worker serves, like TETHER_DEPLOYMENT_ID."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.helpers import APP, error_line, tether, tether_exe
from tests.integration.processes import worker_process
from tether.worlds.base import World

NEVER_CLOSES = "workflow//tests.apps.streaming//never_closes"


def test_the_option_sets_the_deployment_of_the_worker_and_of_what_its_steps_start(
    url: str, world: World, tmp_path: Path
) -> None:
    # The tests' environment says TETHER_DEPLOYMENT_ID=tests: the option wins over it.
    modules = ["tests.apps.streaming", "--deployment", "cli-flagged"]
    with worker_process(url, modules, tmp_path / "worker.log") as worker:
        assert "ready: deployment 'cli-flagged'" in worker.output()
        assert world.get_deployment("cli-flagged") is not None
        assert world.get_deployment("tests") is None
        # Its step starts a continuation on its own deployment, which it reads from the
        # environment: the option must have set it there too.
        result = tether(
            "start",
            NEVER_CLOSES,
            "--deployment",
            "cli-flagged",
            "--wait",
            "--timeout",
            "30",
            url=url,
        )
        assert result.code == 0, (result, worker.output())
        first, continuation = result.lines[0], json.loads(result.lines[1])
        for run_id in (first, continuation):
            assert world.get_run(run_id).deployment_id == "cli-flagged"  # type: ignore[union-attr]


def test_an_empty_deployment_is_refused(url: str) -> None:
    result = tether("worker", APP, "--deployment", "", url=url)
    assert result.code == 2
    assert "--deployment must not be empty" in error_line(result)


@pytest.mark.parametrize(
    ("deployment", "why"),
    [("latest", "'latest' stands for the newest deployment"), ("v 1", "it holds ' '")],
)
def test_an_id_that_cannot_name_a_deployment_is_refused(
    url: str, deployment: str, why: str
) -> None:
    by_option = tether("worker", APP, "--deployment", deployment, url=url)
    assert by_option.code == 2 and why in error_line(by_option)
    by_env = tether_exe("worker", APP, url=url, env={"TETHER_DEPLOYMENT_ID": deployment})
    assert by_env.code == 2 and why in error_line(by_env)
