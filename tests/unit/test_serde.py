"""tether.serde: every supported type round-trips exactly; everything else fails clearly."""

from __future__ import annotations

import collections
import enum
import importlib.util
import io
import json
import math
import socket
import sys
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether import serde
from tether.errors import (
    FatalError,
    RetryableError,
    RunCancelledError,
    RunFailedError,
    SerializationError,
)
from tether.serde import RemoteError, dumps, loads, register, register_type

# --- helpers -----------------------------------------------------------------------------------


def roundtrip(value: Any) -> Any:
    text = dumps(value)
    json.loads(text)  # always plain, strict JSON
    return loads(text)


def assert_same(a: Any, b: Any) -> None:
    """Equal in type and value, recursively; nan equals nan and -0.0 keeps its sign."""
    assert type(a) is type(b), (a, b)
    if isinstance(a, float):
        if math.isnan(a):
            assert math.isnan(b)
        else:
            assert a == b and math.copysign(1.0, a) == math.copysign(1.0, b), (a, b)
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            assert_same(k, next(kb for kb in b if kb == k))
            assert_same(a[k], b[k])
    else:
        assert a == b, (a, b)


def zone(key: str) -> Any:
    zoneinfo = pytest.importorskip("zoneinfo")
    try:
        return zoneinfo.ZoneInfo(key)
    except zoneinfo.ZoneInfoNotFoundError:
        pytest.skip(f"time zone {key} not available")


# --- classes used by the tests (module level: importable by name) ------------------------------


@dataclass
class Item:
    sku: str
    qty: int = 1


@dataclass(frozen=True)
class Order:
    order_id: str
    items: list[Item]
    placed: datetime | None = None
    tags: frozenset[str] = frozenset()
    total: Decimal = Decimal("0")
    derived: str = field(init=False, default="computed")


class Color(enum.Enum):
    RED = "red"
    GREEN = (0, 255, 0)


class Perm(enum.Flag):
    R = 1
    W = 2


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class PaymentDeclined(Exception):
    def __init__(self, order_id: str, amount: Decimal) -> None:
        super().__init__(order_id, amount)
        self.order_id = order_id
        self.amount = amount


class NeedsKeyword(Exception):
    def __init__(self, *, code: int) -> None:
        super().__init__(f"code {code}")


@register(name="tests.serde.Renamed")
@dataclass
class Renamed:
    x: int


class Money:
    def __init__(self, cents: int, currency: str) -> None:
        self.cents = cents
        self.currency = currency

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Money) and (self.cents, self.currency) == (
            other.cents,
            other.currency,
        )

    def __hash__(self) -> int:
        return hash((self.cents, self.currency))


class EuroMoney(Money):
    pass


register_type(
    Money,
    "tests.money",
    lambda m: {"cents": m.cents, "currency": m.currency, "when": date(2026, 1, 1)},
    lambda d: Money(d["cents"], d["currency"]),
)


class Plain:
    pass


# --- round trips of every supported type -------------------------------------------------------

VALUES: list[Any] = [
    None,
    True,
    False,
    "",
    "héllo ✓ \x00 \n",
    0,
    -1,
    2**53,
    -(2**53),
    2**53 + 1,
    -(2**53) - 1,
    2**100,
    -(2**100),
    0.0,
    -0.0,
    1.0,
    1.5e-300,
    math.inf,
    -math.inf,
    b"",
    b"\x00\xffbytes",
    bytearray(b"abc"),
    [],
    [1, "a", None, [2.5, [True]]],
    (),
    (1,),
    (1, (2, (3, [4])), "x"),
    set(),
    {1, 2, 3},
    {"a", (1, 2), frozenset({3})},
    frozenset(),
    frozenset({1, "b"}),
    {},
    {"a": 1, "b": {"c": [1, 2, {"d": None}]}},
    {"$x": 1, "$tuple": [1, 2]},
    {"$": "dollar", "ok": 1},
    {(1, 2): "tuple key", 3: "int key", None: "none", True: "bool", 2.5: "float"},
    {frozenset({1}): {b"k": 1}},
    {"outer": {("nested", 1): [(), {"$bytes": "not really"}]}},
    datetime(2026, 1, 1, 12, 30, 45, 123456),
    datetime(2026, 1, 1, tzinfo=UTC),
    datetime(2026, 1, 1, 9, tzinfo=timezone(timedelta(hours=5, minutes=30))),
    datetime(2026, 1, 1, 9, tzinfo=timezone(-timedelta(hours=8))),
    date(2026, 2, 28),
    time(0, 0),
    time(23, 59, 59, 999999),
    time(8, 0, tzinfo=timezone(timedelta(hours=-3))),
    timedelta(0),
    timedelta(days=-3, seconds=5, microseconds=7),
    timedelta(days=999999999, hours=23),
    Decimal("1.10"),
    Decimal("-0"),
    Decimal("1E+3"),
    Decimal("Infinity"),
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
    Color.RED,
    Color.GREEN,
    Perm.R,
    Perm.R | Perm.W,
    Level.HIGH,
    {Level.LOW: "intenum key"},
    Item("a"),
    [Item("a", 2), {"nested": Item("b")}],
    Renamed(3),
    Money(100, "EUR"),
]


# Ids by position and type: a repr may hold an address or a set's hash order, and
# pytest-xdist needs every worker to collect the same ids.
@pytest.mark.parametrize(
    "value", VALUES, ids=[f"{i}-{type(v).__name__}" for i, v in enumerate(VALUES)]
)
def test_round_trip(value: Any) -> None:
    assert_same(value, roundtrip(value))


def test_nan_round_trips() -> None:
    out = roundtrip([math.nan, {"x": math.nan}])
    assert math.isnan(out[0]) and math.isnan(out[1]["x"])


def test_negative_zero_keeps_sign() -> None:
    assert math.copysign(1.0, roundtrip(-0.0)) == -1.0
    assert math.copysign(1.0, roundtrip({"z": (-0.0,)})["z"][0]) == -1.0


def test_datetimes_keep_offset_and_naivety() -> None:
    aware = datetime(2026, 3, 1, 10, tzinfo=timezone(timedelta(hours=2)))
    out = roundtrip(aware)
    assert out == aware and out.utcoffset() == timedelta(hours=2)
    naive = datetime(2026, 3, 1, 10)
    assert roundtrip(naive).tzinfo is None


def test_zoneinfo_is_kept_by_key() -> None:
    paris = zone("Europe/Paris")
    value = datetime(2026, 7, 1, 12, tzinfo=paris)
    out = roundtrip(value)
    assert out == value and out.tzinfo is paris and out.utcoffset() == timedelta(hours=2)
    assert roundtrip(time(9, tzinfo=paris)).tzinfo is paris


def test_zoneinfo_ambiguous_time_keeps_fold() -> None:
    new_york = zone("America/New_York")
    for fold in (0, 1):
        value = datetime(2026, 11, 1, 1, 30, tzinfo=new_york, fold=fold)
        out = roundtrip(value)
        assert (out.fold, out.utcoffset(), out.tzinfo) == (fold, value.utcoffset(), new_york)


def test_huge_int_beyond_str_digit_limit() -> None:
    value = -(7**30000)  # ~25000 digits: str() would refuse it
    assert roundtrip(value) == value


def test_big_ints_are_tagged_strings_for_other_languages() -> None:
    doc = json.loads(dumps([2**53, 2**53 + 1]))
    assert doc == {"v": 1, "d": [2**53, {"$int": str(2**53 + 1)}]}


def test_output_is_compact_versioned_json() -> None:
    text = dumps({"order_id": "o-1", "amount": 12.5, "items": [1, 2, 3], "name": "é"})
    assert text == '{"v":1,"d":{"order_id":"o-1","amount":12.5,"items":[1,2,3],"name":"é"}}'


def test_set_output_does_not_depend_on_hash_order() -> None:
    a = {"pear", "apple", "fig", "kiwi", 3, (1, 2)}
    b = set(sorted(a, key=str, reverse=True))
    assert dumps(a) == dumps(b)


def test_dict_with_dollar_key_is_not_mistaken_for_a_tag() -> None:
    for value in ({"$bytes": "aGk="}, {"$int": "5"}, {"$dc": ["x", {}]}, {"$ext": ["t", 1]}):
        assert_same(value, roundtrip(value))


def test_input_is_not_mutated() -> None:
    value = {"a": [1, 2**60, (1,)], "b": {"$c": 1}}
    before = repr(value)
    dumps(value)
    assert repr(value) == before


def test_loads_accepts_other_spacing_and_key_order() -> None:
    text = '{ "d" : {"a": [{"$tuple": [1, {"$int": "9007199254740993"}]}]}, "v" : 1 }'
    assert_same(loads(text), {"a": [(1, 2**53 + 1)]})


# --- property test -----------------------------------------------------------------------------

hashables = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary(),
    lambda inner: st.tuples(inner, inner) | st.frozensets(inner, max_size=3),
    max_leaves=8,
)
values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**200), max_value=2**200)
    | st.floats()
    | st.text()
    | st.binary(),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=4).map(tuple)
        | st.sets(hashables, max_size=4)
        | st.dictionaries(st.text(), inner, max_size=4)
        | st.dictionaries(hashables, inner, max_size=4)
    ),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(values)
def test_property_round_trip(value: Any) -> None:
    assert_same(value, roundtrip(value))


# --- dataclasses, enums, registration ----------------------------------------------------------


def test_dataclass_nested_in_list_round_trips() -> None:
    order = Order(
        "o-1",
        [Item("a", 2), Item("b")],
        placed=datetime(2026, 1, 1, tzinfo=UTC),
        tags=frozenset({"gift"}),
        total=Decimal("12.50"),
    )
    out = roundtrip({"orders": [order]})["orders"][0]
    assert out == order and type(out.items[0]) is Item and out.derived == "computed"


def test_dataclass_non_init_field_is_restored() -> None:
    order = Order("o-2", [])
    object.__setattr__(order, "derived", "changed")
    assert roundtrip(order).derived == "changed"


def test_registered_name_is_used_on_the_wire() -> None:
    assert json.loads(dumps(Renamed(1)))["d"] == {"$dc": ["tests.serde.Renamed", {"x": 1}]}


def test_register_as_plain_decorator_returns_the_class() -> None:
    @dataclass
    class Local:
        v: int

    assert register(Local) is Local
    assert roundtrip(Local(5)) == Local(5)


def test_register_rejects_unsupported_classes_and_name_clashes() -> None:
    with pytest.raises(TypeError):
        register(Plain)
    with pytest.raises(ValueError, match="already registered"):
        register(Item, name="tests.serde.Renamed")


def test_unknown_class_name_on_decode_raises_serialization_error() -> None:
    text = '{"v":1,"d":{"$dc":["nowhere.to.be.Found",{"x":1}]}}'
    with pytest.raises(SerializationError, match=r"nowhere\.to\.be\.Found.*register"):
        loads(text)
    with pytest.raises(SerializationError, match="Nope"):
        loads('{"v":1,"d":{"$enum":["tests.unit.Nope",  "A"]}}')


def test_decode_never_calls_non_class_callables() -> None:
    with pytest.raises(SerializationError):
        loads('{"v":1,"d":{"$dc":["os.system",{}]}}')
    with pytest.raises(SerializationError):
        loads('{"v":1,"d":{"$dc":["collections.OrderedDict",{}]}}')  # a class, not a dataclass


def test_local_dataclass_is_not_decodable_by_name() -> None:
    @dataclass
    class Hidden:
        v: int

    with pytest.raises(SerializationError, match="Hidden"):
        roundtrip(Hidden(1))


def test_enum_is_written_by_member_name() -> None:
    assert json.loads(dumps(Color.GREEN))["d"] == {"$enum": [serde._name_of(Color), "GREEN"]}


# --- exceptions --------------------------------------------------------------------------------


def raised(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as e:
        return e


def test_builtin_exception_round_trips_with_traceback() -> None:
    exc = raised(ValueError("bad value", 42))
    out = roundtrip(exc)
    assert type(out) is ValueError and out.args == ("bad value", 42)
    tb = out.__tether_traceback__  # type: ignore[attr-defined]
    assert "Traceback" in tb and "raised" in tb


def test_custom_exception_round_trips_with_attributes() -> None:
    exc = PaymentDeclined("o-1", Decimal("9.99"))
    exc.add_note("card expired")
    out = roundtrip(exc)
    assert type(out) is PaymentDeclined
    assert (out.order_id, out.amount, out.__notes__) == ("o-1", Decimal("9.99"), ["card expired"])
    assert out.__tether_traceback__ is None  # type: ignore[attr-defined]


def test_tether_errors_round_trip() -> None:
    retry = roundtrip(RetryableError("try later", retry_after="5s"))
    assert type(retry) is RetryableError and retry.retry_after == "5s" and str(retry) == "try later"
    retry_td = roundtrip(RetryableError("x", retry_after=timedelta(seconds=3)))
    assert retry_td.retry_after == timedelta(seconds=3)
    fatal = roundtrip(FatalError("no"))
    assert type(fatal) is FatalError and str(fatal) == "no"
    failed = roundtrip(RunFailedError("r-1", {"type": "ValueError", "message": "m"}))
    assert type(failed) is RunFailedError and failed.run_id == "r-1"
    assert failed.error == {"type": "ValueError", "message": "m"}
    cancelled = roundtrip(RunCancelledError("r-2"))
    assert type(cancelled) is RunCancelledError and cancelled.run_id == "r-2"


def test_exception_of_unimportable_class_becomes_remote_error() -> None:
    class Boom(Exception):
        pass

    out = roundtrip(raised(Boom("kaboom")))
    assert type(out) is RemoteError and isinstance(out, Exception)
    assert out.type_name.endswith("<locals>.Boom") and out.message == "kaboom"
    assert out.traceback is not None and "Boom: kaboom" in out.traceback
    assert str(out) == f"{out.type_name}: kaboom"
    again = roundtrip(out)  # stays remote, keeps what it knew
    assert (type(again), again.type_name, again.message, again.traceback) == (
        RemoteError,
        out.type_name,
        "kaboom",
        out.traceback,
    )


def test_exception_that_cannot_be_rebuilt_becomes_remote_error() -> None:
    out = roundtrip(NeedsKeyword(code=3))
    assert type(out) is RemoteError and out.message == "code 3"


def test_exception_with_unserializable_args_still_serializes() -> None:
    out = roundtrip(ValueError(lambda: 1, "x"))
    assert type(out) is RemoteError and out.type_name == "builtins.ValueError"


def test_exception_inside_containers() -> None:
    out = roundtrip({"errors": [KeyError("k"), (OSError(2, "missing"),)]})
    assert type(out["errors"][0]) is KeyError and out["errors"][0].args == ("k",)
    os_error = out["errors"][1][0]
    assert isinstance(os_error, OSError) and os_error.errno == 2


# --- errors ------------------------------------------------------------------------------------


def _generator() -> Any:
    yield 1


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        (lambda: 1, "function"),
        (object(), "object"),
        (Plain(), "Plain"),
        (Plain, "type"),
        (_generator(), "generator"),
        (io.StringIO(), "_io.StringIO"),
        (collections.OrderedDict(a=1), "collections.OrderedDict"),
        (memoryview(b"x"), "memoryview"),
    ],
    ids=lambda v: type(v).__name__,
)
def test_unserializable_values_raise(value: Any, type_name: str) -> None:
    with pytest.raises(SerializationError) as info:
        dumps(value, where="argument 1 of step//shop//charge")
    assert isinstance(info.value, TypeError)
    message = str(info.value)
    assert type_name in message and "argument 1 of step//shop//charge" in message
    assert "tether.serde.register" in message


def test_open_file_and_socket_raise() -> None:
    with open(__file__) as handle, pytest.raises(SerializationError, match="TextIOWrapper"):
        dumps({"f": handle})
    with socket.socket() as sock, pytest.raises(SerializationError, match="socket"):
        dumps([sock])


@pytest.mark.parametrize(
    ("value", "path"),
    [
        ({"items": [1, 2, lambda: 3]}, "['items'][2]"),
        ([(1, {"k": print})], "[0][1]['k']"),
        ({(1, 2): {"a": lambda: 1}}, "[(1, 2)]['a']"),
        ({"s": {lambda: 1}}, "['s']<set member>"),
        ({lambda: 1: 1}, "<key #0>"),
        ({"o": Item(sku=lambda: 1)}, "['o'].sku"),  # type: ignore[arg-type]
    ],
)
def test_error_message_names_the_path(value: Any, path: str) -> None:
    with pytest.raises(SerializationError) as info:
        dumps(value, where="argument 1 of step//shop//charge")
    assert f"at argument 1 of step//shop//charge -> {path}: supported types" in str(info.value)
    assert "'function'" in str(info.value) or "builtin_function_or_method" in str(info.value)


def test_cycles_raise_serialization_error() -> None:
    loop: list[Any] = [1]
    loop.append({"again": loop})
    with pytest.raises(SerializationError, match=r"\[1\]\['again'\].*cycle"):
        dumps(loop, where="result")
    self_dict: dict[str, Any] = {}
    self_dict["me"] = self_dict
    with pytest.raises(SerializationError, match="cycle"):
        dumps(self_dict)


def test_unknown_version_raises_value_error_naming_it() -> None:
    with pytest.raises(ValueError, match="version 2"):
        loads('{"v":2,"d":1}')
    with pytest.raises(ValueError, match="'x'"):
        loads('{"v":"x","d":1}')


def test_not_a_document_and_malformed_tags_raise_value_error() -> None:
    for text in ("[1]", '{"d":1}', '{"v":1,"d":{"$nope":1}}', '{"v":1,"d":{"$dec":"abc"}}'):
        with pytest.raises(ValueError):
            loads(text)


# --- register_type -----------------------------------------------------------------------------


def test_register_type_round_trips_custom_class() -> None:
    out = roundtrip({"price": Money(250, "EUR"), "many": (Money(1, "USD"),)})
    assert out == {"price": Money(250, "EUR"), "many": (Money(1, "USD"),)}
    assert json.loads(dumps(Money(1, "X")))["d"]["$ext"][0] == "tests.money"


def test_register_type_covers_subclasses_and_rejects_clashes() -> None:
    assert type(roundtrip(EuroMoney(5, "EUR"))) is Money  # the registered decode decides
    with pytest.raises(ValueError, match="already registered"):
        register_type(Plain, "tests.money", lambda p: 0, lambda v: Plain())
    with pytest.raises(ValueError, match="built-in"):
        register_type(dict, "my.dict", lambda d: 0, lambda v: {})


def test_unknown_extension_tag_raises() -> None:
    with pytest.raises(SerializationError, match=r"unknown\.stream"):
        loads('{"v":1,"d":{"$ext":["unknown.stream",1]}}')


# --- pydantic (only when installed) ------------------------------------------------------------


@pytest.mark.skipif(importlib.util.find_spec("pydantic") is None, reason="pydantic not installed")
def test_pydantic_model_round_trips() -> None:
    import pydantic

    class Address(pydantic.BaseModel):
        city: str

    class Customer(pydantic.BaseModel):
        name: str
        address: Address
        since: datetime

    register(Customer, name="tests.serde.Customer")
    value = Customer(name="Ada", address=Address(city="Paris"), since=datetime(2026, 1, 1))
    out = roundtrip([value])[0]
    assert type(out) is Customer and out == value


def test_pydantic_is_not_imported_by_serde() -> None:
    if "pydantic" not in sys.modules:
        dumps({"a": [1, Item("x")]})
        assert "pydantic" not in sys.modules
