"""Output: JSON for machines, rich tables for people, and the value formatting both share.

Data goes to stdout, everything said to the operator about it (hints,
warnings, progress) to stderr, so that ``tether ... --json | jq`` stays clean.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from tether import serde
from tether.shown import compact as compact
from tether.shown import compact_args as compact_args
from tether.shown import error_summary as error_summary
from tether.shown import jsonable as jsonable
from tether.shown import short_name as short_name

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
