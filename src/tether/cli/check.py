"""``tether deployments check`` and ``upgrade``: moving in-flight runs to new code."""

from __future__ import annotations

import click
from rich.text import Text

from tether import deployments as tether_deployments
from tether.checking import Replay
from tether.cli import backend, params, render
from tether.cli.actions import confirm
from tether.cli.backend import backend_option
from tether.cli.errors import UsageProblem
from tether.cli.worker import import_modules

#: How each verdict shows in the table.
_STYLES = {"replays": "green", "diverges": "yellow", "incompatible": "bold red"}


@click.command(short_help="Replay OLD's in-flight runs against NEW's code.")
@click.argument("old")
@click.argument("new", default="latest")
@click.option(
    "--code",
    "modules",
    multiple=True,
    metavar="MODULE",
    help="Import NEW's code from MODULE (repeatable) and replay here, not on a live worker.",
)
@click.option("--workflow-name", metavar="NAME", help="Only runs of this workflow (full name).")
@click.option("--json", "as_json", is_flag=True, help="Print one record per run as JSON.")
@backend_option
def check(
    old: str, new: str, modules: tuple[str, ...], workflow_name: str | None, as_json: bool
) -> None:
    """Replay each in-flight run of deployment OLD against NEW's code; no step runs.

    Each run replays (it could move with nothing run again), diverges (the
    new code asks for something else: KEEPS says how many of its steps a move
    keeps) or is incompatible (NEW lacks the workflow, or its arguments do
    not fit). A live worker of NEW replays them, asked through the World;
    with --code, this process does. NEW is a deployment id, "latest" (the
    default), or "local": the code of MODULES itself, registered or not (a
    gate in a release's CI).
    """
    if new == "local" and not modules:
        raise UsageProblem("checking against 'local' needs its code: --code MODULE")
    if workflow_name is not None:
        params.check_workflow_name(workflow_name)
    if modules:
        import_modules(modules, "nothing to replay against")
    world = backend.world()
    results = tether_deployments.check(
        old, new, workflow_name=workflow_name, world=world, replay=_replay(modules)
    )
    if as_json:
        render.emit_json(
            [
                {
                    "run_id": r.run_id,
                    "verdict": r.verdict,
                    "fork_point": r.fork_point,
                    "reason": r.reason,
                }
                for r in results
            ]
        )
        return
    if not results:
        render.err().print(f"deployment {old!r} has no runs in flight: nothing to check")
        return
    table = render.table("RUN", "VERDICT", "KEEPS", "REASON")
    for r in results:
        keeps = "-" if r.fork_point is None else f"{r.fork_point} steps"
        table.add_row(r.run_id, Text(r.verdict, _STYLES[r.verdict]), keeps, r.reason)
    render.out().print(table)
    counts = {v: sum(1 for r in results if r.verdict == v) for v in _STYLES}
    render.err().print(
        f"{len(results)} runs of {old}: "
        + ", ".join(f"{n} {verdict}" for verdict, n in counts.items()),
        soft_wrap=True,
    )


@click.command(short_help="Move OLD's in-flight runs onto new code, keeping what they did.")
@click.argument("old")
@click.option("--to", "to", default="latest", show_default=True, metavar="ID|latest")
@click.option(
    "--code",
    "modules",
    multiple=True,
    metavar="MODULE",
    help="Import the target's code from MODULE (repeatable) and check here, not on a worker.",
)
@click.option("--workflow-name", metavar="NAME", help="Only runs of this workflow (full name).")
@click.option("--dry-run", is_flag=True, help="Say what would move, and move nothing.")
@click.option("-y", "--yes", is_flag=True, help="Do not ask before moving.")
@backend_option
def upgrade(
    old: str,
    to: str,
    modules: tuple[str, ...],
    workflow_name: str | None,
    dry_run: bool,
    yes: bool,
) -> None:
    """Fork each in-flight run of OLD that can move onto --to, and cancel it, at once.

    Each run is checked first (as by check). One that replays moves with
    nothing run again; one that diverges moves re-running from its fork
    point; one that is incompatible is left. A moved run is a new run on the
    target: steps before the fork point keep their results, sleeps their
    deadlines, hooks their tokens; the original ends cancelled, pointing to
    it (upgraded_to), in the same transaction. The check runs on a live
    worker of the target, or here with --code.
    """
    if workflow_name is not None:
        params.check_workflow_name(workflow_name)
    if modules:
        import_modules(modules, "nothing to move runs onto")
    world = backend.world()
    replay = _replay(modules)
    checks = tether_deployments.check(
        old, to, workflow_name=workflow_name, world=world, replay=replay
    )
    movable = [c for c in checks if c.fork_point is not None]
    if not checks:
        render.err().print(f"deployment {old!r} has no runs in flight: nothing to move")
        return
    if not dry_run and movable:
        confirm(
            f"Move {len(movable)} of {len(checks)} runs of {old} onto {to}?",
            action="move runs",
            yes=yes,
        )
    with render.progress("moving", len(checks)) as advance:
        done = tether_deployments.upgrade(
            old,
            to,
            workflow_name=workflow_name,
            dry_run=dry_run,
            world=world,
            on_progress=lambda _: advance(1),
            replay=replay,
        )
    table = render.table("RUN", "OUTCOME", "HOW", "NEW RUN / WHY")
    for u in done:
        how = (
            "nothing re-run"
            if u.verdict == "replays"
            else f"re-running from step {u.fork_point}"
            if u.fork_point is not None
            else "-"
        )
        table.add_row(u.run_id, u.outcome, how, u.moved_to or u.reason or "-")
    render.out().print(table)
    counts = {o: sum(1 for u in done if u.outcome == o) for o in ("moved", "would move", "left")}
    render.err().print(
        ", ".join(f"{n} {o}" for o, n in counts.items() if n or o == "left"), soft_wrap=True
    )


def _replay(modules: tuple[str, ...]) -> Replay:
    """Where the replay runs: here with the code given, else on a live worker of the target."""
    return "here" if modules else "worker"
