"""The schema both backends keep: versioned migrations, the run listing and its cursors.

The statements the backends send are in ``sql``; this module holds what
builds on them: applying migrations, listing runs page by page, and when a
claim round should next run.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from typing import Any

from tether.errors import InvalidValueError
from tether.storable import can_be_identifier
from tether.worlds.records import RunFilter


def migrations(backend: str) -> list[tuple[int, list[str]]]:
    """Return ``(version, statements)`` for each migration file of ``backend``, in order.

    Files are ``worlds/migrations/<backend>/NNNN_name.sql``; statements are
    separated by a semicolon at the end of a line (outside ``$$`` quotes).
    """
    folder = resources.files("tether.worlds") / "migrations" / backend
    found: list[tuple[int, list[str]]] = []
    for entry in folder.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        version = int(entry.name.split("_", 1)[0])
        text = "\n".join(
            line for line in entry.read_text().splitlines() if not line.lstrip().startswith("--")
        )
        found.append((version, split_statements(text)))
    return sorted(found)


def apply_migrations(conn: Any, backend: str, *, param: str, real: str, now: float) -> None:
    """Apply ``backend``'s migrations that ``conn``'s database lacks, recording each.

    The caller holds the lock that keeps other processes from migrating at
    the same time, and commits. ``param`` is the driver's placeholder,
    ``real`` the column type of the time each one was applied.
    """
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations"
        f" (version INTEGER PRIMARY KEY, applied_at {real} NOT NULL)"
    )
    applied = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
    for version, statements in migrations(backend):
        if version in applied:
            continue
        for statement in statements:
            conn.execute(statement)
        conn.execute(
            f"INSERT INTO schema_migrations (version, applied_at) VALUES ({param}, {param})",
            (version, now),
        )


def split_statements(text: str) -> list[str]:
    """Split SQL at semicolons that end a line, leaving ``$$``-quoted bodies whole."""
    statements: list[str] = []
    current: list[str] = []
    for i, part in enumerate(text.split("$$")):
        if i % 2:
            current.append(f"$${part}$$")
            continue
        first, *rest = part.split(";\n")
        current.append(first)
        for piece in rest:
            statements.append("".join(current))
            current = [piece]
    statements.append("".join(current))
    return [s.strip().rstrip(";") for s in statements if s.strip()]


def run_query(select: str, filters: RunFilter, *, placeholder: str) -> tuple[str, list[Any]]:
    """Build the SQL and parameters that list runs matching ``filters``."""
    where, params = run_conditions(filters, placeholder=placeholder)
    if filters.cursor:
        created_at, run_id = decode_cursor(filters.cursor)
        op = "<" if filters.descending else ">"
        where.append(
            f"(created_at {op} {placeholder} OR (created_at = {placeholder}"
            f" AND run_id {op} {placeholder}))"
        )
        params += [created_at, created_at, run_id]
    order = "DESC" if filters.descending else "ASC"
    sql = select
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += f" ORDER BY created_at {order}, run_id {order} LIMIT {placeholder}"
    params.append(filters.limit)
    return sql, params


def count_query(filters: RunFilter, *, placeholder: str) -> tuple[str, list[Any]]:
    """The SQL that counts the runs matching ``filters`` (but their status), per status."""
    where, params = run_conditions(filters, placeholder=placeholder, status=False)
    sql = "SELECT status, COUNT(*) FROM runs"
    if where:
        sql += " WHERE " + " AND ".join(where)
    return sql + " GROUP BY status", params


def run_conditions(
    filters: RunFilter, *, placeholder: str, status: bool = True
) -> tuple[list[str], list[Any]]:
    """The WHERE terms of ``filters`` (without its cursor), and their parameters."""
    where: list[str] = []
    params: list[Any] = []
    for column, value in (
        ("status", filters.status if status else None),
        ("workflow_name", filters.workflow_name),
        ("deployment_id", filters.deployment_id),
        ("parent_run_id", filters.parent_run_id),
        ("rerun_of", filters.rerun_of),
    ):
        if value is not None:
            where.append(f"{column} = {placeholder}")
            params.append(value)
    if filters.created_after is not None:
        where.append(f"created_at >= {placeholder}")
        params.append(filters.created_after)
    if filters.created_before is not None:
        where.append(f"created_at < {placeholder}")
        params.append(filters.created_before)
    return where, params


def claim_again_at(row: Sequence[Any] | None, ahead: float) -> float | None:
    """When a claim round with ``ahead`` should run next, from ``Statements.first_due``'s row.

    Half a window before a task that may be claimed ahead, so that the round
    takes the timers of half a window at once; else when the task falls due.
    """
    if row is None:
        return None
    return float(row[0]) - (ahead / 2 if row[1] else 0.0)


def encode_cursor(created_at: float, run_id: str) -> str:
    """The cursor that continues a listing after the run with these keys."""
    return f"{created_at!r}/{run_id}"


def decode_cursor(cursor: str) -> tuple[float, str]:
    """Split a cursor made by ``encode_cursor``; raises ``ValueError`` naming a bad one."""
    created_at, sep, run_id = cursor.partition("/")
    try:
        # No run has an id a World cannot hold: the database would refuse to compare it.
        if not sep or not run_id or not can_be_identifier(run_id):
            raise ValueError
        return float(created_at), run_id
    except ValueError:
        raise InvalidValueError(
            f"invalid cursor {cursor!r}: pass the cursor printed by the previous page"
        ) from None
