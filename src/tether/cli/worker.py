"""``tether worker``: serve the workflows and steps of some modules in the foreground."""

from __future__ import annotations

import importlib
import logging
import os
import sys

import click

from tether import config, registry
from tether.cli import backend
from tether.cli.backend import backend_option
from tether.cli.errors import CliError, UsageProblem
from tether.manifest import check_deployment_id
from tether.runtime.worker import Worker


@click.command(short_help="Serve the workflows and steps of MODULES.")
@click.argument("modules", nargs=-1, required=True)
@click.option("--concurrency", default=512, show_default=True, help="Tasks run at once.")
@click.option(
    "--lease-seconds",
    default=10.0,
    show_default=True,
    help="How long a task stays claimed without a heartbeat (a dead worker's work "
    "is taken over after this).",
)
@click.option(
    "--deployment",
    envvar="TETHER_DEPLOYMENT_ID",
    metavar="ID",
    help="The deployment this worker serves (default: $TETHER_DEPLOYMENT_ID, else a "
    "fingerprint of the code of MODULES).",
)
@click.option(
    "--replace-deployment",
    is_flag=True,
    help="Development only: serve under the deployment id even if it was registered with "
    "other code (runs pinned to it then resume into this code).",
)
@click.option(
    "--step-threads",
    default=64,
    show_default=True,
    help="Plain def steps run at once; more wait, leased, for a thread.",
)
@backend_option
def worker(
    modules: tuple[str, ...],
    concurrency: int,
    lease_seconds: float,
    deployment: str | None,
    replace_deployment: bool,
    step_threads: int,
) -> None:
    """Serve the workflows and steps defined in MODULES until SIGINT (Ctrl-C) or SIGTERM.

    The first signal drains: steps running finish and are recorded, nothing
    new starts, and steps leased but not started are handed back to other
    workers at once; then the worker exits with code 0. A second signal exits
    at once with 128 + its number (130 for SIGINT, 143 for SIGTERM), and a
    drain longer than 30 s with 1: the steps still running are named, and run
    again on another worker once their leases expire (--lease-seconds).

    A deployment id is immutable: if it was registered with other code for a
    workflow or step these modules define, the worker refuses to start (exit 2).
    """
    if deployment is not None:
        if not deployment.strip():
            raise UsageProblem("--deployment must not be empty: give an id such as v42")
        check_deployment_id(deployment)  # a bad id is a usage error (exit 2)
        # As if set in the environment: a step's start() without deployment_id pins the
        # new run to its own deployment, which it reads from there.
        os.environ["TETHER_DEPLOYMENT_ID"] = deployment
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    import_modules(modules, "nothing to serve")
    serving = backend.current()
    config.configure(serving.url)  # runs started from steps go to the same World
    w = Worker(
        world=serving.world(create=True),
        concurrency=concurrency,
        lease_seconds=lease_seconds,
        replace_deployment=replace_deployment,
        step_threads=step_threads,
    )
    w.run(
        on_ready=lambda: click.echo(
            f"tether worker {w.worker_id} ready: deployment {w.deployment_id!r} on "
            f"{serving.shown}, {_count(len(registry.WORKFLOWS), 'workflow')}, "
            f"{_count(len(registry.STEPS), 'step')} "
            "(Ctrl-C drains)",
            err=True,
        )
    )
    click.echo("tether worker stopped", err=True)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def import_modules(modules: tuple[str, ...], otherwise: str) -> None:
    """Import MODULES as ``python -m`` would find them (the current folder first).

    Raises ``CliError`` naming a module that cannot be imported, or when they
    define no workflow or step (``otherwise`` says what then cannot happen).
    """
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise CliError(f"cannot import module {module!r}: {exc}") from exc
    if not registry.WORKFLOWS and not registry.STEPS:
        raise CliError(f"no @workflow or @step found in {', '.join(modules)}: {otherwise}")
