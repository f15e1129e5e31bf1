"""Which World a command talks to: ``--backend``, else ``$TETHER_WORLD``, else the default.

The World is opened on first use, once per command. Client commands never
create a database: a SQLite file that does not exist is reported, not made.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

import click

from tether import config
from tether.cli.errors import CliError, UsageProblem, is_backend_error
from tether.errors import RunNotFoundError, WorldUnavailableError
from tether.redaction import redact
from tether.worlds import DEFAULT_WORLD_URL
from tether.worlds.base import World
from tether.worlds.records import RunRecord

F = TypeVar("F", bound=Callable[..., Any])

#: How many of the runs an ambiguous run id prefix matches are named in the error.
MATCHES_SHOWN = 5

_META_KEY = "tether.backend"


class Backend:
    """The World URL a command was given, and the World once opened."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._world: World | None = None
        #: Whether the command opened the process's World for the URL (then it closes it).
        self._opened = False

    @property
    def shown(self) -> str:
        """The URL as it may be printed: without its password."""
        return redact(self.url)

    def world(self, *, create: bool = False) -> World:
        """Open the World; unless ``create``, a missing SQLite database is an error."""
        if self._world is None:
            if not create:
                self._require_database()
            try:
                self._opened = not config.is_open(self.url)
                self._world = config.resolve_world(self.url)
            except Exception as exc:
                # A malformed URL (ValueError) says what it expected; a bug is a bug.
                if not is_backend_error(exc):
                    raise
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
                raise CliError(f"cannot reach backend {self.shown}: {reason}") from exc
        return self._world

    def close(self) -> None:
        """Close the World if this command opened it (a process that had it keeps it)."""
        if self._world is not None and self._opened:
            config.close(self.url)
        self._world = None

    def _require_database(self) -> None:
        if self.url.lower().startswith(("postgresql:", "postgres:")):
            from tether.worlds.postgres_url import has_tether_schema

            try:
                found = config.is_open(self.url) or has_tether_schema(self.url)
            except WorldUnavailableError as exc:
                reason = str(exc.__cause__ or exc).strip().splitlines()[0]
                raise CliError(f"cannot reach backend {self.shown}: {reason}") from exc
            if not found:
                raise CliError(
                    f"no tether database at {self.shown}: its schema holds no tether tables"
                    " (check ?schema=; a worker creates them on first start)"
                )
            return
        if not self.url.lower().startswith("sqlite:"):
            return
        from tether.worlds.sqlite import path_from_url

        path, _ = path_from_url(self.url)
        if not path.exists():
            raise CliError(
                f"no tether database at {path} (pass --backend URL or set TETHER_WORLD; "
                "a worker creates it on first start)"
            )


def backend_option(fn: F) -> F:
    """Add ``--backend URL`` to a command; the command reads it with ``current()``."""
    return click.option(
        "--backend",
        envvar="TETHER_WORLD",
        default=None,
        metavar="URL",
        expose_value=False,
        is_eager=True,  # parsed first, so that other options' checks can use the World
        callback=_remember,
        help=f"World URL (default: $TETHER_WORLD, else {DEFAULT_WORLD_URL}).",
    )(fn)


def current() -> Backend:
    """The backend of the running command."""
    ctx = click.get_current_context()
    backend = ctx.meta.get(_META_KEY)
    if backend is None:
        backend = _remember(ctx, None, None)
    assert isinstance(backend, Backend)
    return backend


def current_url(ctx: click.Context) -> str | None:
    """The backend URL of the command ``ctx`` ran, if it got that far (for error messages)."""
    backend = ctx.meta.get(_META_KEY)
    return backend.url if isinstance(backend, Backend) else None


def world() -> World:
    """The running command's World, opened now if needed (it must exist already)."""
    return current().world()


def require_run(world: World, run_id: str) -> RunRecord:
    """The run with that id, or the one run whose id starts with it.

    ``RunNotFoundError`` (exit code 1) when no id is or starts with it; a
    usage error (exit code 2) naming some of the matches when several start
    with it.
    """
    record = world.get_run(run_id) if run_id else None
    if record is not None:
        return record
    if not run_id:
        raise UsageProblem("a run id must not be empty (tether inspect runs lists them)")
    matches = world.find_run_ids(run_id, MATCHES_SHOWN + 1)
    if len(matches) > 1:
        shown = ", ".join(matches[:MATCHES_SHOWN])
        more = " and more" if len(matches) > MATCHES_SHOWN else ""
        raise UsageProblem(
            f"run id {run_id!r} is ambiguous: it starts the ids {shown}{more}; give more of the id"
        )
    record = world.get_run(matches[0]) if matches else None
    if record is None:
        raise RunNotFoundError(
            f"run {run_id!r} not found in {redact(world.url)}: no run id is or starts with it"
        )
    return record


def _remember(ctx: click.Context, _param: click.Parameter | None, value: str | None) -> Backend:
    backend = Backend(value or os.environ.get("TETHER_WORLD") or DEFAULT_WORLD_URL)
    ctx.meta[_META_KEY] = backend
    ctx.find_root().call_on_close(backend.close)
    return backend
