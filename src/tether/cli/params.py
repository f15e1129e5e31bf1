"""What the operator typed: the options listings share and the checks that explain bad input."""

from __future__ import annotations

import contextlib
import difflib
import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

from tether.cli import backend
from tether.cli.errors import UsageProblem
from tether.registry import parse_workflow_name
from tether.worlds.base import World
from tether.worlds.records import RUN_STATUSES, RunFilter

F = TypeVar("F", bound=Callable[..., Any])

#: Runs that can still be cancelled.
UNFINISHED = ("pending", "running")
#: How many known workflow names an unknown one's error names.
NAMES_SHOWN = 5
#: How alike (difflib's ratio) two function names must be for one to suggest the other.
ALIKE = 0.7


def check_status(value: str | None, valid: Sequence[str] = RUN_STATUSES) -> str | None:
    """``value`` if it is one of ``valid``; otherwise a usage error listing them."""
    if value is not None and value not in valid:
        raise UsageProblem(f"invalid status {value!r}: expected one of {', '.join(valid)}")
    return value


def check_workflow_name(value: str | None) -> str | None:
    """``value`` if it is a full workflow name; otherwise show the form (and a likely match)."""
    if value is None:
        return None
    try:
        parse_workflow_name(value)
    except ValueError as exc:
        hint = ""
        matches = _known_names_like(value)
        if matches:
            hint = f"; did you mean {' or '.join(matches[:3])}?"
        raise UsageProblem(f"{exc}{hint}") from None
    return value


def require_known_workflow(world: World, name: str | None) -> None:
    """Refuse a full workflow name that no deployment defines and no run has.

    Filtering by it would find nothing, silently (a typo, a renamed module):
    a usage error naming the closest names the deployments define instead.
    """
    if name is None:
        return
    known = _registered_workflows(world)
    if name in known or world.list_runs(RunFilter(workflow_name=name, limit=1)):
        return
    closest = _closest(name, known)
    if closest:
        hint = f"did you mean {' or '.join(closest)}?"
    elif known:
        names = sorted(known)
        hint = f"the deployments define {', '.join(names[:NAMES_SHOWN])}" + (
            f" and {len(names) - NAMES_SHOWN} more (tether inspect deployments ID lists them)"
            if len(names) > NAMES_SHOWN
            else ""
        )
    else:
        hint = "no deployment is registered yet (a worker registers its own)"
    raise UsageProblem(f"no deployment defines workflow {name!r} and no run has it: {hint}")


def parse_json_args(values: Sequence[str]) -> list[Any]:
    """Each value parsed as one JSON document (one positional argument)."""
    parsed: list[Any] = []
    for i, text in enumerate(values, start=1):
        try:
            parsed.append(json.loads(text))
        except ValueError as exc:
            raise UsageProblem(
                f"argument {i} ({text!r}) is not valid JSON: {exc}"
                + (f"; quote a string as '\"{text}\"'" if '"' not in text else "")
            ) from None
    return parsed


def listing_options(*, sort_default: str, with_data: bool = True) -> Callable[[F], F]:
    """``--json``, ``--limit``, ``--cursor``, ``--sort`` (and ``--with-data``) of a listing."""

    def decorate(fn: F) -> F:
        options = [
            click.option("--json", "as_json", is_flag=True, help="Print one JSON array."),
            click.option(
                "--limit",
                type=click.IntRange(min=1),
                default=20,
                show_default=True,
                help="Rows per page.",
            ),
            click.option("--cursor", default=None, help="Continue after the page that printed it."),
            click.option(
                "--sort",
                type=click.Choice(["asc", "desc"]),
                default=sort_default,
                show_default=True,
                help="Oldest first (asc) or newest first (desc).",
            ),
        ]
        if with_data:
            options.append(
                click.option("--with-data", is_flag=True, help="Show inputs and outputs (decoded).")
            )
        for option in reversed(options):
            fn = option(fn)
        return fn

    return decorate


def offset_cursor(cursor: str | None) -> int:
    """The position a cursor of an in-memory listing (a run's steps, events...) names."""
    if cursor is None:
        return 0
    if not cursor.isdigit():
        raise UsageProblem(
            f"invalid cursor {cursor!r}: pass the cursor printed by the previous page"
        )
    return int(cursor)


def _known_names_like(value: str) -> list[str]:
    """Registered workflow names whose function is called ``value`` (best effort)."""
    with contextlib.suppress(Exception):  # only a hint: never fail the error itself
        return _same_function(value, _registered_workflows(backend.world()))
    return []


def _registered_workflows(world: World) -> set[str]:
    """Every workflow name some registered deployment's manifest defines."""
    found: set[str] = set()
    for status in world.list_deployments(None, 0.0):
        record = world.get_deployment(status.deployment_id)
        found.update(record.manifest.get("workflows", {}) if record else ())
    return found


def _closest(name: str, known: set[str]) -> list[str]:
    """Up to three ``known`` names whose function is like ``name``'s, the most alike first.

    The functions are compared alone: names of one module share most of their
    text, which would make every one of them look alike.
    """

    def ratio(a: str, b: str) -> float:
        return difflib.SequenceMatcher(None, a, b).ratio()

    function = name.rsplit("//", 1)[-1]
    alike = [k for k in known if ratio(function, k.rsplit("//", 1)[-1]) >= ALIKE]
    return sorted(alike, key=lambda k: (-ratio(name, k), k))[:3]


def _same_function(value: str, names: set[str]) -> list[str]:
    """The ``names`` whose function is the one ``value`` names (``fulfill_order``, ``a.b``)."""
    wanted = value.rsplit("//", 1)[-1]
    return sorted(
        name
        for name in names
        if wanted in (name.rsplit("//", 1)[-1], name.rsplit("//", 1)[-1].rsplit(".", 1)[-1])
    )
