"""What each page shows, read from the World through the functions the CLI uses.

Each function returns plain data for a template: no HTML here, and no
value computed a second way (names and values go through ``tether.shown``,
listings through the World's own filters, deployments through
``tether.deployments``).
"""

from __future__ import annotations

import dataclasses
import json
import shlex
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tether import deployments, serde
from tether.handles import Run
from tether.hooks import webhook_path
from tether.readers import upgraded_to
from tether.shown import error_summary, jsonable, short_name, traceback_of
from tether.worlds.base import World
from tether.worlds.records import (
    COMMAND_EVENTS,
    TERMINAL_STATUSES,
    RunFilter,
    RunRecord,
)
from tether.worlds.schema import encode_cursor

STATUSES = ("pending", "running", "completed", "failed", "cancelled")
#: The time ranges the runs page filters by, as (value, label, seconds).
RANGES = (("1h", "last hour", 3600), ("24h", "last day", 86400), ("7d", "last week", 604800))
PAGE_SIZE = 50
EVENTS_PAGE = 100
#: Values longer than this (as JSON text) are folded.
FOLD_AT = 400


@dataclass(frozen=True)
class Filters:
    """The runs page's filters, as the query string gives them."""

    status: str = ""
    workflow: str = ""
    deployment: str = ""
    q: str = ""
    range: str = ""
    cursor: str = ""

    @classmethod
    def parse(cls, query: dict[str, str]) -> Filters:
        return cls(**{name: query.get(name, "").strip() for name in cls.__dataclass_fields__})

    def run_filter(self, now: float, *, limit: int = PAGE_SIZE) -> RunFilter:
        seconds = next((s for value, _, s in RANGES if value == self.range), None)
        return RunFilter(
            status=self.status if self.status in STATUSES else None,
            workflow_name=self.workflow or None,
            deployment_id=self.deployment or None,
            created_after=None if seconds is None else now - seconds,
            limit=limit,
            cursor=self.cursor or None,
        )

    def query(self, **changes: str) -> str:
        """The query string of these filters with ``changes`` (empty values left out)."""
        values = {**self.__dict__, **changes}
        return "&".join(f"{k}={_quote(v)}" for k, v in values.items() if v)


def _quote(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="")


@dataclass
class Value:
    """A decoded value, shown as readable JSON; ``folded`` when long."""

    text: str
    folded: bool


def value(text: str | None) -> Value | None:
    """The readable JSON of a serialized value (``None`` when absent)."""
    if text is None:
        return None
    try:
        plain = jsonable(serde.loads(text))
    except Exception:  # a value this process cannot decode: show what is stored
        return Value(text, len(text) > FOLD_AT)
    shown = json.dumps(plain, indent=2, ensure_ascii=False)
    return Value(shown, len(shown) > FOLD_AT)


def arguments(text: str) -> Value | None:
    """A run's input as its arguments: a list, or ``{"args": [...], "kwargs": {...}}``."""
    try:
        args, kwargs = serde.loads(text)
    except Exception:  # not the usual shape: show what is stored
        return value(text)
    plain = (
        jsonable(list(args))
        if not kwargs
        else {"args": jsonable(list(args)), "kwargs": jsonable(kwargs)}
    )
    shown = json.dumps(plain, indent=2, ensure_ascii=False)
    return Value(shown, len(shown) > FOLD_AT)


def when(seconds: float | None) -> str:
    """A time as ``2026-12-01 20:15:03`` (UTC), or ``""``."""
    if seconds is None:
        return ""
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def took(start: float | None, end: float | None, now: float) -> str:
    """A duration as ``1.2 s``, ``3 min``, ``2.0 h``; from ``start`` to ``end`` or now."""
    if start is None:
        return ""
    seconds = max(0.0, (end if end is not None else now) - start)
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 86400 * 2:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def run_row(record: RunRecord, now: float) -> dict[str, Any]:
    """One row of the runs table."""
    return {
        "run_id": record.run_id,
        "status": record.status,
        "workflow": record.workflow_name,
        "short": short_name(record.workflow_name),
        "deployment": record.deployment_id,
        "created": when(record.created_at),
        "duration": took(record.started_at or record.created_at, record.completed_at, now),
    }


# -- the runs page ------------------------------------------------------------


def runs_page(world: World, filters: Filters) -> dict[str, Any]:
    """The runs page: a page of runs, the counts per status, the next page's cursor."""
    now = world.clock.time()
    if filters.q:
        records = _search(world, filters.q)
        next_cursor = ""
    else:
        chosen = filters.run_filter(now)
        records = world.list_runs(chosen)
        last = records[-1] if len(records) == chosen.limit else None
        next_cursor = encode_cursor(last.created_at, last.run_id) if last else ""
    counts = world.count_runs(filters.run_filter(now))
    return {
        "filters": filters,
        "rows": [run_row(r, now) for r in records],
        "counts": [(status, counts.get(status, 0)) for status in STATUSES],
        "total": sum(counts.values()),
        "matching": counts.get(filters.status, 0) if filters.status else sum(counts.values()),
        "next_cursor": next_cursor,
        "statuses": STATUSES,
        "ranges": RANGES,
        "deployments": [d.deployment_id for d in deployments.list_deployments(world=world)],
    }


def _search(world: World, q: str) -> list[RunRecord]:
    """The run with id ``q``, else the runs whose ids start with it (at most a page)."""
    exact = world.get_run(q)
    if exact is not None:
        return [exact]
    found = [world.get_run(run_id) for run_id in world.find_run_ids(q, PAGE_SIZE)]
    return sorted((r for r in found if r is not None), key=lambda r: -r.created_at)


def matching_ids(world: World, filters: Filters, limit: int = 10_000) -> list[str]:
    """Every run id the filters match (the "all matching" selection), at most ``limit``."""
    if filters.q:
        return [r.run_id for r in _search(world, filters.q)]
    chosen = filters.run_filter(world.clock.time(), limit=min(limit, 1000))
    ids: list[str] = []
    while len(ids) < limit:
        page = world.list_runs(chosen)
        ids += [r.run_id for r in page]
        if len(page) < chosen.limit:
            break
        last = page[-1]
        chosen = dataclasses.replace(chosen, cursor=encode_cursor(last.created_at, last.run_id))
    return ids[:limit]


# -- a run --------------------------------------------------------------------


@dataclass
class Request:
    """One request of the run (a step, a sleep, a hook), as the timeline draws it."""

    index: int
    kind: str
    name: str
    status: str
    start: float
    end: float | None
    detail: str = ""
    attempts: list[dict[str, Any]] = field(default_factory=list)
    payloads: list[Value | None] = field(default_factory=list)
    left: float = 0.0
    width: float = 0.0


def run_page(world: World, record: RunRecord, events_page: int = 0) -> dict[str, Any]:
    """Everything the run page shows."""
    now = world.clock.time()
    events = world.list_events(record.run_id)
    timeline = _timeline(world, record, events, now)
    handle = Run(record, world)
    streams = []
    for stream in world.list_streams(record.run_id):
        chunks, _ = world.read_chunks(stream.stream_id, 0, 500)
        streams.append(
            {
                "namespace": stream.namespace,
                "closed": stream.closed,
                "chunks": [value(c.data) for c in chunks],
            }
        )
    error = serde.loads(record.error) if record.error else None
    shown_events = events[events_page * EVENTS_PAGE : (events_page + 1) * EVENTS_PAGE]
    return {
        "run": run_row(record, now),
        "record": record,
        "started": when(record.started_at),
        "completed": when(record.completed_at),
        "input": arguments(record.input),
        "output": value(record.output),
        "error_line": error_summary(error) if error is not None else "",
        "traceback": traceback_of(error),
        "ended": record.status in TERMINAL_STATUSES,
        "timeline": timeline,
        "sleeping": [r for r in timeline if r.kind == "sleep" and r.status == "waiting"],
        "active_hooks": [r for r in timeline if r.kind == "hook" and r.status == "active"],
        "events": [
            {
                "seq": e.seq,
                "type": e.type,
                "at": when(e.created_at),
                "name": e.name or "",
                "attrs": json.dumps(jsonable(e.attrs), ensure_ascii=False) if e.attrs else "",
            }
            for e in shown_events
        ],
        "events_page": events_page,
        "events_more": len(events) > (events_page + 1) * EVENTS_PAGE,
        "streams": streams,
        "family": _family(world, record, handle),
    }


def _timeline(world: World, record: RunRecord, events: list[Any], now: float) -> list[Request]:
    steps = {s.step_id: s for s in world.list_steps(record.run_id)}
    waits = {w.wait_id: w for w in world.list_waits(record.run_id)}
    hooks = {h.hook_id: h for h in world.list_hooks(record.run_id)}
    attempts: dict[str, list[dict[str, Any]]] = {}
    payloads: dict[str, list[Value | None]] = {}
    urls: dict[str, str] = {}  # a webhook's URL as handed out (recorded when it was made)
    for e in events:
        if e.type in ("step_retrying", "step_failed") and e.correlation_id:
            attrs = e.attrs or {}
            attempts.setdefault(e.correlation_id, []).append(
                {
                    "attempt": attrs.get("attempt"),
                    "at": when(e.created_at),
                    "error": error_summary(serde.loads(e.payload)) if e.payload else "",
                    "handed_back": bool(attrs.get("handed_back")),
                }
            )
        if e.type == "hook_received" and e.correlation_id:
            payloads.setdefault(e.correlation_id, []).append(value(e.payload))
        if e.type == "hook_created" and e.correlation_id and (e.attrs or {}).get("url"):
            urls[e.correlation_id] = str((e.attrs or {})["url"])
    found: list[Request] = []
    for index, e in enumerate(x for x in events if x.type in COMMAND_EVENTS):
        key = e.correlation_id or ""
        if e.type == "step_created" and key in steps:
            s = steps[key]
            detail = f"attempt {s.attempt}"
            if s.error:
                detail += f" · {error_summary(serde.loads(s.error))}"
            found.append(
                Request(
                    index,
                    "step",
                    short_name(s.step_name),
                    s.status,
                    s.started_at or s.created_at,
                    s.completed_at,
                    detail,
                    attempts.get(key, []),
                )
            )
        elif e.type == "wait_created" and key in waits:
            w = waits[key]
            left = (
                ""
                if w.completed_at
                else f" · {took(now, w.resume_at, now)} left"
                if w.resume_at > now
                else " · due"
            )
            found.append(
                Request(
                    index,
                    "sleep",
                    "sleep",
                    w.status,
                    w.created_at,
                    w.completed_at or None,
                    f"until {when(w.resume_at)}{left}",
                )
            )
        elif e.type == "hook_created" and key in hooks:
            h = hooks[key]
            url = urls.get(key) or webhook_path(h.token)
            detail = f"token {h.token}" + (f" · POST {url}" if h.webhook else "")
            found.append(
                Request(
                    index,
                    "hook",
                    "webhook" if h.webhook else "hook",
                    h.status,
                    h.created_at,
                    h.disposed_at,
                    detail,
                    payloads=payloads.get(key, []),
                )
            )
            found[-1].name = h.token
    # The waterfall: each bar from its start to its end (or now), across the run's span.
    begin = record.created_at
    finish = max([record.completed_at or now, *[r.end or now for r in found]])
    span = max(finish - begin, 1e-6)
    for r in found:
        r.left = round(100 * (r.start - begin) / span, 2)
        r.width = max(0.5, round(100 * ((r.end or now) - r.start) / span, 2))
    return found


def _family(world: World, record: RunRecord, handle: Run) -> dict[str, Any]:
    """Parent, children, reruns, fork and upgrade lineage, and the continuation chain."""
    reruns = world.list_runs(RunFilter(rerun_of=record.run_id, limit=50))
    children = handle.children()
    continued_as = _continued_as(record)
    chain_back: list[str] = []
    current = record
    while current.parent_run_id and len(chain_back) < 20:
        parent = world.get_run(current.parent_run_id)
        if parent is None or _continued_as(parent) != current.run_id:
            break
        chain_back.insert(0, parent.run_id)
        current = parent
    chain_on: list[str] = []
    nxt = world.get_run(continued_as) if continued_as else None
    while nxt is not None and len(chain_on) < 20:
        chain_on.append(nxt.run_id)
        later = _continued_as(nxt)
        nxt = world.get_run(later) if later else None
    return {
        "parent": record.parent_run_id,
        "children": [(c.run_id, short_name(c.workflow_name)) for c in children],
        "rerun_of": record.rerun_of,
        "reruns": [r.run_id for r in reruns],
        "forked_from": handle.forked_from,
        "fork_point": handle.fork_point,
        "upgraded_to": upgraded_to(world, record),
        "chain_back": chain_back,
        "chain_on": chain_on,
    }


def _continued_as(record: RunRecord) -> str | None:
    """The run a self-upgrading workflow continued as (its output's ``continued_as``)."""
    if record.status != "completed" or not record.output:
        return None
    try:
        output = serde.loads(record.output)
    except Exception:
        return None
    nxt = output.get("continued_as") if isinstance(output, dict) else None
    return nxt if isinstance(nxt, str) else None


# -- deployments --------------------------------------------------------------


def deployments_page(world: World) -> dict[str, Any]:
    """Each deployment: environment, first seen, latest, workers, runs in flight, stranded."""
    now = world.clock.time()
    listed = deployments.list_deployments(world=world)
    latest: dict[str, str] = {}
    for d in sorted(listed, key=lambda d: d.created_at):
        if d.environment:
            latest[d.environment] = d.deployment_id
    rows = []
    for d in listed:
        by_status = world.count_runs(RunFilter(deployment_id=d.deployment_id))
        oldest = world.list_runs(
            RunFilter(status="pending", deployment_id=d.deployment_id, limit=1, descending=False)
        ) + world.list_runs(
            RunFilter(status="running", deployment_id=d.deployment_id, limit=1, descending=False)
        )
        first = min((r.created_at for r in oldest), default=None)
        rows.append(
            {
                "id": d.deployment_id,
                "environment": d.environment or "(never registered)",
                "first_seen": when(d.created_at),
                "latest": latest.get(d.environment) == d.deployment_id,
                "live_workers": d.live_workers,
                "heartbeat": took(d.last_heartbeat_at, None, now) + " ago"
                if d.last_heartbeat_at
                else "never",
                "in_flight": d.in_flight,
                "pending": by_status.get("pending", 0),
                "running": by_status.get("running", 0),
                "oldest": took(first, None, now) if first else "",
                "start_worker": f"TETHER_DEPLOYMENT_ID={shlex.quote(d.deployment_id)}"
                " tether worker MODULE",
                "stranded": d.stranded,
            }
        )
    return {"deployments": rows, "ids": [d.deployment_id for d in listed]}
