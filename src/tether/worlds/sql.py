"""The SQL both Worlds send, written once: a dialect for what differs, statements for the rest.

Statements are written with ``?`` placeholders; a ``Dialect`` renders them
for its driver (``%s`` for psycopg) and supplies the few fragments that
really differ between SQLite and PostgreSQL. ``SQLITE`` and ``POSTGRES`` hold
every statement rendered for each, once, at import.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tether.worlds.records import (
    Chunk,
    DeploymentRecord,
    EventRecord,
    HookRecord,
    RunRecord,
    StepRecord,
    StreamRecord,
    WaitRecord,
)

Row = tuple[Any, ...]


@dataclass(frozen=True)
class Dialect:
    """What a backend's SQL spells its own way."""

    #: The driver's placeholder.
    param: str
    #: The function that takes the smaller of two values.
    least: str
    #: Appended to a SELECT whose rows the transaction must hold until it ends.
    for_update: str
    #: The literal ``false`` of a boolean column.
    false: str
    #: How to order text ids that are positions ("1", "2", ... "10") as numbers.
    id_order: str
    #: A query answering whether the database compares text by code point (then the
    #: ids that start with a prefix form one range of the run id's index); ``None``:
    #: it always does.
    code_point_probe: str | None = None

    def render(self, sql: str) -> str:
        """``sql`` with its ``?`` placeholders in the driver's spelling."""
        return sql.replace("?", self.param)

    def order_ids(self, column: str) -> str:
        """The ORDER BY terms that sort ``column``'s positional ids as numbers."""
        return self.id_order.format(column)


SQLITE_DIALECT = Dialect(
    param="?",
    least="MIN",
    for_update="",  # a SQLite write transaction holds the whole database already
    false="0",
    id_order="CAST({0} AS INTEGER)",
)
POSTGRES_DIALECT = Dialect(
    param="%s",
    least="LEAST",
    for_update=" FOR UPDATE",
    false="false",
    id_order="length({0}), {0}",  # no cast: an id that is not a number must not fail
    # The database's collation, unless C-like (C, POSIX, C.UTF-8), orders text as a
    # language does (case and punctuation weigh less): compare a sample with byte order.
    code_point_probe=(
        'SELECT array_agg(t ORDER BY t) = array_agg(t ORDER BY t COLLATE "C") FROM (VALUES'
        " ('a'), ('B'), ('_'), ('-'), ('a_b'), ('ab'), ('a-'), ('Z'), ('1'), (' ')) AS v (t)"
    ),
)

RUN_COLUMNS = (
    "run_id, workflow_name, deployment_id, status, input, output, error,"
    " parent_run_id, rerun_of, created_at, started_at, completed_at, last_seq"
)
HOOK_COLUMNS = "run_id, hook_id, token, status, webhook, metadata, created_at, disposed_at"
STREAM_COLUMNS = "stream_id, run_id, namespace, next_index, closed, created_at, closed_at"


class Statements:
    """Every statement the two Worlds share, rendered for one dialect."""

    def __init__(self, dialect: Dialect) -> None:
        d = dialect
        q = d.render
        self.dialect = dialect
        # -- runs and events
        self.run_select = f"SELECT {RUN_COLUMNS} FROM runs"
        self.get_run = q(f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ?")
        # Ids that start with a prefix: a range of the primary key where text compares by
        # code point, else a test of each id. No LIKE: "_" and "%" are plain characters here.
        self.run_ids_in_range = q(
            "SELECT run_id FROM runs WHERE run_id >= ? AND run_id < ? ORDER BY run_id LIMIT ?"
        )
        self.run_ids_starting = q(
            "SELECT run_id FROM runs WHERE substr(run_id, 1, ?) = ? ORDER BY run_id LIMIT ?"
        )
        self.insert_run = q(
            "INSERT INTO runs (run_id, workflow_name, deployment_id, status, input, parent_run_id,"
            " rerun_of, created_at, last_seq) VALUES (?, ?, ?, 'pending', ?, ?, ?, ?, 1)"
        )
        self.insert_run_if_absent = q(
            "INSERT INTO runs (run_id, workflow_name, deployment_id, status, input, parent_run_id,"
            " rerun_of, created_at, last_seq) VALUES (?, ?, ?, 'pending', ?, ?, ?, ?, 1)"
            " ON CONFLICT (run_id) DO NOTHING RETURNING run_id"
        )
        self.insert_run_created = q(
            "INSERT INTO events (run_id, seq, type, name, payload, attrs, created_at)"
            " VALUES (?, 1, 'run_created', ?, ?, ?, ?)"
        )
        self.lock_run = q(
            "SELECT status, last_seq, deployment_id FROM runs WHERE run_id = ?" + d.for_update
        )
        self.list_events = q(
            "SELECT run_id, seq, type, correlation_id, name, payload, attrs, created_at"
            " FROM events WHERE run_id = ? AND seq > ? ORDER BY seq"
        )
        self.list_steps = q(
            "SELECT run_id, step_id, step_name, status, attempt, input, output, error,"
            " created_at, started_at, completed_at, retry_at FROM steps WHERE run_id = ?"
            f" ORDER BY created_at, {d.order_ids('step_id')}"
        )
        self.step_status = q("SELECT status FROM steps WHERE run_id = ? AND step_id = ?")
        self.run_and_step = q(
            "SELECT r.status, r.last_seq, r.deployment_id, s.status FROM runs r"
            " JOIN steps s ON s.run_id = r.run_id WHERE r.run_id = ? AND s.step_id = ?"
        )
        self.list_waits = q(
            "SELECT run_id, wait_id, status, resume_at, created_at, completed_at"
            f" FROM waits WHERE run_id = ? ORDER BY created_at, {d.order_ids('wait_id')}"
        )
        self.waiting = q(
            "SELECT wait_id FROM waits WHERE run_id = ? AND status = 'waiting'"
            f" ORDER BY created_at, {d.order_ids('wait_id')}"
        )
        # -- the queue
        queue_workflow = (
            "INSERT INTO tasks (kind, run_id, deployment_id, available_at)"
            " VALUES ('workflow', ?, ?, ?) ON CONFLICT (run_id, kind, step_id) DO UPDATE SET"
            f" available_at = {d.least}(tasks.available_at, excluded.available_at),"
            " lease_owner = NULL"
        )
        self.queue_workflow = q(queue_workflow + " WHERE tasks.lease_owner IS NULL")
        self.queue_workflow_force = q(queue_workflow)
        self.first_due = q(
            "SELECT available_at, kind = 'workflow' AND lease_owner IS NULL FROM tasks"
            " WHERE deployment_id = ? ORDER BY available_at LIMIT 1"
        )
        self.set_step_attempt = q("UPDATE steps SET attempt = ? WHERE run_id = ? AND step_id = ?")
        self.release_task = q(
            "UPDATE tasks SET lease_owner = NULL, available_at = ?"
            " WHERE run_id = ? AND step_id = ? AND lease_owner = ?"
        )
        self.step_lease = q(
            "SELECT s.status, s.attempt, t.lease_owner FROM steps s LEFT JOIN tasks t"
            " ON t.run_id = s.run_id AND t.kind = 'step' AND t.step_id = s.step_id"
            " WHERE s.run_id = ? AND s.step_id = ?"
        )
        self.release_leases = q(
            "UPDATE tasks SET lease_owner = NULL, available_at = ? WHERE lease_owner = ?"
        )
        self.extend_leases = q("UPDATE tasks SET available_at = ? WHERE lease_owner = ?")
        # -- hooks and streams
        self.hook_select = f"SELECT {HOOK_COLUMNS} FROM hooks"
        self.active_hook = q(
            "SELECT run_id, hook_id, webhook FROM hooks WHERE token = ? AND status = 'active'"
        )
        # The status is tested by the caller, not in the WHERE: there, a plan made on a
        # young table could find the run's hooks by scanning every active one (its index).
        self.run_hooks = q("SELECT hook_id, status FROM hooks WHERE run_id = ? ORDER BY created_at")
        self.stream_select = f"SELECT {STREAM_COLUMNS} FROM streams"
        self.get_stream = q(f"SELECT {STREAM_COLUMNS} FROM streams WHERE stream_id = ?")
        # Two writers may create a stream at once: insert-or-nothing, then lock the row.
        self.create_stream = q(
            "INSERT INTO streams (stream_id, run_id, namespace, next_index, closed, created_at)"
            f" VALUES (?, ?, ?, 0, {d.false}, ?) ON CONFLICT (stream_id) DO NOTHING"
        )
        self.lock_stream = q(
            "SELECT next_index, closed FROM streams WHERE stream_id = ?" + d.for_update
        )
        self.insert_chunk = q(
            "INSERT INTO stream_chunks (stream_id, idx, data, created_at) VALUES (?, ?, ?, ?)"
        )
        self.run_streams = q(
            "SELECT stream_id, namespace, closed, closed_at FROM streams WHERE run_id = ?"
        )
        self.stream_chunks = q(
            "SELECT idx, data, created_at FROM stream_chunks WHERE stream_id = ? ORDER BY idx"
        )
        self.insert_stream = q(
            "INSERT INTO streams (stream_id, run_id, namespace, next_index, closed, created_at,"
            " closed_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
        )
        self.update_stream = q(
            "UPDATE streams SET next_index = ?, closed = ?, closed_at = ? WHERE stream_id = ?"
        )
        self.read_chunks = q(
            "SELECT idx, data, created_at FROM stream_chunks WHERE stream_id = ? AND idx >= ?"
            " ORDER BY idx LIMIT ?"
        )
        # -- deployments and workers
        deployment_select = (
            "SELECT deployment_id, environment, manifest, created_at FROM deployments"
        )
        self.get_deployment = q(deployment_select + " WHERE deployment_id = ?")
        self.latest_deployment = q(
            deployment_select + " WHERE environment = ? ORDER BY created_at DESC LIMIT 1"
        )
        # Workers of one deployment may start at once: insert-or-nothing, then merge under a lock.
        self.create_deployment = q(
            "INSERT INTO deployments (deployment_id, environment, manifest, created_at)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (deployment_id) DO NOTHING RETURNING 1"
        )
        self.lock_manifest = q(
            "SELECT manifest FROM deployments WHERE deployment_id = ?" + d.for_update
        )
        self.update_manifest = q("UPDATE deployments SET manifest = ? WHERE deployment_id = ?")
        self.insert_worker = q(
            "INSERT INTO workers (worker_id, deployment_id, hostname, pid, started_at,"
            " heartbeat_at) VALUES (?, ?, ?, ?, ?, ?)"
        )
        self.worker_heartbeat = q(
            "UPDATE workers SET heartbeat_at = ?, cpu_load = ? WHERE worker_id = ?"
        )
        self.worker_stopped = q("UPDATE workers SET stopped_at = ? WHERE worker_id = ?")
        # -- replays asked of live workers
        self.ask_check = q(
            "INSERT INTO check_requests (request_id, deployment_id, body, created_at)"
            " VALUES (?, ?, ?, ?)"
        )
        self.check_waiting = q(
            "SELECT 1 FROM check_requests WHERE deployment_id = ? AND answer IS NULL"
            " AND (taken_until IS NULL OR taken_until < ?) LIMIT 1"
        )
        # One statement: of two workers taking at once, the second finds the row taken.
        self.take_check = q(
            "UPDATE check_requests SET taken_by = ?, taken_until = ? WHERE request_id = ("
            "SELECT request_id FROM check_requests WHERE deployment_id = ? AND answer IS NULL"
            " AND (taken_until IS NULL OR taken_until < ?) ORDER BY created_at LIMIT 1)"
            " AND (taken_until IS NULL OR taken_until < ?)"
            " RETURNING request_id, deployment_id, body, created_at, taken_by, answer"
        )
        self.answer_check = q(
            "UPDATE check_requests SET answer = ?, answered_at = ?"
            " WHERE request_id = ? AND answer IS NULL"
        )
        self.get_check = q(
            "SELECT request_id, deployment_id, body, created_at, taken_by, answer"
            " FROM check_requests WHERE request_id = ?"
        )
        self.drop_check = q("DELETE FROM check_requests WHERE request_id = ? OR created_at < ?")
        self.runs_in_flight = (
            "SELECT deployment_id, COUNT(*) FROM runs"
            " WHERE status IN ('pending', 'running') GROUP BY deployment_id"
        )
        self.workers_live = q(
            "SELECT deployment_id,"
            " SUM(CASE WHEN stopped_at IS NULL AND heartbeat_at >= ? THEN 1 ELSE 0 END),"
            " MAX(heartbeat_at) FROM workers GROUP BY deployment_id"
        )
        self.deployments_seen = (
            "SELECT deployment_id, environment, created_at FROM deployments"
            # Runs can be pinned to a deployment no worker ever registered: show those too.
            " UNION ALL SELECT deployment_id, '', MIN(created_at) FROM runs r"
            " WHERE status IN ('pending', 'running') AND NOT EXISTS (SELECT 1 FROM"
            " deployments d WHERE d.deployment_id = r.deployment_id) GROUP BY deployment_id"
        )

    def where(self, filters: dict[str, Any]) -> tuple[str, list[Any]]:
        """A ``WHERE`` clause testing each column of ``filters`` whose value is not ``None``."""
        used = {column: value for column, value in filters.items() if value is not None}
        if not used:
            return "", []
        clause = " AND ".join(f"{column} = {self.dialect.param}" for column in used)
        return " WHERE " + clause, list(used.values())


SQLITE = Statements(SQLITE_DIALECT)
POSTGRES = Statements(POSTGRES_DIALECT)


# -- rows to records -------------------------------------------------------------


def run_record(row: Row) -> RunRecord:
    """A ``runs`` row as a ``RunRecord``."""
    return RunRecord(*row)


def event_record(row: Row) -> EventRecord:
    """An ``events`` row as an ``EventRecord`` (``attrs`` decoded from JSON)."""
    attrs = json.loads(row[6]) if row[6] else None
    return EventRecord(row[0], row[1], row[2], row[3], row[4], row[5], attrs, row[7])


def step_record(row: Row) -> StepRecord:
    """A ``steps`` row as a ``StepRecord``."""
    return StepRecord(*row)


def wait_record(row: Row) -> WaitRecord:
    """A ``waits`` row as a ``WaitRecord``."""
    return WaitRecord(*row)


def hook_record(row: Row) -> HookRecord:
    """A ``hooks`` row as a ``HookRecord`` (metadata decoded from JSON)."""
    metadata = json.loads(row[5]) if row[5] else None
    return HookRecord(row[0], row[1], row[2], row[3], bool(row[4]), metadata, row[6], row[7])


def stream_record(row: Row) -> StreamRecord:
    """A ``streams`` row as a ``StreamRecord``."""
    return StreamRecord(row[0], row[1], row[2], row[3], bool(row[4]), row[5], row[6])


def chunk(row: Row) -> Chunk:
    """A ``stream_chunks`` row as a ``Chunk``."""
    return Chunk(*row)


def deployment_record(row: Row) -> DeploymentRecord:
    """A ``deployments`` row as a ``DeploymentRecord`` (manifest decoded)."""
    return DeploymentRecord(row[0], row[1], json.loads(row[2]), row[3])
