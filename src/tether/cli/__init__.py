"""The ``tether`` command: the group, its subcommands, and the one place errors are shown.

Subcommands raise tether's errors (and ``ValueError`` from the parse
functions) as they come; ``TetherGroup.invoke`` turns each into one line on
stderr with exit code 1 (not found, failed) or 2 (bad input). Set
``TETHER_DEBUG=1`` to get the traceback instead.
"""

from __future__ import annotations

from typing import Any

import click

from tether.cli import actions, backend, check, deploy, errors, inspect, web, worker


class TetherGroup(click.Group):
    """A group whose commands fail with one line, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.Abort, click.exceptions.Exit):
            raise  # click shows these itself
        except Exception as exc:
            if errors.debugging():
                raise
            raise errors.translate(exc, backend.current_url(ctx)) from None


@click.group(cls=TetherGroup)
@click.version_option(package_name="tether")
def main() -> None:
    """tether: durable workflows pinned to the code that started them.

    Every command takes --backend URL (else $TETHER_WORLD, else
    sqlite:///.tether/tether.db). Wherever a RUN_ID goes, the start of one
    will do if no other id starts the same way.
    """


main.add_command(inspect.inspect)
main.add_command(actions.cancel)
main.add_command(actions.rerun)
main.add_command(actions.start)
main.add_command(worker.worker)
main.add_command(deploy.deployments)
deploy.deployments.add_command(check.check)
deploy.deployments.add_command(check.upgrade)
main.add_command(actions.sleeps)
main.add_command(actions.hooks)
main.add_command(web.web)
