"""Output: JSON for machines, rich tables for people, and the value formatting both share.

Data goes to stdout, everything said to the operator about it (hints,
warnings, progress) to stderr, so that ``tether ... --json | jq`` stays clean.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import enum
import functools
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from decimal import Decimal
from typing import Any, TypeVar
from uuid import UUID

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from tether import serde
from tether.registry import parse_workflow_name

T = TypeVar("T")

#: Bulk actions over at least this many runs show a progress bar.
PROGRESS_FROM = 50

STATUS_STYLES = {
    "pending": "yellow",
    "running": "cyan",
    "waiting": "cyan",
    "retrying": "yellow",
    "completed": "green",
    "failed": "bold red",
    "cancelled": "magenta",
    "active": "cyan",
    "disposed": "dim",
    "conflict": "bold red",
    "closed": "green",
}

# -- consoles ---------------------------------------------------------------------


@functools.cache
def out() -> Console:
    """The console for data (stdout)."""
    return _console(stderr=False)


@functools.cache
def err() -> Console:
    """The console for hints, warnings and progress (stderr)."""
    return _console(stderr=True)


def _console(*, stderr: bool) -> Console:
    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        # Piped or captured: rich would assume 80 columns and cut run ids; a
        # reader of a pipe (grep, a log) wants whole lines instead.
        console = Console(stderr=stderr, highlight=False, width=200)
    return console


def emit_json(value: Any) -> None:
    """Print ``value`` (already JSON-able) as JSON on stdout."""
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def table(*headers: str) -> Table:
    """A table in the house style: bold headers, no box lines.

    The first column holds ids, which must stay whole to be copied: on a
    narrow terminal the other columns wrap instead.
    """
    result = _ShownTable(box=None, header_style="bold", pad_edge=False, show_edge=False)
    for i, header in enumerate(headers):
        result.add_column(header, no_wrap=i == 0, overflow="fold")
    return result


class _ShownTable(Table):
    """A table whose text cells show what a terminal would act on (line and paragraph
    separators, control and format characters) as ``\\uXXXX`` escapes."""

    def add_row(self, *renderables: Any, **kwargs: Any) -> None:
        # As Text, not str: a cell is data, never Rich markup (a token "v[bold]1").
        cells = (Text(shown(r)) if isinstance(r, str) else r for r in renderables)
        super().add_row(*cells, **kwargs)


def shown(text: str) -> str:
    """``text`` with what a terminal would act on (U+2028, controls, ...) escaped."""
    if text.isprintable():
        return text
    return "".join(
        c
        if c.isprintable() or c == " "
        else f"\\u{ord(c):04x}"
        if ord(c) < 0x10000
        else f"\\U{ord(c):08x}"
        for c in text
    )


@contextlib.contextmanager
def progress(description: str, total: int) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr for ``total`` items; yields ``advance(n)``.

    Shown only for many items and on a terminal: a log gets no bar frames.
    """
    if total < PROGRESS_FROM or not err().is_terminal:
        yield lambda n: None
        return
    columns = (
        TextColumn(description),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err(), transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)


def listing(
    page: Sequence[T],
    next_cursor: str | None,
    *,
    as_json: bool,
    to_json: Callable[[T], Any],
    table: Callable[[Sequence[T]], Any],
    empty: str,
) -> None:
    """Print one page of a listing (JSON, a table, or why it is empty), then the next-page hint."""
    if as_json:
        emit_json([to_json(item) for item in page])
    elif page:
        out().print(table(page))
    else:
        err().print(empty)
    next_page(next_cursor)


def next_page(cursor: str | None) -> None:
    """Tell the operator how to get the next page, if there is one."""
    if cursor is not None:
        err().print(f"next page: --cursor {cursor}", soft_wrap=True)


# -- names, statuses, times ---------------------------------------------------------


def short_name(name: str) -> str:
    """``fulfill_order`` for ``workflow//shop.workflows//fulfill_order`` (steps too)."""
    if name.startswith("workflow//"):
        try:
            return parse_workflow_name(name).short_name
        except ValueError:
            return name
    parts = name.split("//")
    return parts[-1].rsplit(".", 1)[-1] if len(parts) == 3 and parts[-1] else name


def status(value: str) -> Text:
    """A status word in its colour."""
    return Text(value, style=STATUS_STYLES.get(value, ""))


def iso(ts: float | None) -> str | None:
    """Epoch seconds as ISO 8601 in UTC (``2026-01-31T09:30:00.123Z``)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def when(ts: float | None) -> str:
    """Epoch seconds for a table: UTC date and time, and how long ago (or until)."""
    if ts is None:
        return "-"
    stamp = datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")
    return f"{stamp} ({_relative(ts - time.time())})"


def _relative(delta: float) -> str:
    seconds = abs(delta)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            amount = f"{int(seconds // size)}{unit}"
            break
    else:
        amount = f"{int(seconds)}s"
    return f"in {amount}" if delta > 1 else f"{amount} ago"


# -- stored values ---------------------------------------------------------------


def decode(text: str | None) -> Any:
    """A stored payload as Python values.

    This process does not import the application's code, so a class named in
    the payload may not be rebuildable here: then the raw tagged document is
    returned, which still shows every field.
    """
    if text is None:
        return None
    try:
        return serde.loads(text)
    except Exception:
        try:
            document = json.loads(text)
        except ValueError:
            return text
        return document.get("d", document) if isinstance(document, dict) else document


def decode_args(text: str) -> tuple[list[Any], dict[str, Any]]:
    """A run's or step's stored input as positional and keyword arguments."""
    value = decode(text)
    if isinstance(value, list) and len(value) == 2 and isinstance(value[1], dict):
        return list(value[0]), dict(value[1])
    return [value], {}


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON: containers as lists, times as ISO text, objects as fields."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Mapping):
        return {k if isinstance(k, str) else _key(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted((jsonable(v) for v in value), key=repr)
    if isinstance(value, datetime | date | dtime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal | UUID):
        return str(value)
    if isinstance(value, enum.Enum):
        return jsonable(value.value)
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode()
    if isinstance(value, BaseException):
        return {"type": _exception_type(value), "message": _exception_message(value)}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    dump = getattr(value, "model_dump", None)
    if callable(dump):  # a pydantic model
        return dump(mode="json")
    return repr(value)


def compact(value: Any, limit: int = 60) -> str:
    """``value`` on one short line, as JSON; cut with an ellipsis past ``limit``."""
    text = json.dumps(jsonable(value), ensure_ascii=False, separators=(", ", ": "))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def compact_args(args: Iterable[Any], kwargs: Mapping[str, Any], limit: int = 60) -> str:
    """Call arguments on one line: ``"o-1", 4599, retry=true``."""
    parts = [compact(a, limit) for a in args]
    parts += [f"{k}={compact(v, limit)}" for k, v in kwargs.items()]
    text = ", ".join(parts)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def error_summary(value: Any) -> str:
    """``Type: message`` for a stored error (a run's dict or a step's exception)."""
    if isinstance(value, BaseException):
        return f"{_exception_type(value)}: {_exception_message(value)}"
    if isinstance(value, Mapping) and "type" in value:
        return f"{value['type']}: {value.get('message', '')}"
    return compact(value)


def _key(value: Any) -> str:
    plain = jsonable(value)
    return plain if isinstance(plain, str) else json.dumps(plain)


def _exception_type(exc: BaseException) -> str:
    remote = getattr(exc, "type_name", None)  # serde.RemoteError keeps the original name
    return remote if isinstance(remote, str) else type(exc).__qualname__


def _exception_message(exc: BaseException) -> str:
    message = getattr(exc, "message", None)
    return message if isinstance(message, str) else str(exc)
