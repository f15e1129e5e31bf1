"""Backends behind the World protocol, chosen by URL."""

from __future__ import annotations

from tether.clock import SYSTEM_CLOCK, Clock
from tether.errors import InvalidValueError
from tether.redaction import redact
from tether.worlds.base import World

DEFAULT_WORLD_URL = "sqlite:///.tether/tether.db"


def open_world(url: str, clock: Clock = SYSTEM_CLOCK) -> World:
    """Open the World a URL names: ``sqlite:///path.db`` (embedded) or ``postgresql://...``.

    ``clock`` is what the World reads for event times, due times, leases and
    heartbeats (a test passes a ``ManualClock`` to step them). Raises
    ``ValueError`` naming the URL when its scheme is not supported.
    """
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "sqlite":
        from tether.worlds.sqlite import SqliteWorld

        return SqliteWorld(url, clock)
    if scheme in ("postgresql", "postgres"):
        from tether.worlds.postgres import PostgresWorld

        return PostgresWorld(url, clock)
    raise InvalidValueError(
        f"unsupported world URL {redact(url)!r}: expected sqlite:///path/to/file.db"
        " (or sqlite:////absolute/path.db) or postgresql://user@host:5432/database"
    )
