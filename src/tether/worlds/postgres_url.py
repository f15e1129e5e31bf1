"""PostgreSQL world URLs: parsing them into libpq's terms, and showing them without a password."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg.conninfo import make_conninfo

from tether.errors import InvalidValueError, WorldUnavailableError
from tether.redaction import redact

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
#: Query parameters tether reads itself; every other one goes to libpq.
_OWN_PARAMS = ("schema", "pool_max", "reconnect_timeout")


def parse_url(url: str) -> tuple[str, dict[str, str]]:
    """Split a world URL into a libpq conninfo string and tether's own options.

    ``postgresql://user:pw@host:5432/db?schema=tether&pool_max=8`` puts the
    tables in schema ``tether`` (created if missing); other query parameters
    (``sslmode``, ``options``, ...) go to libpq as they are. Raises
    ``ValueError`` naming the URL (not its password) when it is not one.
    """
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("postgresql", "postgres"):
        raise InvalidValueError(
            f"invalid PostgreSQL world URL {redact(url)!r}: expected postgresql://..."
        )
    params = parse_qsl(parts.query, keep_blank_values=True)
    own = {key: value for key, value in params if key in _OWN_PARAMS}
    libpq = urlencode([(key, value) for key, value in params if key not in _OWN_PARAMS])
    base = urlunsplit(parts._replace(scheme="postgresql", query=libpq))
    extra: dict[str, Any] = {}
    if "connect_timeout" not in dict(params):
        extra["connect_timeout"] = 5
    if "application_name" not in dict(params):
        extra["application_name"] = "tether"
    name = own.get("schema")
    if name is not None:
        if not _IDENTIFIER.fullmatch(name):
            raise InvalidValueError(
                f"invalid schema {name!r} in {redact(url)!r}: expected letters, digits and _"
            )
        extra["options"] = (dict(params).get("options", "") + f" -csearch_path={name}").strip()
    try:
        return make_conninfo(base, **extra), own
    except psycopg.ProgrammingError as exc:
        raise InvalidValueError(f"invalid PostgreSQL world URL {redact(url)!r}: {exc}") from None


__all__ = ["WorldUnavailableError", "has_tether_schema", "parse_url", "redact"]


def has_tether_schema(url: str) -> bool:
    """Whether the database a URL names holds tether's tables (in its ``schema``, if named).

    Reads only: a client that must not create a World asks this first.
    Raises ``WorldUnavailableError`` when the server cannot be reached.
    """
    conninfo, _ = parse_url(url)
    try:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            row = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    except psycopg.OperationalError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        raise WorldUnavailableError(
            f"cannot connect to the PostgreSQL world {redact(url)}: {reason}"
        ) from exc
    return bool(row and row[0])
