"""How the ``tether`` command fails: one line on stderr and an exit code, never a traceback.

Commands raise tether's own errors (or ``ValueError`` from the parse
functions) and let them travel; ``translate`` turns each into a
``CliError`` at one place, the top-level group.
"""

from __future__ import annotations

import os
import sqlite3
from typing import ClassVar

import click

from tether.errors import (
    ConfigurationError,
    DeploymentConflictError,
    InvalidTypeError,
    InvalidValueError,
    TetherError,
)
from tether.redaction import redact, scrub

#: Exit codes: 1 for something not found or an operation that failed, 2 for bad input.
FAILED = 1
USAGE = 2


class CliError(click.ClickException):
    """A failure reported as ``Error: <message>`` with exit code 1."""

    exit_code: ClassVar[int] = FAILED


class UsageProblem(CliError):
    """Bad input (a value, a name, a JSON argument): exit code 2."""

    exit_code: ClassVar[int] = USAGE


#: tether's errors that mean the command was given something it cannot take: exit 2.
BAD_INPUT = (
    InvalidValueError,
    InvalidTypeError,
    DeploymentConflictError,
    ConfigurationError,
    click.BadParameter,
)


def translate(exc: Exception, backend_url: str | None) -> CliError:
    """The one-line error a command's exception becomes; the password never shows."""
    message = _one_line(str(exc)) or type(exc).__name__
    kind: type[CliError] = CliError
    if isinstance(exc, BAD_INPUT):
        # Bad input: a value or name tether refused, start()'s argument check, a
        # setting such as TETHER_DEPLOYMENT_ID, a worker's deployment id registered
        # with other code. Each says what it expected.
        kind = UsageProblem
    elif isinstance(exc, LookupError | TimeoutError | TetherError):
        # Not found (run, deployment, workflow), a run that failed, was cancelled or
        # did not finish in time, a stored value that cannot be read: the message says.
        pass
    elif isinstance(exc, ValueError | TypeError):
        # The CLI's own parse functions (JSON arguments, cursors) say what they expected.
        kind = UsageProblem
    elif is_backend_error(exc):
        shown = redact(backend_url) if backend_url else "the backend"
        message = f"backend {shown} failed: {message}"
    else:
        message = f"unexpected {type(exc).__name__}: {message} (TETHER_DEBUG=1 shows the traceback)"
    return kind(scrub(message, backend_url) if backend_url else message)


def debugging() -> bool:
    """Whether ``$TETHER_DEBUG`` asks for tracebacks instead of one-line errors."""
    return os.environ.get("TETHER_DEBUG", "") not in ("", "0")


def _one_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else ""


def is_backend_error(exc: Exception) -> bool:
    """Errors of the storage itself: SQLite, the filesystem, the PostgreSQL driver."""
    if isinstance(exc, sqlite3.Error | OSError | ConnectionError):
        return True
    return any(cls.__module__.split(".")[0] == "psycopg" for cls in type(exc).__mro__)
