"""The ``tether`` command run inside a process that goes on using tether afterwards.

The tests of the other modules run commands in-process (``helpers.tether``)
and, for each command group, through the real executable; this module holds
what only the in-process use shows.
"""

from __future__ import annotations

from click.testing import CliRunner

from tests.cli.helpers import HELLO, create_run
from tether import cli, config


def test_a_command_leaves_the_process_world_usable(url: str) -> None:
    before = config.resolve_world(url)
    create_run(before, HELLO, ["before"])
    result = CliRunner().invoke(cli.main, ["inspect", "runs", "--json"], env={"TETHER_WORLD": url})
    assert result.exit_code == 0, result.output
    assert create_run(config.resolve_world(url), HELLO, ["after"]).startswith("run_")
