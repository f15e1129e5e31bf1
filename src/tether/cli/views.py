"""How each kind of record is shown: as a JSON object with stable keys, and as a table.

JSON keeps full names and ISO 8601 UTC times; tables use short names and
add a legend of the full workflow names (what ``--workflow-name`` takes).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from tether.cli import render
from tether.worlds.records import (
    DeploymentStatus,
    EventRecord,
    HookRecord,
    RunRecord,
    StepRecord,
    StreamRecord,
    WaitRecord,
)

# -- runs -------------------------------------------------------------------------


def run_json(record: RunRecord, *, with_data: bool) -> dict[str, Any]:
    """A run as JSON; inputs, output and error only ``with_data``."""
    row: dict[str, Any] = {
        "run_id": record.run_id,
        "workflow_name": record.workflow_name,
        "deployment_id": record.deployment_id,
        "status": record.status,
        "created_at": render.iso(record.created_at),
        "started_at": render.iso(record.started_at),
        "completed_at": render.iso(record.completed_at),
        "parent_run_id": record.parent_run_id,
        "rerun_of": record.rerun_of,
    }
    if with_data:
        row.update(_data_json(record.input, record.output, record.error))
    return row


def runs_table(records: Sequence[RunRecord], *, with_data: bool) -> RenderableType:
    """Runs as a table, followed by the full names of the workflows it shows."""
    headers = ["RUN ID", "WORKFLOW", "STATUS", "DEPLOYMENT", "CREATED (UTC)"]
    out = render.table(*headers, *(["INPUT", "OUTPUT / ERROR"] if with_data else []))
    for record in records:
        cells: list[str | Text] = [
            record.run_id,
            render.short_name(record.workflow_name),
            render.status(record.status),
            record.deployment_id,
            render.when(record.created_at),
        ]
        if with_data:
            cells += _data_cells(record.input, record.output, record.error)
        out.add_row(*cells)
    return Group(out, workflow_legend(r.workflow_name for r in records))


def workflow_legend(names: Iterable[str]) -> RenderableType:
    """Short name = full name, for each workflow shown: the value ``--workflow-name`` takes."""
    distinct = sorted(set(names))
    if not distinct:
        return Text("")
    legend = Table.grid(padding=(0, 2))
    legend.add_column(style="bold")
    legend.add_column()
    for name in distinct:
        legend.add_row(render.short_name(name), name)
    return Group(Text("\nworkflow names (for --workflow-name):", style="dim"), legend)


# -- steps, events, sleeps ------------------------------------------------------------


def step_json(record: StepRecord, *, with_data: bool) -> dict[str, Any]:
    """A step as JSON; input, output and error only ``with_data``."""
    row: dict[str, Any] = {
        "run_id": record.run_id,
        "step_id": record.step_id,
        "step_name": record.step_name,
        "status": record.status,
        "attempt": record.attempt,
        "created_at": render.iso(record.created_at),
        "started_at": render.iso(record.started_at),
        "completed_at": render.iso(record.completed_at),
        "retry_at": render.iso(record.retry_at),
    }
    if with_data:
        row.update(_data_json(record.input, record.output, record.error))
    return row


def steps_table(records: Sequence[StepRecord], *, with_data: bool) -> Table:
    """Steps as a table."""
    headers = ["#", "STEP", "STATUS", "ATTEMPT", "STARTED (UTC)", "COMPLETED (UTC)"]
    out = render.table(*headers, *(["INPUT", "OUTPUT / ERROR"] if with_data else []))
    for record in records:
        cells: list[str | Text] = [
            record.step_id,
            render.short_name(record.step_name),
            render.status(record.status),
            str(record.attempt),
            render.when(record.started_at),
            render.when(record.completed_at),
        ]
        if record.status == "retrying" and record.retry_at is not None:
            cells[2] = Text.assemble(render.status("retrying"), f" {render.when(record.retry_at)}")
        if with_data:
            cells += _data_cells(record.input, record.output, record.error)
        out.add_row(*cells)
    return out


def event_json(record: EventRecord, *, with_data: bool) -> dict[str, Any]:
    """An event as JSON; its payload only ``with_data``."""
    row: dict[str, Any] = {
        "run_id": record.run_id,
        "seq": record.seq,
        "type": record.type,
        "correlation_id": record.correlation_id,
        "name": record.name,
        "attrs": record.attrs,
        "created_at": render.iso(record.created_at),
    }
    if with_data:
        row["payload"] = render.jsonable(render.decode(record.payload))
    return row


def events_table(records: Sequence[EventRecord], *, with_data: bool) -> Table:
    """Events as a table."""
    headers = ["SEQ", "TYPE", "FOR", "AT (UTC)", "DETAILS"]
    out = render.table(*headers, *(["PAYLOAD"] if with_data else []))
    for record in records:
        target = _event_target(record)
        details = ", ".join(f"{k}={_attr(k, v)}" for k, v in (record.attrs or {}).items())
        cells = [str(record.seq), record.type, target, render.when(record.created_at), details]
        if with_data:
            payload = render.decode(record.payload)
            cells.append("" if record.payload is None else _payload_text(record.type, payload))
        out.add_row(*cells)
    return out


def _event_target(record: EventRecord) -> str:
    """What an event is about: ``step 2 charge``, ``sleep 0``, or the run's workflow."""
    kind = record.type.split("_", 1)[0]
    if kind == "run":
        return render.short_name(record.name or "")
    label = {"wait": "sleep"}.get(kind, kind)
    name = f" {render.short_name(record.name)}" if record.name else ""
    return f"{label} {record.correlation_id or ''}{name}".strip()


def _attr(key: str, value: Any) -> str:
    if key.endswith("_at") and isinstance(value, float | int):
        return render.when(value)
    return render.compact(value, 30)


def sleep_json(record: WaitRecord) -> dict[str, Any]:
    """A sleep as JSON."""
    return {
        "run_id": record.run_id,
        "wait_id": record.wait_id,
        "status": record.status,
        "resume_at": render.iso(record.resume_at),
        "created_at": render.iso(record.created_at),
        "completed_at": render.iso(record.completed_at),
    }


def sleeps_table(records: Sequence[WaitRecord]) -> Table:
    """Sleeps as a table."""
    out = render.table("#", "STATUS", "RESUMES AT (UTC)", "CREATED (UTC)", "COMPLETED (UTC)")
    for record in records:
        out.add_row(
            record.wait_id,
            render.status(record.status),
            render.when(record.resume_at),
            render.when(record.created_at),
            render.when(record.completed_at),
        )
    return out


# -- hooks and streams ------------------------------------------------------------------


def hook_json(record: HookRecord) -> dict[str, Any]:
    """A hook as JSON."""
    return {
        "token": record.token,
        "run_id": record.run_id,
        "hook_id": record.hook_id,
        "status": record.status,
        "webhook": bool(record.webhook),
        "metadata": record.metadata,
        "created_at": render.iso(record.created_at),
        "disposed_at": render.iso(record.disposed_at),
    }


def hooks_table(records: Sequence[HookRecord]) -> Table:
    """Hooks as a table, tokens first (what ``tether hooks resume`` takes)."""
    out = render.table("TOKEN", "RUN ID", "#", "KIND", "STATUS", "CREATED (UTC)", "METADATA")
    for record in records:
        out.add_row(
            record.token,
            record.run_id,
            record.hook_id,
            "webhook" if record.webhook else "hook",
            render.status(record.status),
            render.when(record.created_at),
            "" if record.metadata is None else render.compact(record.metadata),
        )
    return out


def stream_json(record: StreamRecord, last_chunk: Any, *, with_data: bool) -> dict[str, Any]:
    """A stream as JSON; its last chunk (decoded) only ``with_data``."""
    row: dict[str, Any] = {
        "stream_id": record.stream_id,
        "run_id": record.run_id,
        "namespace": record.namespace,
        "chunks": record.next_index,
        "closed": bool(record.closed),
        "created_at": render.iso(record.created_at),
        "closed_at": render.iso(record.closed_at),
    }
    if with_data:
        row["last_chunk"] = render.jsonable(last_chunk)
    return row


def streams_table(records: Sequence[StreamRecord], last: dict[str, Any] | None) -> Table:
    """Streams as a table; with ``last`` (chunks by stream id), a column of last chunks."""
    headers = ["RUN ID", "NAMESPACE", "CHUNKS", "STATE", "CREATED (UTC)"]
    out = render.table(*headers, *(["LAST CHUNK"] if last is not None else []))
    for record in records:
        cells: list[str | Text] = [
            record.run_id,
            record.namespace,
            str(record.next_index),
            render.status("closed") if record.closed else Text("open", "cyan"),
            render.when(record.created_at),
        ]
        if last is not None:
            chunk = last.get(record.stream_id)
            cells.append("" if chunk is None else render.compact(chunk))
        out.add_row(*cells)
    return out


# -- deployments ----------------------------------------------------------------------


def deployment_json(record: DeploymentStatus) -> dict[str, Any]:
    """A deployment's status as JSON."""
    return {
        "deployment_id": record.deployment_id,
        "environment": record.environment,
        "created_at": render.iso(record.created_at),
        "in_flight": record.in_flight,
        "live_workers": record.live_workers,
        "last_heartbeat_at": render.iso(record.last_heartbeat_at),
        "stranded": record.stranded,
    }


def deployments_table(records: Sequence[DeploymentStatus]) -> Table:
    """Deployments as a table; a stranded one cannot be missed."""
    out = render.table(
        "DEPLOYMENT",
        "ENVIRONMENT",
        "FIRST SEEN (UTC)",
        "IN FLIGHT",
        "LIVE WORKERS",
        "LAST HEARTBEAT (UTC)",
        "STATE",
    )
    for record in records:
        if record.stranded:
            state = Text(" STRANDED ", style="bold white on red")
        elif record.live_workers:
            state = Text("serving", style="green")
        else:
            state = Text("no live worker", style="dim")
        out.add_row(
            Text(record.deployment_id, style="bold red" if record.stranded else ""),
            record.environment or "?",
            render.when(record.created_at),
            str(record.in_flight),
            str(record.live_workers),
            render.when(record.last_heartbeat_at),
            state,
        )
    return out


# -- payloads ---------------------------------------------------------------------------


def _data_json(input_text: str, output: str | None, error: str | None) -> dict[str, Any]:
    args, kwargs = render.decode_args(input_text)
    return {
        "input": render.jsonable(args),
        "input_kwargs": render.jsonable(kwargs),
        "output": render.jsonable(render.decode(output)),
        "error": render.jsonable(render.decode(error)),
    }


def _data_cells(input_text: str, output: str | None, error: str | None) -> list[str | Text]:
    args, kwargs = render.decode_args(input_text)
    if error is not None:
        result: str | Text = Text(render.error_summary(render.decode(error)), style="red")
    elif output is not None:
        result = render.compact(render.decode(output))
    else:
        result = ""
    return [render.compact_args(args, kwargs), result]


def _payload_text(event_type: str, payload: Any) -> str:
    if event_type in ("run_failed", "step_failed", "step_retrying"):
        return render.error_summary(payload)
    if event_type in ("run_created", "step_created"):
        args, kwargs = (
            (list(payload[0]), dict(payload[1]))
            if isinstance(payload, list) and len(payload) == 2 and isinstance(payload[1], dict)
            else ([payload], {})
        )
        return render.compact_args(args, kwargs)
    return render.compact(payload)
