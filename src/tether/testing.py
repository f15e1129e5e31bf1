"""Testing your workflows: replay tests of recorded histories against the current code.

Keep a few histories of real runs as fixtures (``tether inspect events RUN
--export FILE``, or ``export_history``) and replay them in CI::

    from tether.testing import replay
    from shop.workflows import fulfill_order

    def test_in_flight_orders_still_replay():
        replay("tests/histories/order-o-1.json", fulfill_order)

``replay`` runs the same replay as ``tether deployments check``: no step
runs, every answer comes from the history. It raises
``NonDeterminismError`` at the first request the code makes differently
from the history (its position, what the history holds, what the code
asked for), so the deploy that would break in-flight runs fails in CI.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from tether.config import resolve_world
from tether.errors import InvalidValueError, NonDeterminismError, RunNotFoundError
from tether.registry import Workflow
from tether.runtime.check import RunCheck, check_run
from tether.worlds.base import World
from tether.worlds.records import EventRecord, RunRecord

#: What a history file says it is, and the versions of it this tether reads.
FORMAT = "tether-history"
VERSIONS = (1,)


@dataclasses.dataclass(frozen=True)
class History:
    """A run and its event log, as recorded."""

    run: RunRecord
    events: list[EventRecord]


def export_history(
    run_id: str, path: str | Path | None = None, *, world: World | str | None = None
) -> dict[str, Any]:
    """The run's history as a versioned JSON document, written to ``path`` when given."""
    target = resolve_world(world)
    record = target.get_run(run_id)
    if record is None:
        raise RunNotFoundError(f"no run {run_id!r}: nothing to export")
    document = {
        "format": FORMAT,
        "version": VERSIONS[-1],
        "run": dataclasses.asdict(record),
        "events": [dataclasses.asdict(e) for e in target.list_events(run_id)],
    }
    if path is not None:
        # ASCII JSON: a NUL or a lone surrogate in a payload travels escaped.
        Path(path).write_text(json.dumps(document, indent=1) + "\n")
    return document


def load_history(source: str | Path | dict[str, Any] | History) -> History:
    """A history from a file written by ``export_history``, or from its document."""
    if isinstance(source, History):
        return source
    document = json.loads(Path(source).read_text()) if not isinstance(source, dict) else source
    where = source if not isinstance(source, dict) else "the document"
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise InvalidValueError(
            f'{where} is not a tether history (expected "format": {FORMAT!r}): write one'
            " with tether inspect events RUN --export FILE"
        )
    version = document.get("version")
    if version not in VERSIONS:
        raise InvalidValueError(
            f"{where} is a tether history of version {version!r}; this tether reads versions"
            f" {', '.join(map(str, VERSIONS))}: export it again with this tether"
        )
    run = RunRecord(**document["run"])
    events = [EventRecord(**e) for e in document["events"]]
    return History(run, events)


def replay(
    history: str | Path | dict[str, Any] | History, workflow: Workflow[..., Any]
) -> RunCheck:
    """Replay ``history`` against ``workflow`` as the current code defines it.

    Returns the check (``replays``) when the code asks for every recorded
    request as recorded; raises ``NonDeterminismError`` naming the first
    position where it does not, or why the run could not move to this code
    at all (its arguments no longer fit, the code raises where it is).
    """
    loaded = load_history(history)
    found = check_run(loaded.run, loaded.events, workflow)
    if found.verdict != "replays":
        raise NonDeterminismError(
            f"the history of run {loaded.run.run_id} does not replay on this code"
            f" ({found.verdict}): {found.reason}"
        )
    return found


__all__ = ["FORMAT", "VERSIONS", "History", "export_history", "load_history", "replay"]
