"""The real PostgreSQL server the tests use, and a fresh schema on it per test.

``TETHER_TEST_POSTGRES_URL`` names the server (default: a local ``test``
database). When it cannot be reached the PostgreSQL tests are skipped, with
the reason, except under ``CI=true``, where they fail: CI must run them.
"""

from __future__ import annotations

import fcntl
import functools
import os
import tempfile
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from tether import config
from tether.worlds.postgres import redact

#: Every World a test can run on: ``world_url`` gives ``sqlite`` unless the test asks for both.
WORLDS = ("sqlite", "postgres")

POSTGRES_URL = os.environ.get(
    "TETHER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


@functools.cache
def _unreachable() -> str | None:
    """Why the test server cannot be used, or ``None`` when it can."""
    try:
        with psycopg.connect(POSTGRES_URL, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return str(exc).strip().splitlines()[0]
    return None


def require_postgres() -> None:
    """Skip (or, under ``CI=true``, fail) the test when the server is unreachable."""
    reason = _unreachable()
    if reason is None:
        return
    message = f"PostgreSQL at {redact(POSTGRES_URL)} is unreachable: {reason}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + " (CI=true: the PostgreSQL tests must run)", pytrace=False)
    pytest.skip(message + " (set TETHER_TEST_POSTGRES_URL or start the server)")


def admin() -> psycopg.Connection[tuple[object, ...]]:
    """A plain autocommit connection to the test database."""
    return psycopg.connect(POSTGRES_URL, autocommit=True)


def with_schema(url: str, name: str) -> str:
    """``url`` with tether's ``schema`` query parameter set to ``name``."""
    parts = urlsplit(url)
    query = f"{parts.query}&schema={name}" if parts.query else f"schema={name}"
    return urlunsplit(parts._replace(query=query))


@contextmanager
def fresh_schema() -> Iterator[str]:
    """A world URL on a new, uniquely named schema, dropped (with its tables) afterwards.

    The schema's user holds the server shared (``SERVER.shared()``) meanwhile.
    """
    require_postgres()
    name = f"tether_test_{uuid.uuid4().hex[:12]}"
    with SERVER.shared():
        with admin() as conn:
            conn.execute(f"CREATE SCHEMA {name}")
        url = with_schema(POSTGRES_URL, name)
        try:
            yield url
        finally:
            close_worlds(url)
            with admin() as conn:
                conn.execute(f"DROP SCHEMA {name} CASCADE")


class ServerLock:
    """Who may use the shared test server: many tests at once, or one test alone.

    A test that cuts every tether connection on the server (``exclusive``)
    would break the others running beside it under pytest-xdist, so it waits
    for them and they wait for it. Two ``flock`` files shared by the test
    processes of the machine: ``gate`` lets the exclusive user in first
    (new shared users queue behind it), ``users`` counts the shared ones. A
    process takes them once; nested shared uses (a module's schema and a
    test's) only count.
    """

    def __init__(self, folder: Path) -> None:
        self._gate = folder / "tether-tests-postgres.gate"
        self._users = folder / "tether-tests-postgres.users"
        self._mutex = threading.Lock()
        self._holders = 0
        self._held: int | None = None  # the fd of ``users`` while this process holds it
        self._exclusive = False

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._mutex:
            if self._holders == 0 and not self._exclusive:
                with self._locked(self._gate, fcntl.LOCK_SH):
                    self._held = self._lock(self._users, fcntl.LOCK_SH)
            self._holders += 1
        try:
            yield
        finally:
            with self._mutex:
                self._holders -= 1
                if self._holders == 0 and self._held is not None:
                    os.close(self._held)  # closing the file releases its lock
                    self._held = None

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        assert self._holders == 0, "a test alone on the server cannot also share it"
        with self._locked(self._gate, fcntl.LOCK_EX), self._locked(self._users, fcntl.LOCK_EX):
            self._exclusive = True
            try:
                yield
            finally:
                self._exclusive = False

    @contextmanager
    def _locked(self, path: Path, mode: int) -> Iterator[None]:
        fd = self._lock(path, mode)
        try:
            yield
        finally:
            os.close(fd)

    @staticmethod
    def _lock(path: Path, mode: int) -> int:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        fcntl.flock(fd, mode)
        return fd


SERVER = ServerLock(Path(tempfile.gettempdir()))


def close_worlds(url: str) -> None:
    """Close the process-wide World opened for ``url`` (it holds connections)."""
    config.close(url)


@contextmanager
def configured(url: str) -> Iterator[str]:
    """``url`` as this process's World for the block; its connections closed afterwards."""
    config.configure(url)
    try:
        yield url
    finally:
        config.configure(None)
        close_worlds(url)


def postgres_world_url() -> Iterator[str]:
    """Body of a ``world_url`` fixture: a fresh schema, configured as this process's World."""
    with fresh_schema() as url, configured(url):
        yield url


@contextmanager
def new_world_url(kind: str, folder: Path) -> Iterator[str]:
    """The URL of a World of ``kind`` (one of ``WORLDS``) that nobody used yet.

    SQLite: a file in ``folder`` (created on first open). PostgreSQL: a fresh
    schema, dropped afterwards.
    """
    if kind == "sqlite":
        yield f"sqlite:///{folder}/tether.db"
    elif kind == "postgres":
        with fresh_schema() as url:
            yield url
    else:
        raise ValueError(f"unknown World kind {kind!r}: expected one of {', '.join(WORLDS)}")
