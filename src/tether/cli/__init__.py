"""The ``tether`` command."""

from __future__ import annotations

import importlib
import logging
import os
import sys

import click

from tether import api, registry
from tether.runtime.worker import Worker


@click.group()
@click.version_option(package_name="tether")
def main() -> None:
    """tether: durable workflows pinned to the code that started them."""


@main.command()
@click.argument("modules", nargs=-1, required=True)
@click.option(
    "--backend",
    envvar="TETHER_WORLD",
    default=None,
    help="World URL (default: $TETHER_WORLD, else sqlite:///.tether/tether.db).",
)
@click.option("--concurrency", default=512, show_default=True, help="Tasks run at once.")
@click.option(
    "--lease-seconds",
    default=10.0,
    show_default=True,
    help="How long a task stays claimed without a heartbeat (a dead worker's work "
    "is taken over after this).",
)
def worker(
    modules: tuple[str, ...], backend: str | None, concurrency: int, lease_seconds: float
) -> None:
    """Serve the workflows and steps defined in MODULES until Ctrl-C (which drains)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise click.ClickException(f"cannot import module {module!r}: {exc}") from exc
    if not registry.WORKFLOWS and not registry.STEPS:
        raise click.ClickException(
            f"no @workflow or @step found in {', '.join(modules)}: nothing to serve"
        )
    try:
        api.configure(backend)
        w = Worker(concurrency=concurrency, lease_seconds=lease_seconds)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    w.run(
        on_ready=lambda: click.echo(
            f"tether worker {w.worker_id} ready: deployment {w.deployment_id!r} on "
            f"{w.world.url}, {len(registry.WORKFLOWS)} workflows, {len(registry.STEPS)} steps "
            "(Ctrl-C drains)",
            err=True,
        )
    )
    click.echo("tether worker stopped", err=True)
