"""Commands that change runs: cancel, rerun, start, wake a sleep, resume a hook.

Each prints the ids it produced on stdout, one a line, and what it did on
stderr, so that the recovery after a bad deploy composes in a shell:
``tether cancel --status running --workflow-name NAME -y | xargs tether rerun --latest``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any, Literal

import click
from rich.console import Group
from rich.text import Text

from tether import api, deployments
from tether.cli import backend, params, render, views
from tether.cli.backend import backend_option
from tether.cli.errors import CliError, UsageProblem
from tether.cli.worker import import_modules
from tether.handles import Run
from tether.worlds.base import World
from tether.worlds.records import TERMINAL_STATUSES, RunFilter, RunRecord

#: Runs cancelled per World call in a bulk cancel (one transaction each).
CANCEL_CHUNK = 100
#: Rows of the preview shown before a bulk cancel.
PREVIEW_ROWS = 10

# -- cancel ---------------------------------------------------------------------------


@click.command(short_help="Cancel runs: by id, or every unfinished run matching filters.")
@click.argument("run_ids", nargs=-1, metavar="[RUN_ID]...")
@click.option("--status", help="Bulk: pending or running (default: both).")
@click.option(
    "--workflow-name",
    metavar="NAME",
    help="Bulk: the full name as listed, e.g. workflow//shop.workflows//fulfill_order.",
)
@click.option("--deployment", metavar="ID", help="Bulk: runs pinned to this deployment.")
@click.option("--limit", type=click.IntRange(min=1), help="Bulk: at most this many, newest first.")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@backend_option
def cancel(
    run_ids: tuple[str, ...],
    status: str | None,
    workflow_name: str | None,
    deployment: str | None,
    limit: int | None,
    yes: bool,
) -> None:
    """Cancel each RUN_ID, or every unfinished run matching the filters.

    A RUN_ID may be a unique prefix of an id (run_e3964c47). Shows what it
    will cancel and asks first (-y skips the question). Prints the ids of the
    cancelled runs on stdout, one a line.
    """
    bulk = any(v is not None for v in (status, workflow_name, deployment, limit))
    if run_ids and bulk:
        raise UsageProblem("give either RUN_IDs or filters (a bulk cancel), not both")
    if not run_ids and not bulk:
        raise UsageProblem(
            "give RUN_IDs, or filters for a bulk cancel: --status, --workflow-name, --deployment"
        )
    params.check_status(status)
    if status in TERMINAL_STATUSES:
        raise UsageProblem(
            f"runs with status {status!r} have ended and cannot be cancelled: "
            f"use {' or '.join(params.UNFINISHED)}"
        )
    params.check_workflow_name(workflow_name)
    world = backend.world()
    if run_ids:
        targets = _named(world, run_ids)
    else:
        params.require_known_workflow(world, workflow_name)
        targets = _unfinished(world, status, workflow_name, deployment, limit)
        if not targets:
            render.err().print("nothing to cancel: no pending or running run matches")
            return
    _preview(targets)
    confirm(f"Cancel {_runs(len(targets))}?", action=f"cancel {_runs(len(targets))}", yes=yes)
    cancelled: list[str] = []
    with render.progress("cancelling", len(targets)) as advance:
        for i in range(0, len(targets), CANCEL_CHUNK):
            chunk = [r.run_id for r in targets[i : i + CANCEL_CHUNK]]
            done = world.cancel_runs(chunk).cancelled
            for cancelled_id in done:
                click.echo(cancelled_id)
            cancelled += done
            advance(len(chunk))
    ended = len(targets) - len(cancelled)
    render.err().print(
        f"cancelled {_runs(len(cancelled))}"
        + (f" ({ended} ended before they could be cancelled)" if ended else "")
    )


def _named(world: World, run_ids: Sequence[str]) -> list[RunRecord]:
    """The unfinished runs of ``run_ids``, each found before anything is cancelled.

    A run that has ended is skipped with a note; if every one has, nothing is
    left to do: an error.
    """
    found = {record.run_id: record for record in (backend.require_run(world, i) for i in run_ids)}
    ended = [r for r in found.values() if r.status in TERMINAL_STATUSES]
    if len(ended) == len(found):
        if len(ended) == 1:
            raise CliError(
                f"run {ended[0].run_id} has already ended ({ended[0].status}): nothing to cancel"
            )
        raise CliError(f"all {len(ended)} runs have already ended: nothing to cancel")
    for record in ended:
        render.err().print(
            f"skipping {record.run_id}: it has already ended ({record.status})", soft_wrap=True
        )
    return [r for r in found.values() if r.status not in TERMINAL_STATUSES]


def _unfinished(
    world: World,
    status: str | None,
    workflow_name: str | None,
    deployment: str | None,
    limit: int | None,
) -> list[RunRecord]:
    """Unfinished runs matching the filters, newest first, at most ``limit``."""
    found: list[RunRecord] = []
    for wanted in [status] if status else params.UNFINISHED:
        filters = RunFilter(status=wanted, workflow_name=workflow_name, deployment_id=deployment)
        found += itertools.islice(api.iter_runs(world, filters), limit)
    found.sort(key=lambda r: (r.created_at, r.run_id), reverse=True)
    return found[:limit] if limit is not None else found


def _preview(targets: list[RunRecord]) -> None:
    shown = targets[:PREVIEW_ROWS]
    parts = [
        Text(f"{_runs(len(targets))} to cancel:", style="bold"),
        views.runs_table(shown, with_data=False),
    ]
    if len(targets) > len(shown):
        parts.insert(2, Text(f"... and {len(targets) - len(shown)} more", style="dim"))
    render.err().print(Group(*parts))


def confirm(question: str, *, action: str, yes: bool) -> None:
    """Ask on the terminal unless ``yes``; without a terminal, refuse."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise UsageProblem(
            f"refusing to {action} without confirmation: no terminal to ask on; "
            "pass -y (--yes) to go ahead"
        )
    if not click.confirm(question, default=False, err=True):
        raise CliError("nothing done")


def _runs(count: int) -> str:
    return f"{count} run" + ("" if count == 1 else "s")


# -- rerun ----------------------------------------------------------------------------


@click.command(short_help="Rerun runs with the same inputs.")
@click.argument("run_ids", nargs=-1, required=True, metavar="RUN_ID...")
@click.option("--latest", is_flag=True, help="Rerun on the newest deployment (the usual fix).")
@click.option("--deployment", metavar="ID", help="Rerun on this deployment.")
@click.option(
    "--from-step",
    metavar="N|auto",
    help="Fork: keep the history before request N (as inspect steps numbers them), run the"
    " rest on the target; auto: the furthest point its code replays (for a failed run, the"
    " step that failed it).",
)
@click.option(
    "--code",
    "modules",
    multiple=True,
    metavar="MODULE",
    help="With --from-step: import the target's code from MODULE and check the history here"
    " (else a live worker of the target checks it).",
)
@backend_option
def rerun(
    run_ids: tuple[str, ...],
    latest: bool,
    deployment: str | None,
    from_step: str | None,
    modules: tuple[str, ...],
) -> None:
    """Start each RUN_ID again with the same inputs; prints the new run ids.

    A RUN_ID may be a unique prefix of an id. Without --latest or
    --deployment a rerun stays on the original run's deployment. The new run
    records which run it reruns. With --from-step it is a fork: steps before
    request N keep their results and are not run again (the target's code
    must replay that history: a live worker of the target checks it, or this
    process with --code).
    """
    if latest and deployment is not None:
        raise UsageProblem("give --latest or --deployment, not both")
    step = _from_step(from_step)
    if modules:
        if step is None:
            raise UsageProblem("--code is for --from-step: a plain rerun checks nothing")
        import_modules(modules, "nothing to check the history against")
    target = "latest" if latest else deployment
    world = backend.world()
    originals = [backend.require_run(world, run_id) for run_id in run_ids]
    with render.progress("rerunning", len(originals)) as advance:
        for original in originals:
            run = api.rerun(original.run_id, target, from_step=step, world=world)
            click.echo(run.run_id)
            note = (
                f" (the original is still {original.status}: tether cancel {original.run_id})"
                if original.status not in TERMINAL_STATUSES
                else ""
            )
            render.err().print(
                f"rerun of {original.run_id}: {run.run_id} "
                f"({render.short_name(run.workflow_name)} on {run.deployment_id}){note}",
                soft_wrap=True,
            )
            advance(1)


def _from_step(value: str | None) -> int | Literal["auto"] | None:
    if value is None or value == "auto":
        return value  # type: ignore[return-value]
    if value.isdigit():
        return int(value)
    raise UsageProblem(f"invalid --from-step {value!r}: give a step number (0, 1, ...) or auto")


# -- start ----------------------------------------------------------------------------


@click.command(short_help="Start a workflow by its full name.")
@click.argument("name")
@click.argument("args", nargs=-1)
@click.option("--latest", is_flag=True, help="Start on the newest deployment (the default).")
@click.option("--deployment", metavar="ID", help="Start on this deployment.")
@click.option(
    "--run-id",
    metavar="ID",
    help="Name the run: if a run of NAME has this id, print it and start nothing.",
)
@click.option("--wait", is_flag=True, help="Wait for the run to end and print its result.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="With --wait: give up after this long.",
)
@backend_option
def start(
    name: str,
    args: tuple[str, ...],
    latest: bool,
    deployment: str | None,
    run_id: str | None,
    wait: bool,
    timeout: float | None,
) -> None:
    """Start workflow NAME (its full name) with ARGS, each one JSON value.

    Example: tether start workflow//shop.workflows//fulfill_order '"o-1"' 4599
    (put -- before an argument that starts with a dash: -- -5). Prints the
    run id; with --wait, then its result as JSON. With --run-id the start is
    idempotent: run again, it prints the same run and starts nothing.
    """
    if latest and deployment is not None:
        raise UsageProblem("give --latest or --deployment, not both")
    if timeout is not None and not wait:
        raise UsageProblem("--timeout needs --wait")
    params.check_workflow_name(name)
    values = params.parse_json_args(args)
    world = backend.world()
    target = "latest" if latest else deployment
    run = api.start(name, values, deployment_id=target, run_id=run_id, world=world)

    def announce() -> None:
        click.echo(run.run_id)
        render.err().print(
            f"{'started' if run.is_new else 'run exists, not started again:'} {run.run_id} "
            f"({render.short_name(name)} on {run.deployment_id})",
            soft_wrap=True,
        )

    if not wait:
        announce()
        return
    # A failed or cancelled run, or the timeout, raises: one line, exit code 1.
    waited, result = _wait_interruptibly(run, timeout, announce)
    if not waited:
        render.err().print(
            f"stopped waiting; run {run.run_id} goes on (tether inspect runs {run.run_id})",
            soft_wrap=True,
        )
        raise SystemExit(130)
    click.echo(json.dumps(render.jsonable(result), ensure_ascii=False))


def _wait_interruptibly(
    run: Run, timeout: float | None, first: Callable[[], None]
) -> tuple[bool, Any]:
    """Call ``first``, then wait for ``run``: ``(True, result)`` when it ends,
    ``(False, None)`` when Ctrl-C (from ``first`` on) stops the wait.

    Ctrl-C becomes a cancellation at an ``await``: a KeyboardInterrupt can land
    inside a lock's release or a thread's start and leave them broken.
    """
    asked = False

    def ask(signum: int, frame: object) -> None:
        nonlocal asked
        asked = True

    async def wait() -> tuple[bool, Any]:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGINT, task.cancel)
        if asked:  # pressed before the loop listened
            return False, None
        try:
            return True, await run.result_async(timeout=timeout)
        except asyncio.CancelledError:
            return False, None

    previous = signal.signal(signal.SIGINT, ask)
    try:
        first()
        return asyncio.run(wait())
    finally:
        signal.signal(signal.SIGINT, previous)


# -- sleeps and hooks -------------------------------------------------------------------


@click.group()
def sleeps() -> None:
    """Durable sleeps: wake a run's sleeps early."""


@sleeps.command()
@click.argument("run_id")
@backend_option
def wake(run_id: str) -> None:
    """End RUN_ID's pending sleeps now: the run continues at once."""
    world = backend.world()
    record = backend.require_run(world, run_id)
    if record.status in TERMINAL_STATUSES:
        raise CliError(f"run {record.run_id} has ended ({record.status}): no sleep to wake")
    woken = world.wake_sleeps(record.run_id)
    if not woken:
        raise CliError(f"run {record.run_id} has no pending sleep (status: {record.status})")
    serving = any(
        d.deployment_id == record.deployment_id and d.live_workers
        for d in world.list_deployments(None, deployments.LIVE_WITHIN_SECONDS)
    )
    render.err().print(
        f"woke {woken} sleep{'s' if woken > 1 else ''} of {record.run_id}"
        + (
            ""
            if serving
            else f" (no live worker of {record.deployment_id}: it continues when one starts)"
        ),
        soft_wrap=True,
    )


@click.group()
def hooks() -> None:
    """Hooks: resume a waiting run with a payload."""


@hooks.command()
@click.argument("token")
@click.argument("payload")
@backend_option
def resume(token: str, payload: str) -> None:
    """Deliver PAYLOAD (one JSON value) to the active hook TOKEN; prints the run's id.

    Example: tether hooks resume approve-o-1 '{"approved": true}'. The run
    continues on its own deployment.
    """
    try:
        value = json.loads(payload)
    except ValueError as exc:
        raise UsageProblem(f"the payload ({payload!r}) is not valid JSON: {exc}") from None
    world = backend.world()
    run_id = api.resume_hook(token, value, world=world)
    click.echo(run_id)
    record = world.get_run(run_id)
    where = f" on {record.deployment_id}" if record is not None else ""
    render.err().print(f"resumed hook {token!r}: run {run_id} continues{where}", soft_wrap=True)
