"""``tether deployments``: which code versions serve, which are stranded, how two differ."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click
from rich.console import Group
from rich.text import Text

from tether import deployments as tether_deployments
from tether.cli import backend, params, render, views
from tether.cli.backend import backend_option
from tether.errors import DeploymentNotFoundError
from tether.redaction import redact
from tether.worlds.base import World
from tether.worlds.records import DeploymentStatus

F = TypeVar("F", bound=Callable[..., Any])


def deployment_listing_options(fn: F) -> F:
    """``--environment`` and ``--live-within`` of the deployment listings."""
    fn = click.option(
        "--live-within",
        type=click.FloatRange(min=0, min_open=True),
        default=tether_deployments.LIVE_WITHIN_SECONDS,
        show_default=True,
        metavar="SECONDS",
        help="A worker counts as live if it sent a heartbeat this recently.",
    )(fn)
    return click.option(
        "--environment", metavar="NAME", help="Only deployments of this environment."
    )(fn)


@click.group()
def deployments() -> None:
    """Deployments (code versions): list them, compare two."""


@deployments.command("list")
@deployment_listing_options
@params.listing_options(sort_default="desc", with_data=False)
@backend_option
def list_command(**options: Any) -> None:
    """List deployments, newest first, with runs in flight and live workers.

    A deployment with runs in flight and no live worker is STRANDED: its runs
    wait until a worker of that deployment starts.
    """
    list_deployments(**options)


def list_deployments(
    *,
    as_json: bool,
    limit: int,
    cursor: str | None,
    sort: str,
    environment: str | None,
    live_within: float,
) -> None:
    """Print deployments (table or JSON) and warn about each stranded one on stderr."""
    world = backend.world()
    found = world.list_deployments(environment, live_within)
    ordered = found if sort == "desc" else list(reversed(found))
    start = params.offset_cursor(cursor)
    page = ordered[start : start + limit]
    next_cursor = str(start + limit) if start + limit < len(ordered) else None
    render.listing(
        page,
        next_cursor,
        as_json=as_json,
        to_json=views.deployment_json,
        table=views.deployments_table,
        empty="no deployments: no worker has registered one yet",
    )
    # Warn about every stranded deployment, on this page or not: runs that
    # wait silently are the thing an operator must not miss.
    for status in (d for d in found if d.stranded):
        _warn_stranded(status)


def _warn_stranded(status: DeploymentStatus) -> None:
    seen = (
        f"last heartbeat {render.when(status.last_heartbeat_at)}"
        if status.last_heartbeat_at is not None
        else "no worker of it ever registered"
    )
    render.err().print(
        Text.assemble(
            ("STRANDED ", "bold white on red"),
            (f"deployment {status.deployment_id!r}", "bold"),
            f" has {status.in_flight} run(s) in flight and no live worker ({seen}): ",
            "they wait until a worker of it starts "
            f"(TETHER_DEPLOYMENT_ID={status.deployment_id} tether worker MODULE...), "
            f"or cancel them (tether cancel --deployment {status.deployment_id}) "
            "and rerun them on latest (tether rerun --latest RUN_ID...).",
        ),
        soft_wrap=True,
    )


def show_deployment(world: World, deployment_id: str, *, as_json: bool) -> None:
    """One deployment: its state and its manifest (workflows, their steps and parameters)."""
    record = world.get_deployment(deployment_id)
    if record is None:
        raise DeploymentNotFoundError(
            f"deployment {deployment_id!r} is not registered in {redact(world.url)}: "
            "no worker of it ever started"
        )
    status = next(
        (
            d
            for d in world.list_deployments(None, tether_deployments.LIVE_WITHIN_SECONDS)
            if d.deployment_id == deployment_id
        ),
        None,
    )
    workflows: dict[str, Any] = record.manifest.get("workflows", {})
    if as_json:
        detail: dict[str, Any] = (
            views.deployment_json(status) if status else {"deployment_id": deployment_id}
        )
        detail["manifest"] = record.manifest
        render.emit_json(detail)
        return
    parts: list[Any] = []
    if status is not None:
        parts.append(views.deployments_table([status]))
    listing = render.table("WORKFLOW", "PARAMETERS", "STEPS")
    for name, info in sorted(workflows.items()):
        listing.add_row(
            name,
            ", ".join(_param(p) for p in info.get("params", [])),
            ", ".join(render.short_name(s) for s in info.get("steps", [])),
        )
    parts += [Text(f"\nworkflows ({len(workflows)})", style="bold"), listing]
    render.out().print(Group(*parts))
    if status is not None and status.stranded:
        _warn_stranded(status)


def _param(param: dict[str, Any]) -> str:
    text = str(param["name"]) + (f": {param['annotation']}" if param.get("annotation") else "")
    prefix = {"VAR_POSITIONAL": "*", "VAR_KEYWORD": "**"}.get(param.get("kind", ""), "")
    return prefix + text + (" = …" if param.get("default") else "")


# -- diff -----------------------------------------------------------------------------


@deployments.command()
@click.argument("old")
@click.argument("new")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
@backend_option
def diff(old: str, new: str, as_json: bool) -> None:
    """Compare deployments OLD and NEW workflow by workflow: what changed, is bridging safe?

    WHAT CHANGED lists changes to each workflow and to the steps it calls
    (code, parameters, return type, steps new, removed or renamed). BRIDGE is
    the separate verdict: bridging moves work from OLD to NEW (a rerun on
    latest, or a run that continues itself on latest). NEW (or OLD) may be
    "latest".
    """
    world = backend.world()
    old_id, new_id = _resolve(world, old), _resolve(world, new)
    result = tether_deployments.diff(old_id, new_id, world=world)
    if as_json:
        render.emit_json(
            {
                "old": result.old,
                "new": result.new,
                "safe": result.safe,
                "workflows": [
                    {
                        "workflow_name": c.workflow_name,
                        "status": c.status,
                        "safe": c.safe,
                        "reasons": c.reasons,
                        "changes": c.changes,
                    }
                    for c in result.workflows
                ],
            }
        )
        return
    out = render.table("WORKFLOW", "CHANGE", "WHAT CHANGED", "BRIDGE", "WHY UNSAFE")
    for change in result.workflows:
        out.add_row(
            change.workflow_name,
            change.status,
            Text("\n".join(render.shown(c) for c in change.changes) or "-"),
            Text("safe", "green") if change.safe else Text("UNSAFE", "bold red"),
            Text("\n".join(render.shown(r) for r in change.reasons) or "-"),
        )
    unsafe = [c for c in result.workflows if not c.safe]
    summary = (
        Text(f"\nbridging {old_id} -> {new_id} is safe for every workflow", "green")
        if not unsafe
        else Text(
            f"\nbridging {old_id} -> {new_id} is NOT safe for {len(unsafe)} of "
            f"{len(result.workflows)} workflows: do not rerun or continue their runs on "
            f"{new_id}",
            "bold red",
        )
    )
    render.out().print(Group(Text(f"{old_id} -> {new_id}", style="bold"), out, summary))


def _resolve(world: World, ref: str) -> str:
    if ref != "latest":
        return ref
    environment = tether_deployments.current_environment()
    latest = world.latest_deployment(environment)
    if latest is None:
        raise DeploymentNotFoundError(
            f"no deployment is registered in environment {environment!r} of {redact(world.url)}"
        )
    return latest.deployment_id
