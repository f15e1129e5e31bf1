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
from tether.cli.errors import CliError, is_backend_error
from tether.errors import RunNotFoundError
from tether.redaction import redact
from tether.worlds import DEFAULT_WORLD_URL
from tether.worlds.base import World
from tether.worlds.records import RunRecord

F = TypeVar("F", bound=Callable[..., Any])

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
    """The run with that id; ``RunNotFoundError`` (exit code 1) if there is none."""
    record = world.get_run(run_id)
    if record is None:
        raise RunNotFoundError(f"run {run_id!r} not found in {redact(world.url)}")
    return record


def _remember(ctx: click.Context, _param: click.Parameter | None, value: str | None) -> Backend:
    backend = Backend(value or os.environ.get("TETHER_WORLD") or DEFAULT_WORLD_URL)
    ctx.meta[_META_KEY] = backend
    ctx.find_root().call_on_close(backend.close)
    return backend
