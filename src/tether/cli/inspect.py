"""``tether inspect``: runs, steps, events, sleeps, hooks, streams and deployments."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click
from rich.console import Group
from rich.table import Table
from rich.text import Text

from tether import testing
from tether.api import iter_runs
from tether.cli import backend, deploy, params, render, views
from tether.cli.backend import backend_option
from tether.cli.errors import UsageProblem
from tether.worlds.base import World
from tether.worlds.records import HOOK_STATUSES, STEP_STATUSES, WAIT_STATUSES, RunFilter, RunRecord
from tether.worlds.schema import decode_cursor, encode_cursor

T = TypeVar("T")


@click.group(short_help="Look at runs, steps, events, sleeps, hooks, streams.")
def inspect() -> None:
    """Look at runs, steps, events, sleeps, hooks, streams, deployments (--json for scripts)."""


# -- runs -------------------------------------------------------------------------


@inspect.command(short_help="List runs, or show one in detail.")
@click.argument("run_id", required=False)
@click.option("--status", help="pending, running, completed, failed or cancelled.")
@click.option(
    "--workflow-name",
    metavar="NAME",
    help="The full name as listed, e.g. workflow//shop.workflows//fulfill_order.",
)
@click.option("--deployment", metavar="ID", help="Runs pinned to this deployment.")
@click.option("--run-id", "only_run", metavar="RUN_ID", help="Only this run (as a listing).")
@params.listing_options(sort_default="desc")
@backend_option
def runs(
    run_id: str | None,
    status: str | None,
    workflow_name: str | None,
    deployment: str | None,
    only_run: str | None,
    as_json: bool,
    limit: int,
    cursor: str | None,
    sort: str,
    with_data: bool,
) -> None:
    """List runs, newest first; with RUN_ID (or a unique prefix of one), show that run in detail."""
    filters = RunFilter(
        status=params.check_status(status),
        workflow_name=params.check_workflow_name(workflow_name),
        deployment_id=deployment,
        limit=limit + 1,  # one more than shown tells whether another page exists
        cursor=cursor,
        descending=sort == "desc",
    )
    if cursor is not None:
        decode_cursor(cursor)  # a malformed cursor is a usage error before any query
    world = backend.world()
    params.require_known_workflow(world, workflow_name)
    if run_id is not None:
        _show_run(world, backend.require_run(world, run_id), as_json=as_json)
        return
    if only_run is not None:
        found = [backend.require_run(world, only_run)]
        page = [r for r in found if _matches(r, filters)]
    else:
        page = world.list_runs(filters)
    more = len(page) > limit
    page = page[:limit]
    next_cursor = encode_cursor(page[-1].created_at, page[-1].run_id) if more else None
    render.listing(
        page,
        next_cursor,
        as_json=as_json,
        to_json=lambda r: views.run_json(r, with_data=with_data),
        table=lambda rows: views.runs_table(rows, with_data=with_data),
        empty="no runs match",
    )


def _matches(record: RunRecord, filters: RunFilter) -> bool:
    return all(
        wanted is None or wanted == actual
        for wanted, actual in (
            (filters.status, record.status),
            (filters.workflow_name, record.workflow_name),
            (filters.deployment_id, record.deployment_id),
        )
    )


def _show_run(world: World, record: RunRecord, *, as_json: bool) -> None:
    """One run with its data, steps, sleeps, hooks, streams, parent, children and reruns."""
    steps = world.list_steps(record.run_id)
    sleeps = world.list_waits(record.run_id)
    hooks = world.list_hooks(record.run_id)
    streams = world.list_streams(record.run_id)
    children = list(iter_runs(world, RunFilter(parent_run_id=record.run_id, descending=False)))
    parent = world.get_run(record.parent_run_id) if record.parent_run_id else None
    reruns = list(iter_runs(world, RunFilter(rerun_of=record.run_id, descending=False)))
    if as_json:
        detail = views.run_json(record, with_data=True)
        detail["steps"] = [views.step_json(s, with_data=True) for s in steps]
        detail["sleeps"] = [views.sleep_json(w) for w in sleeps]
        detail["hooks"] = [views.hook_json(h) for h in hooks]
        detail["streams"] = [views.stream_json(s, None, with_data=False) for s in streams]
        detail["parent"] = views.run_json(parent, with_data=False) if parent else None
        detail["children"] = [views.run_json(c, with_data=False) for c in children]
        detail["reruns"] = [views.run_json(r, with_data=False) for r in reruns]
        render.emit_json(detail)
        return
    args, kwargs = render.decode_args(record.input)
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column()
    facts.add_row("run", record.run_id)
    facts.add_row("workflow", f"{render.short_name(record.workflow_name)}  {record.workflow_name}")
    facts.add_row("status", render.status(record.status))
    facts.add_row("deployment", record.deployment_id)
    facts.add_row("created", render.when(record.created_at))
    facts.add_row("started", render.when(record.started_at))
    facts.add_row("ended", render.when(record.completed_at))
    if parent is not None:
        facts.add_row("parent", _run_line(parent))
    elif record.parent_run_id:
        facts.add_row("parent", f"{record.parent_run_id} (not found)")
    if record.rerun_of:
        facts.add_row("rerun of", record.rerun_of)
    facts.add_row("input", render.compact_args(args, kwargs, limit=200))
    if record.output is not None:
        facts.add_row("output", render.compact(render.decode(record.output), limit=200))
    if record.error is not None:
        facts.add_row("error", Text(render.error_summary(render.decode(record.error)), "red"))
    parts: list[Any] = [facts]
    if steps:
        parts += [
            Text(f"\nsteps ({len(steps)})", style="bold"),
            views.steps_table(steps, with_data=True),
        ]
    if sleeps:
        parts += [Text(f"\nsleeps ({len(sleeps)})", style="bold"), views.sleeps_table(sleeps)]
    if hooks:
        parts += [Text(f"\nhooks ({len(hooks)})", style="bold"), views.hooks_table(hooks)]
    if streams:
        parts += [
            Text(f"\nstreams ({len(streams)})", style="bold"),
            views.streams_table(streams, None),
        ]
    for title, linked in (("children", children), ("reruns", reruns)):
        if linked:
            lines = Table.grid()
            for run in linked:
                lines.add_row(_run_line(run))
            parts += [Text(f"\n{title} ({len(linked)})", style="bold"), lines]
    parts.append(
        Text(f"\n{record.last_seq} events: tether inspect events {record.run_id}", style="dim")
    )
    render.out().print(Group(*parts))


def _run_line(record: RunRecord) -> Text:
    return Text.assemble(
        record.run_id,
        "  ",
        render.short_name(record.workflow_name),
        "  ",
        render.status(record.status),
        f"  on {record.deployment_id}",
    )


# -- a run's steps, events and sleeps ---------------------------------------------------


def _run_scoped(fn: Callable[..., None]) -> Callable[..., None]:
    """RUN_ID as an argument or ``--run-id`` (as the other listings filter)."""
    fn = click.option("--run-id", "run_id_option", metavar="RUN_ID", help="Same as RUN_ID.")(fn)
    return click.argument("run_id", required=False)(fn)


def _which_run(
    command: str, run_id: str | None, run_id_option: str | None, cursor: str | None
) -> str:
    """The run a per-run listing is about; its input is checked before any query."""
    chosen = _optional_run(run_id, run_id_option, cursor)
    if not chosen:
        raise UsageProblem(
            f"tether inspect {command} needs a run: tether inspect {command} RUN_ID "
            "(tether inspect runs lists them)"
        )
    return chosen


def _page(
    items: Sequence[T], cursor: str | None, limit: int, sort: str
) -> tuple[list[T], str | None]:
    """One page of an in-memory listing; its cursor is the position of the next row."""
    ordered = list(items) if sort == "asc" else list(reversed(items))
    start = params.offset_cursor(cursor)
    end = start + limit
    return ordered[start:end], str(end) if end < len(ordered) else None


@inspect.command()
@_run_scoped
@click.option("--status", help=", ".join(STEP_STATUSES) + ".")
@params.listing_options(sort_default="asc")
@backend_option
def steps(
    run_id: str | None,
    run_id_option: str | None,
    status: str | None,
    as_json: bool,
    limit: int,
    cursor: str | None,
    sort: str,
    with_data: bool,
) -> None:
    """List a run's steps, in the order the workflow asked for them."""
    chosen = _which_run("steps", run_id, run_id_option, cursor)
    params.check_status(status, STEP_STATUSES)
    world = backend.world()
    chosen = backend.require_run(world, chosen).run_id
    found = [s for s in world.list_steps(chosen) if status is None or s.status == status]
    page, next_cursor = _page(found, cursor, limit, sort)
    render.listing(
        page,
        next_cursor,
        as_json=as_json,
        to_json=lambda s: views.step_json(s, with_data=with_data),
        table=lambda rows: views.steps_table(rows, with_data=with_data),
        empty=f"run {chosen} has no steps" + (f" {status}" if status else ""),
    )


@inspect.command()
@_run_scoped
@click.option("--type", "event_type", metavar="TYPE", help="Only events of this type.")
@click.option(
    "--export",
    "export_to",
    metavar="FILE",
    type=click.Path(dir_okay=False, writable=True),
    help="Write the run's whole history to FILE (a versioned JSON file for tether.testing.replay).",
)
@params.listing_options(sort_default="asc")
@backend_option
def events(
    run_id: str | None,
    run_id_option: str | None,
    event_type: str | None,
    export_to: str | None,
    as_json: bool,
    limit: int,
    cursor: str | None,
    sort: str,
    with_data: bool,
) -> None:
    """List a run's event log, the truth every view is derived from.

    With --export FILE, write its whole history to FILE instead: keep it as a
    fixture and replay it against new code in a test (tether.testing.replay).
    """
    chosen = _which_run("events", run_id, run_id_option, cursor)
    world = backend.world()
    chosen = backend.require_run(world, chosen).run_id
    if export_to is not None:
        document = testing.export_history(chosen, export_to, world=world)
        render.err().print(
            f"exported the {len(document['events'])} events of {chosen} to {export_to}",
            soft_wrap=True,
        )
        return
    found = [e for e in world.list_events(chosen) if event_type in (None, e.type)]
    page, next_cursor = _page(found, cursor, limit, sort)
    render.listing(
        page,
        next_cursor,
        as_json=as_json,
        to_json=lambda e: views.event_json(e, with_data=with_data),
        table=lambda rows: views.events_table(rows, with_data=with_data),
        empty=f"run {chosen} has no such events",
    )


@inspect.command()
@_run_scoped
@click.option("--status", help=", ".join(WAIT_STATUSES) + ".")
@params.listing_options(sort_default="asc", with_data=False)
@backend_option
def sleeps(
    run_id: str | None,
    run_id_option: str | None,
    status: str | None,
    as_json: bool,
    limit: int,
    cursor: str | None,
    sort: str,
) -> None:
    """List a run's durable sleeps.

    Wake them early with: tether sleeps wake RUN_ID.
    """
    chosen = _which_run("sleeps", run_id, run_id_option, cursor)
    params.check_status(status, WAIT_STATUSES)
    world = backend.world()
    chosen = backend.require_run(world, chosen).run_id
    found = [w for w in world.list_waits(chosen) if status is None or w.status == status]
    page, next_cursor = _page(found, cursor, limit, sort)
    render.listing(
        page,
        next_cursor,
        as_json=as_json,
        to_json=views.sleep_json,
        table=views.sleeps_table,
        empty=f"run {chosen} has no sleeps" + (f" {status}" if status else ""),
    )


# -- deployments ----------------------------------------------------------------------


@inspect.command("deployments", short_help="Deployments, stranded ones flagged.")
@click.argument("deployment_id", required=False)
@deploy.deployment_listing_options
@params.listing_options(sort_default="desc", with_data=False)
@backend_option
def inspect_deployments(deployment_id: str | None, **options: Any) -> None:
    """List deployments (flagging stranded ones); with DEPLOYMENT_ID, show its manifest."""
    if deployment_id is not None:
        deploy.show_deployment(backend.world(), deployment_id, as_json=options["as_json"])
    else:
        deploy.list_deployments(**options)


# -- hooks and streams -----------------------------------------------------------------


@inspect.command()
@_run_scoped
@click.option("--status", help=", ".join(HOOK_STATUSES) + ".")
@params.listing_options(sort_default="asc", with_data=False)
@backend_option
def hooks(
    run_id: str | None,
    run_id_option: str | None,
    status: str | None,
    as_json: bool,
    limit: int,
    cursor: str | None,
    sort: str,
) -> None:
    """List hooks and their tokens, of one run or all runs.

    Resume one with: tether hooks resume TOKEN JSON.
    """
    chosen = _optional_run(run_id, run_id_option, cursor)
    params.check_status(status, HOOK_STATUSES)
    world = backend.world()
    if chosen is not None:
        chosen = backend.require_run(world, chosen).run_id
    page, next_cursor = _page(world.list_hooks(chosen, status), cursor, limit, sort)
    render.listing(
        page,
        next_cursor,
        as_json=as_json,
        to_json=views.hook_json,
        table=views.hooks_table,
        empty="no hooks match",
    )


@inspect.command()
@_run_scoped
@params.listing_options(sort_default="asc")
@backend_option
def streams(
    run_id: str | None,
    run_id_option: str | None,
    as_json: bool,
    limit: int,
    cursor: str | None,
    sort: str,
    with_data: bool,
) -> None:
    """List streams, of one run or all runs.

    --with-data shows each one's last chunk.
    """
    chosen = _optional_run(run_id, run_id_option, cursor)
    world = backend.world()
    if chosen is not None:
        chosen = backend.require_run(world, chosen).run_id
    page, next_cursor = _page(world.list_streams(chosen), cursor, limit, sort)
    last = {
        s.stream_id: _last_chunk(world, s.stream_id) if with_data and s.next_index else None
        for s in page
    }
    render.listing(
        page,
        next_cursor,
        as_json=as_json,
        to_json=lambda s: views.stream_json(s, last[s.stream_id], with_data=with_data),
        table=lambda rows: views.streams_table(rows, last if with_data else None),
        empty="no streams match",
    )


def _optional_run(run_id: str | None, run_id_option: str | None, cursor: str | None) -> str | None:
    params.offset_cursor(cursor)
    if run_id and run_id_option and run_id != run_id_option:
        raise UsageProblem(f"two different runs given: {run_id} and --run-id {run_id_option}")
    return run_id or run_id_option


def _last_chunk(world: World, stream_id: str) -> Any:
    chunks, _ = world.read_chunks(stream_id, -1, 1)
    return render.decode(chunks[0].data) if chunks else None
