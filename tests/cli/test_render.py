"""How the CLI shows stored values: plain JSON, one-line summaries, times and names."""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from decimal import Decimal

import pydantic
import pytest

from tether import FatalError, serde
from tether.cli import render


class Colour(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class Parcel:
    sku: str
    weight: Decimal


class Address(pydantic.BaseModel):
    city: str


class Opaque:
    def __repr__(self) -> str:
        return "<opaque>"


@pytest.mark.parametrize(
    ("value", "plain"),
    [
        (None, None),
        (True, True),
        (7, 7),
        ("x", "x"),
        (1.5, 1.5),
        (math.nan, "nan"),
        (-math.inf, "-inf"),
        ({"a": [1, (2, 3)]}, {"a": [1, [2, 3]]}),
        ({(1, 2): "pair", 3: "three"}, {"[1, 2]": "pair", "3": "three"}),
        ({3, 1, 2}, [1, 2, 3]),
        (frozenset({"b", "a"}), ["a", "b"]),
        (datetime(2026, 1, 31, 9, 30, tzinfo=UTC), "2026-01-31T09:30:00+00:00"),
        (date(2026, 1, 31), "2026-01-31"),
        (dtime(9, 30), "09:30:00"),
        (timedelta(minutes=2), 120.0),
        (Decimal("45.99"), "45.99"),
        (uuid.UUID(int=1), "00000000-0000-0000-0000-000000000001"),
        (Colour.RED, "red"),
        (b"\x00\xff", "AP8="),
        (FatalError("card declined"), {"type": "FatalError", "message": "card declined"}),
        (Parcel("a-1", Decimal("2.5")), {"sku": "a-1", "weight": "2.5"}),
        (Address(city="Lyon"), {"city": "Lyon"}),
        (Opaque(), "<opaque>"),
    ],
    ids=lambda v: type(v).__name__,
)
def test_jsonable_makes_plain_json(value: object, plain: object) -> None:
    assert render.jsonable(value) == plain
    json.dumps(render.jsonable(value))  # and it is JSON


def test_compact_keeps_one_short_line() -> None:
    assert render.compact({"a": 1}) == '{"a": 1}'
    long = render.compact("x" * 100, limit=20)
    assert len(long) == 20 and long.endswith("…")
    assert render.compact_args(["o-1", 4599], {"retry": True}) == '"o-1", 4599, retry=true'
    cut = render.compact_args(["y" * 50, "z" * 50], {}, limit=30)
    assert len(cut) == 30 and cut.endswith("…")


def test_error_summary_of_exceptions_stored_errors_and_anything_else() -> None:
    assert render.error_summary(ValueError("boom")) == "ValueError: boom"
    stored = {"type": "tether.errors.FatalError", "message": "no"}
    assert render.error_summary(stored) == "tether.errors.FatalError: no"
    assert render.error_summary({"type": "X"}) == "X: "
    assert render.error_summary([1, 2]) == "[1, 2]"
    remote = serde.loads(serde.dumps(FatalError("gone")))
    assert render.error_summary(remote).endswith("FatalError: gone")


def test_decode_falls_back_to_the_raw_document_then_the_text() -> None:
    assert render.decode(None) is None
    assert render.decode(serde.dumps({"n": (1, 2)})) == {"n": (1, 2)}
    # A class this process cannot rebuild: the tagged document's fields still show.
    unknown = json.dumps({"v": 1, "d": {"$dataclass": "shop.Gone", "fields": {"x": 1}}})
    assert render.decode(unknown) == {"$dataclass": "shop.Gone", "fields": {"x": 1}}
    assert render.decode('["not", "tagged"]') == ["not", "tagged"]
    assert render.decode("{not json") == "{not json"


def test_decode_args_splits_positional_and_keyword_arguments() -> None:
    assert render.decode_args(serde.dumps([["o-1", 2], {"fast": True}])) == (
        ["o-1", 2],
        {"fast": True},
    )
    assert render.decode_args(serde.dumps("alone")) == (["alone"], {})


def test_names_and_times() -> None:
    assert render.short_name("workflow//shop.workflows//fulfill_order") == "fulfill_order"
    assert render.short_name("workflow//broken") == "workflow//broken"
    assert render.short_name("step//shop//Cart.add") == "add"
    assert render.short_name("plain") == "plain"
    assert render.iso(None) is None
    assert render.iso(1_769_851_800.1234) == "2026-01-31T09:30:00.123Z"
    assert render.when(None) == "-"
    now = time.time()
    assert render.when(now - 90).endswith("(1m ago)")
    assert render.when(now + 2 * 3600 + 30).endswith("(in 2h)")
    assert render.when(now - 3 * 86400).endswith("(3d ago)")
    assert render.when(now).endswith("s ago)")
    assert str(render.status("failed")) == "failed"


def test_table_cells_show_separators_and_controls_as_escapes() -> None:
    from rich.console import Console

    out = render.table("TOKEN", "NOTE")
    out.add_row("tok-😀-\u2028-\x00-2", "a\u2029b\tc")
    console = Console(width=120, record=True, force_terminal=False)
    console.print(out)
    text = console.export_text()
    assert "tok-😀-\\u2028-\\u0000-2" in text and "a\\u2029b\\u0009c" in text
    assert "\u2028" not in text and "\u2029" not in text


def test_table_cells_are_data_not_markup() -> None:
    from rich.console import Console

    out = render.table("DEPLOYMENT")
    out.add_row("v[bold]1[/bold]")
    console = Console(width=80, record=True, force_terminal=False)
    console.print(out)
    assert "v[bold]1[/bold]" in console.export_text()
