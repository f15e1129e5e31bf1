"""Versioned, tagged JSON serialization for every value that crosses tether's durable boundary.

``dumps`` writes compact JSON text ``{"v":1,"d":<encoded>}``; ``loads`` reads it back. There is
no pickle: the text is plain JSON that other code and other languages can read. JSON-native
values (str, bool, None, finite float, int within +-2**53, lists, and dicts whose keys are all
``str`` not starting with ``$``) are written as they are. Anything else becomes a *tagged value*,
a JSON object with a single key that starts with ``$``::

    tag          payload                                  Python value
    $int         decimal string ("0x.." hex beyond the     int outside +-2**53
                 int/str digit limit)
    $float       "nan" | "inf" | "-inf"                   non-finite float (-0.0 is plain JSON)
    $bytes       base64 string                            bytes
    $bytearray   base64 string                            bytearray (keeps its type)
    $tuple       [items]                                  tuple
    $set         [items] (sorted by their JSON text)      set
    $frozenset   [items] (sorted by their JSON text)      frozenset
    $map         [[key, value], ...]                      dict with a non-str or "$..." key
    $dt          ISO string | [ISO string, zone key]      datetime (naive, offset, ZoneInfo)
    $date        ISO string                               date
    $time        ISO string | [ISO string, zone key]      time
    $td          [days, seconds, microseconds]            timedelta
    $dec         str(value)                               Decimal
    $uuid        canonical string                         UUID
    $enum        [name, member] | [name, null, value]     Enum member (value: composite Flag)
    $dc          [name, {field: value}]                   dataclass instance
    $pyd         [name, model_dump(mode="python")]        pydantic v2 model
    $exc         {"type", "message", "traceback",         exception
                  "args"?, "state"?}
    $ext         [tag, value]                             a type added with ``register_type``

Payloads are themselves encoded with these rules. A user dict never becomes a JSON object with a
``$`` key, so tags are never ambiguous. ``name`` is the class's registered name, by default
``module.qualname``; ``loads`` finds it in the registry or by importing that name, and only
accepts a dataclass, Enum, pydantic model or exception class. Datetimes with a tzinfo other than
``ZoneInfo`` come back with a fixed-offset ``timezone`` (same instant and offset). An exception
whose class cannot be rebuilt comes back as ``RemoteError``.

Text is stored as UTF-8. Every ``str`` UTF-8 can hold comes back as it was (NUL, astral
characters, U+2028 and U+2029 included: JSON escapes what must be); one holding a surrogate
code point (U+D800 to U+DFFF, e.g. from ``surrogateescape``) cannot be stored, and ``dumps``
refuses it. An exception is the one value never refused: a surrogate in its message, traceback
or arguments is written as the six characters ``\\udXXX``, so that any failure can be recorded.

What identifiers (hook tokens, stream namespaces, run and deployment ids) may be is
``tether.storable``'s.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import importlib
import json
import json.encoder
import reprlib
import sys
import traceback as _traceback
from collections.abc import Callable, Iterable, Sequence
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from enum import Enum
from typing import Any, TypeVar, overload
from uuid import UUID
from zoneinfo import ZoneInfo

from tether.errors import (
    InvalidTypeError,
    InvalidValueError,
    SerializationError,
)
from tether.storable import SURROGATE, escape_surrogates

__all__ = [
    "FORMAT_VERSION",
    "RemoteError",
    "check_json",
    "dumps",
    "loads",
    "register",
    "register_type",
]

FORMAT_VERSION = 1
"""The envelope version that ``dumps`` writes and ``loads`` reads."""

_T = TypeVar("_T", bound=type)
_Encoder = Callable[[Any], Any]

# Explicit registrations: name -> class and class -> name (the name used when encoding).
_REGISTRY: dict[str, type] = {}
_NAMES: dict[type, str] = {}
# Names resolved by import on decode (a cache; explicit registrations take precedence).
_RESOLVED: dict[str, type] = {}
# Extension types from register_type.
_EXT_BY_TAG: dict[str, tuple[type, Callable[[Any], Any]]] = {}
_EXT_BY_TYPE: dict[type, _Encoder] = {}


def dumps(value: object, *, where: str = "value") -> str:
    """Serialize ``value`` to versioned, compact JSON text.

    Raises ``SerializationError`` (a ``TypeError``) for a value of an unsupported type, a
    reference cycle or a str holding a lone surrogate; the message names the type (or the str)
    and where it sat: ``where`` (e.g. ``"argument 1 of step//shop//charge"``) followed by the
    path inside ``value``.
    """
    try:
        text = _PREFIX + _json_text(_enc(value)) + "}"
    except _Unsupported as fail:
        raise SerializationError(fail.describe(where)) from None
    except RecursionError:
        raise SerializationError(_recursion_message(value, where)) from None
    return text if text.isascii() else _storable(text, value, where)


def loads(text: str) -> Any:
    """Read back a value written by ``dumps``.

    Raises ``ValueError`` for text that is not a serialized document, names an unknown format
    version, or holds a malformed tagged value; ``SerializationError`` when a class named in the
    text can be neither found in the registry nor imported.
    """
    if text.startswith(_PREFIX):
        doc = _DECODER.decode(text)
        if type(doc) is dict and len(doc) == 2 and doc.get("v") == FORMAT_VERSION:
            return doc["d"]
    return _loads_slow(text)


def check_json(value: object, *, where: str = "value") -> str:
    """``value`` as plain JSON text (what hook metadata must be), without tags.

    Raises ``SerializationError`` naming ``where`` for a value that is not
    JSON (a type JSON lacks, NaN or an infinity, which PostgreSQL's ``json``
    refuses) or that holds a lone surrogate.
    """
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise SerializationError(
            f"{where} must be JSON (dicts, lists, strings, finite numbers, booleans, None): {exc}"
        ) from None
    return _storable(text, value, where)


@overload
def register(cls: _T, *, name: str | None = None) -> _T: ...


@overload
def register(cls: None = None, *, name: str | None = None) -> Callable[[_T], _T]: ...


def register(cls: type | None = None, *, name: str | None = None) -> Any:
    """Register a dataclass, pydantic model, Enum or exception class under ``name``.

    Use as ``@register`` or ``@register(name="shop.Order")``; ``name`` defaults to
    ``module.qualname``. Registration is optional for encoding (unregistered classes are written
    under their default name) but lets ``loads`` find classes it could not import by name, and
    fixes a stable name that survives moving the class. A class may be registered under several
    names; the last one is used for encoding, all of them decode.
    """

    def apply(target: _T) -> _T:
        _register_class(target, name)
        return target

    return apply if cls is None else apply(cls)


def register_type(
    cls: type, tag: str, encode: Callable[[Any], Any], decode: Callable[[Any], Any]
) -> None:
    """Teach the format a new type, written as ``{"$ext": [tag, encode(value)]}``.

    ``encode`` returns any value this module can serialize (it is encoded recursively);
    ``decode`` receives that value decoded and returns the instance. Instances of subclasses of
    ``cls`` use the same hook. Re-registering the same class and tag replaces the hooks.
    """
    if not isinstance(cls, type):
        raise InvalidTypeError(f"register_type expects a class, got {cls!r}")
    if not isinstance(tag, str) or not tag:
        raise InvalidValueError(f"register_type expects a non-empty str tag, got {tag!r}")
    if cls in _BUILTIN_ENC or cls in (str, int, float, bool, type(None), object):
        raise InvalidValueError(f"cannot override the built-in encoding of {cls.__qualname__}")
    previous = _EXT_BY_TAG.get(tag)
    if previous is not None and _default_name(previous[0]) != _default_name(cls):
        raise InvalidValueError(
            f"extension tag {tag!r} is already registered for {_default_name(previous[0])}"
        )

    def encode_ext(value: Any) -> Any:
        return {"$ext": [tag, _enc(encode(value))]}

    _EXT_BY_TAG[tag] = (cls, decode)
    _EXT_BY_TYPE[cls] = encode_ext
    for cached in [t for t in list(_ENC) if t not in _BUILTIN_ENC and issubclass(t, cls)]:
        _ENC.pop(cached, None)
    _ENC[cls] = encode_ext


class RemoteError(Exception):
    """An exception that ``loads`` could not rebuild as its own class.

    ``type_name`` is the original class's registered name, ``message`` its ``str()``, and
    ``traceback`` the formatted traceback text (or ``None``).
    """

    def __init__(self, type_name: str, message: str, traceback: str | None = None) -> None:
        super().__init__(type_name, message, traceback)
        self.type_name = type_name
        self.message = message
        self.traceback = traceback

    def __str__(self) -> str:
        return f"{self.type_name}: {self.message}"


# --------------------------------------------------------------------------------------------
# Encoding

_PREFIX = f'{{"v":{FORMAT_VERSION},"d":'
#: A code point UTF-8 cannot encode; the JSON text holds one only inside a string.
_SUPPORTED = (
    "supported types are JSON values, int, float, bytes, tuple, set, frozenset, dict, "
    "datetime/date/time/timedelta, Decimal, UUID, Enum, dataclasses, pydantic models, "
    "exceptions (register your class with tether.serde.register)"
)


class _Unsupported(Exception):
    """Internal: an unsupported value; containers add their path segment while unwinding."""

    def __init__(self, value: object, hint: str = "") -> None:
        super().__init__()
        self.value = value
        self.hint = hint
        self.path: list[str] = []

    def describe(self, where: str) -> str:
        path = "".join(reversed(self.path))
        at = f"{where} -> {path}" if path else where
        label = _type_label(type(self.value))
        return f"cannot serialize object of type {label!r}{self.hint} at {at}: {_SUPPORTED}"


def _enc(x: Any) -> Any:
    """Encode one value; JSON-native values come back as the very same object."""
    t = type(x)
    if t is str or x is None or t is bool:
        return x
    if t is int:
        return x if -9007199254740992 <= x <= 9007199254740992 else _enc_bigint(x)
    if t is float:
        return x if x - x == 0.0 else _enc_nonfinite(x)
    f = _ENC_GET(t)
    return f(x) if f is not None else _enc_slow(x)


# _enc_seq and _enc_dict inline the same per-value dispatch on purpose: they are
# the hot path of every step's arguments and result, and a call per value costs
# more than the encoding itself for plain JSON values.


def _enc_seq(x: Sequence[Any]) -> Any:
    """Encode the items of a list or tuple: ``x`` itself if none changed, else a new list."""
    out: list[Any] | None = None
    for i, v in enumerate(x):
        t = type(v)
        if t is str or v is None or t is bool:
            continue
        if t is int:
            if -9007199254740992 <= v <= 9007199254740992:
                continue
            e = _enc_bigint(v)
        elif t is float:
            if v - v == 0.0:
                continue
            e = _enc_nonfinite(v)
        else:
            f = _ENC_GET(t)
            try:
                e = f(v) if f is not None else _enc_slow(v)
            except _Unsupported as fail:
                fail.path.append(f"[{i}]")
                raise
            if e is v:
                continue
        if out is None:
            out = list(x)
        out[i] = e
    return x if out is None else out


def _enc_dict(x: dict[Any, Any]) -> Any:
    """A str-keyed dict stays a JSON object (``x`` itself if nothing changed); else ``$map``."""
    out: dict[str, Any] | None = None
    for k, v in x.items():
        if type(k) is not str or k[:1] == "$":
            return _enc_map(x)
        t = type(v)
        if t is str or v is None or t is bool:
            continue
        if t is int:
            if -9007199254740992 <= v <= 9007199254740992:
                continue
            e = _enc_bigint(v)
        elif t is float:
            if v - v == 0.0:
                continue
            e = _enc_nonfinite(v)
        else:
            f = _ENC_GET(t)
            try:
                e = f(v) if f is not None else _enc_slow(v)
            except _Unsupported as fail:
                fail.path.append(f"[{k!r}]")
                raise
            if e is v:
                continue
        if out is None:
            out = dict(x)
        out[k] = e
    return x if out is None else out


def _enc_map(x: dict[Any, Any]) -> dict[str, Any]:
    pairs: list[list[Any]] = []
    for i, (k, v) in enumerate(x.items()):
        try:
            ek = _enc(k)
        except _Unsupported as fail:
            fail.path.append(f"<key #{i}>")
            raise
        try:
            ev = _enc(v)
        except _Unsupported as fail:
            fail.path.append(f"[{k!r}]")
            raise
        pairs.append([ek, ev])
    return {"$map": pairs}


def _enc_tuple(x: tuple[Any, ...]) -> dict[str, Any]:
    items = _enc_seq(x)
    return {"$tuple": list(items) if items is x else items}


def _enc_set_items(x: set[Any] | frozenset[Any]) -> list[Any]:
    items: list[Any] = []
    for v in x:
        try:
            items.append(_enc(v))
        except _Unsupported as fail:
            fail.path.append("<set member>")
            raise
    if len(items) > 1:
        items.sort(key=_json_text)  # deterministic text whatever the hash seed
    return items


def _enc_set(x: set[Any]) -> dict[str, Any]:
    return {"$set": _enc_set_items(x)}


def _enc_frozenset(x: frozenset[Any]) -> dict[str, Any]:
    return {"$frozenset": _enc_set_items(x)}


def _enc_bigint(x: int) -> dict[str, str]:
    try:
        return {"$int": str(x)}
    except ValueError:  # beyond sys.get_int_max_str_digits(): hex has no limit
        return {"$int": hex(x)}


def _enc_nonfinite(x: float) -> dict[str, str]:
    return {"$float": "nan" if x != x else ("inf" if x > 0 else "-inf")}


def _enc_bytes(x: bytes) -> dict[str, str]:
    return {"$bytes": base64.b64encode(x).decode("ascii")}


def _enc_bytearray(x: bytearray) -> dict[str, str]:
    return {"$bytearray": base64.b64encode(x).decode("ascii")}


def _enc_datetime(x: datetime) -> dict[str, Any]:
    tz = x.tzinfo
    if isinstance(tz, ZoneInfo) and tz.key is not None:
        return {"$dt": [x.isoformat(), tz.key]}
    return {"$dt": x.isoformat()}


def _enc_date(x: date) -> dict[str, str]:
    return {"$date": x.isoformat()}


def _enc_time(x: time) -> dict[str, Any]:
    tz = x.tzinfo
    if isinstance(tz, ZoneInfo) and tz.key is not None:
        return {"$time": [x.isoformat(), tz.key]}
    return {"$time": x.isoformat()}


def _enc_timedelta(x: timedelta) -> dict[str, list[int]]:
    return {"$td": [x.days, x.seconds, x.microseconds]}


def _enc_decimal(x: Decimal) -> dict[str, str]:
    return {"$dec": str(x)}


def _enc_uuid(x: UUID) -> dict[str, str]:
    return {"$uuid": str(x)}


def _enc_enum(x: Enum) -> dict[str, Any]:
    cls = type(x)
    member = x._name_
    if member is not None and cls.__members__.get(member) is x:
        return {"$enum": [_name_of(cls), member]}
    return {"$enum": [_name_of(cls), None, _enc(x._value_)]}  # e.g. a composite Flag


def _enc_dataclass(x: Any) -> dict[str, Any]:
    cls = type(x)
    names = _DC_FIELDS.get(cls)
    if names is None:
        names = _DC_FIELDS[cls] = tuple(f.name for f in dataclasses.fields(cls))
    fields: dict[str, Any] = {}
    for n in names:
        try:
            fields[n] = _enc(getattr(x, n))
        except _Unsupported as fail:
            fail.path.append(f".{n}")
            raise
    return {"$dc": [_name_of(cls), fields]}


def _enc_pydantic(x: Any) -> dict[str, Any]:
    return {"$pyd": [_name_of(type(x)), _enc(x.model_dump(mode="python"))]}


def _enc_exception(e: BaseException) -> dict[str, Any]:
    """Encode an exception; never fails: what cannot be encoded is left out."""
    if isinstance(e, RemoteError):
        tb = None if e.traceback is None else escape_surrogates(e.traceback)
        message = escape_surrogates(e.message)
        return {"$exc": {"type": e.type_name, "message": message, "traceback": tb}}
    body: dict[str, Any] = {
        "type": _name_of(type(e)),
        "message": escape_surrogates(_safe_str(e)),
        "traceback": _traceback_text(e),
    }
    args = _try_enc(list(_exception_args(e)))
    if args is not _FAILED:
        body["args"] = args
    try:
        attrs = dict(vars(e))
    except Exception:
        attrs = {}
    attrs.pop("__tether_traceback__", None)
    state = {k: v for k, v in attrs.items() if type(k) is str and _try_enc(v) is not _FAILED}
    if state:
        body["state"] = _enc(state)
    return {"$exc": body}


def _exception_args(e: BaseException) -> tuple[Any, ...]:
    """The constructor arguments: from ``__reduce__`` when it rebuilds via the class itself."""
    try:
        reduced = e.__reduce__()
    except Exception:
        return e.args
    if (
        isinstance(reduced, tuple)
        and len(reduced) >= 2
        and reduced[0] is type(e)
        and isinstance(reduced[1], tuple)
    ):
        return reduced[1]
    return e.args


def _traceback_text(e: BaseException) -> str | None:
    try:
        if e.__traceback__ is not None:
            return escape_surrogates("".join(_traceback.format_exception(e)))
        text = getattr(e, "__tether_traceback__", None)
    except Exception:
        return None
    return escape_surrogates(text) if isinstance(text, str) else None


def _safe_str(e: BaseException) -> str:
    try:
        return str(e)
    except Exception:
        return f"<unprintable {type(e).__qualname__}>"


_FAILED: Any = object()


def _try_enc(x: Any) -> Any:
    """``x`` encoded, its surrogates escaped (an exception's parts); ``_FAILED`` if it cannot be."""
    try:
        encoded = _enc(x)
        text = _json_text(encoded)
    except Exception:
        return _FAILED
    return encoded if text.isascii() or SURROGATE.search(text) is None else _escaped(encoded)


def _escaped(x: Any) -> Any:
    """An encoded (JSON) value with ``escape_surrogates`` applied to every string in it."""
    if type(x) is str:
        return escape_surrogates(x)
    if type(x) is list:
        return [_escaped(v) for v in x]
    if type(x) is dict:
        return {escape_surrogates(k): _escaped(v) for k, v in x.items()}
    return x


def _enc_slow(x: Any) -> Any:
    """Classify a type not in the dispatch table, cache its encoder, or reject the value."""
    t = type(x)
    f = _classify(t)
    if f is None:
        raise _Unsupported(x, _subclass_hint(x))
    _ENC[t] = f
    return f(x)


def _classify(t: type) -> _Encoder | None:
    for base in t.__mro__:
        ext = _EXT_BY_TYPE.get(base)
        if ext is not None:
            return ext
    if issubclass(t, Enum):
        return _enc_enum
    if issubclass(t, BaseException):
        return _enc_exception
    if dataclasses.is_dataclass(t):
        return _enc_dataclass
    if _is_pydantic_class(t):
        return _enc_pydantic
    return None


def _subclass_hint(x: object) -> str:
    for base in (*_BUILTIN_ENC, str, int, float):
        if isinstance(x, base):
            return f" (a subclass of {base.__qualname__}: convert it to a plain one)"
    return ""


def _json_text(x: Any) -> str:
    return "".join(_C_ENCODER(x, 0)) if _C_ENCODER is not None else _PY_ENCODER.encode(x)


def _recursion_message(value: object, where: str) -> str:
    try:
        path = _find_cycle(value, set(), [])
    except RecursionError:
        path = None
    if path is None:
        return f"cannot serialize value at {where}: it is nested too deeply"
    at = f"{where} -> {''.join(path)}" if path else where
    return f"cannot serialize value at {at}: it contains itself (a reference cycle)"


def _storable(text: str, value: object, where: str) -> str:
    """``text`` (``value`` as JSON) if UTF-8 can hold it; else the error names the surrogate."""
    found = None if text.isascii() else SURROGATE.search(text)
    if found is None:
        return text
    try:
        culprit = _find_surrogate(value, [])
    except RecursionError:
        culprit = None
    shown, path = (
        ("a str", []) if culprit is None else (f"str {reprlib.repr(culprit[0])}", culprit[1])
    )
    at = f"{where} -> {''.join(path)}" if path else where
    raise SerializationError(
        f"cannot serialize {shown} at {at}: it holds the lone surrogate U+{ord(found.group()):04X},"
        " which UTF-8 text cannot store (decode bytes with errors='replace', or pass bytes)"
    )


def _find_surrogate(x: Any, path: list[str]) -> tuple[str, list[str]] | None:
    """A str holding a surrogate in ``x`` (a key or a value), and the path to it."""
    if type(x) is str:
        return (x, path) if SURROGATE.search(x) is not None else None
    if type(x) is dict:
        for key in x:
            if type(key) is str and SURROGATE.search(key) is not None:
                return key, [*path, "<key>"]
    for segment, child in _children(x) or ():
        found = _find_surrogate(child, [*path, segment])
        if found is not None:
            return found
    return None


def _find_cycle(x: Any, active: set[int], path: list[str]) -> list[str] | None:
    children = _children(x)
    if children is None:
        return None
    if id(x) in active:
        return path
    active.add(id(x))
    for segment, child in children:
        path.append(segment)
        if _find_cycle(child, active, path) is not None:
            return path
        path.pop()
    active.discard(id(x))
    return None


def _children(x: Any) -> Iterable[tuple[str, Any]] | None:
    t = type(x)
    if t is list or t is tuple:
        return [(f"[{i}]", v) for i, v in enumerate(x)]
    if t is dict:
        return [(f"[{k!r}]", v) for k, v in x.items()]
    if t is set or t is frozenset:
        return [("<set member>", v) for v in x]
    if dataclasses.is_dataclass(t):
        return [(f".{f.name}", getattr(x, f.name)) for f in dataclasses.fields(x)]
    return None


# --------------------------------------------------------------------------------------------
# Decoding


def _hook(obj: dict[str, Any]) -> Any:
    """``object_hook``: turn a tagged value (built bottom-up by the JSON parser) into Python."""
    if len(obj) != 1:
        return obj
    tag = next(iter(obj))
    if tag[:1] != "$":
        return obj
    decode = _DEC.get(tag)
    if decode is None:
        raise InvalidValueError(
            f"unknown tag {tag!r} in serialized data (written by a newer tether?)"
        )
    try:
        return decode(obj[tag])
    except SerializationError:
        raise
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, ArithmeticError) as e:
        raise InvalidValueError(f"malformed {tag} value {reprlib.repr(obj[tag])}: {e}") from e


def _loads_slow(text: str) -> Any:
    doc = json.loads(text)
    if type(doc) is not dict or "v" not in doc or "d" not in doc:
        raise InvalidValueError(
            'not a tether.serde document: expected {"v": <version>, "d": <data>}'
        )
    version = doc["v"]
    if type(version) is not int or version != FORMAT_VERSION:
        raise InvalidValueError(
            f"unsupported tether.serde format version {version!r}: "
            f"this code reads version {FORMAT_VERSION}"
        )
    return _walk(doc["d"])


def _walk(x: Any) -> Any:
    t = type(x)
    if t is list:
        return [_walk(v) for v in x]
    if t is dict:
        return _hook({k: _walk(v) for k, v in x.items()})
    return x


def _dec_int(v: str) -> int:
    return int(v, 16) if v.lstrip("-+")[:2].lower() == "0x" else int(v)


def _dec_float(v: str) -> float:
    if v not in ("nan", "inf", "-inf"):
        raise InvalidValueError("expected 'nan', 'inf' or '-inf'")
    return float(v)


def _dec_bytes(v: str) -> bytes:
    return base64.b64decode(v, validate=True)


def _dec_bytearray(v: str) -> bytearray:
    return bytearray(base64.b64decode(v, validate=True))


def _dec_map(v: list[list[Any]]) -> dict[Any, Any]:
    return {k: val for k, val in v}


def _dec_datetime(v: str | list[str]) -> datetime:
    if isinstance(v, str):
        return datetime.fromisoformat(v)
    iso, key = v
    zone = _zone(key)
    parsed = datetime.fromisoformat(iso)
    return parsed if zone is None else parsed.astimezone(zone)


def _dec_time(v: str | list[str]) -> time:
    if isinstance(v, str):
        return time.fromisoformat(v)
    iso, key = v
    return time.fromisoformat(iso).replace(tzinfo=_zone(key))


def _zone(key: str) -> ZoneInfo | None:
    """The zone, or ``None`` when this machine lacks it (the value keeps its fixed offset)."""
    try:
        return ZoneInfo(key)
    except Exception:
        return None


def _dec_timedelta(v: list[int]) -> timedelta:
    days, seconds, microseconds = v
    return timedelta(days=days, seconds=seconds, microseconds=microseconds)


def _dec_enum(v: list[Any]) -> Enum:
    cls: Any = _require(v[0], _is_enum_class, "Enum")
    if len(v) == 2:
        try:
            return cls[v[1]]  # type: ignore[no-any-return]
        except KeyError:
            raise SerializationError(f"Enum {v[0]!r} has no member {v[1]!r}") from None
    try:
        return cls(v[2])  # type: ignore[no-any-return]
    except ValueError:
        raise SerializationError(f"Enum {v[0]!r} has no value {v[2]!r}") from None


def _dec_dataclass(v: list[Any]) -> Any:
    name, data = v
    cls = _require(name, _is_dataclass_class, "dataclass")
    layout = _DC_INIT.get(cls)
    if layout is None:
        layout = _DC_INIT[cls] = tuple((f.name, f.init) for f in dataclasses.fields(cls))
    init: dict[str, Any] = {}
    late: dict[str, Any] = {}
    for key, in_init in layout:
        if key in data:
            (init if in_init else late)[key] = data[key]
    try:
        obj = cls(**init)
    except Exception as e:
        raise SerializationError(
            f"cannot rebuild dataclass {name!r} from fields {sorted(data)}: {e}"
        ) from e
    for key, value in late.items():
        object.__setattr__(obj, key, value)
    return obj


def _dec_pydantic(v: list[Any]) -> Any:
    name, data = v
    cls: Any = _require(name, _is_pydantic_class, "pydantic model")
    try:
        return cls.model_validate(data)
    except Exception as e:
        raise SerializationError(f"cannot rebuild pydantic model {name!r}: {e}") from e


def _dec_exception(v: dict[str, Any]) -> BaseException:
    name = v["type"]
    message = v.get("message", "")
    tb = v.get("traceback")
    args = v.get("args")
    exc: BaseException | None = None
    if type(args) is list:
        try:
            cls = _resolve(name, _is_exception_class)
            exc = cls(*args) if cls is not None else None
        except Exception:
            exc = None
    if exc is None:
        exc = RemoteError(name, message, tb)
    else:
        for key, value in (v.get("state") or {}).items():
            with contextlib.suppress(Exception):
                setattr(exc, key, value)
    with contextlib.suppress(Exception):
        exc.__tether_traceback__ = tb  # type: ignore[attr-defined]
    return exc


def _dec_ext(v: list[Any]) -> Any:
    tag, value = v
    entry = _EXT_BY_TAG.get(tag)
    if entry is None:
        raise SerializationError(
            f"unknown extension tag {tag!r}: import the module that registers it "
            "with tether.serde.register_type"
        )
    return entry[1](value)


# --------------------------------------------------------------------------------------------
# Class names and the registry


def _register_class(cls: type, name: str | None) -> None:
    if not isinstance(cls, type) or not (
        _is_dataclass_class(cls)
        or _is_enum_class(cls)
        or _is_exception_class(cls)
        or _is_pydantic_class(cls)
    ):
        raise InvalidTypeError(
            f"tether.serde.register expects a dataclass, pydantic model, Enum or exception "
            f"class, got {cls!r}"
        )
    if name is None:
        name = _default_name(cls)
    if not isinstance(name, str) or not name:
        raise InvalidValueError(f"registered name must be a non-empty str, got {name!r}")
    previous = _REGISTRY.get(name)
    if previous is not None and _default_name(previous) != _default_name(cls):
        raise InvalidValueError(
            f"name {name!r} is already registered for {_default_name(previous)}"
        )
    _REGISTRY[name] = cls
    _NAMES[cls] = name


def _name_of(cls: type) -> str:
    name = _NAMES.get(cls)
    return name if name is not None else _default_name(cls)


def _default_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _type_label(cls: type) -> str:
    return cls.__qualname__ if cls.__module__ == "builtins" else _default_name(cls)


def _require(name: str, kind: Callable[[type], bool], what: str) -> type:
    try:
        cls = _resolve(name, kind)
    except Exception as e:  # the module exists but failed to import
        raise SerializationError(f"cannot decode {what} {name!r}: importing it failed: {e}") from e
    if cls is None:
        raise SerializationError(
            f"cannot decode {what} {name!r}: no such class is registered or importable; "
            f"import the module that defines it, or register the class with "
            f"tether.serde.register(name={name!r})"
        )
    return cls


def _resolve(name: str, kind: Callable[[type], bool]) -> type | None:
    """The class registered as ``name``, else found by importing it; ``None`` if not a ``kind``."""
    cls = _REGISTRY.get(name) or _RESOLVED.get(name)
    if cls is None:
        cls = _import_class(name)
        if cls is None:
            return None
        _RESOLVED[name] = cls
    return cls if kind(cls) else None


def _import_class(name: str) -> type | None:
    """Import the longest module prefix of ``name`` and walk the rest as attributes."""
    parts = name.split(".")
    for i in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:i])
        module = sys.modules.get(module_name)
        if module is None:
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError as e:
                if e.name is not None and module_name.startswith(e.name):
                    continue  # that module does not exist: try a shorter prefix
                raise
        obj: Any = module
        for attr in parts[i:]:
            obj = getattr(obj, attr, None)
            if obj is None:
                break
        if isinstance(obj, type):
            return obj
    return None


def _is_dataclass_class(cls: type) -> bool:
    return isinstance(cls, type) and dataclasses.is_dataclass(cls)


def _is_enum_class(cls: type) -> bool:
    return isinstance(cls, type) and issubclass(cls, Enum)


def _is_exception_class(cls: type) -> bool:
    return isinstance(cls, type) and issubclass(cls, BaseException)


def _is_pydantic_class(cls: type) -> bool:
    pydantic = sys.modules.get("pydantic")  # never imported here: a model implies it is loaded
    return pydantic is not None and isinstance(cls, type) and issubclass(cls, pydantic.BaseModel)


# --------------------------------------------------------------------------------------------
# Dispatch tables and JSON codecs

_BUILTIN_ENC: dict[type, _Encoder] = {
    list: _enc_seq,
    dict: _enc_dict,
    tuple: _enc_tuple,
    set: _enc_set,
    frozenset: _enc_frozenset,
    bytes: _enc_bytes,
    bytearray: _enc_bytearray,
    datetime: _enc_datetime,
    date: _enc_date,
    time: _enc_time,
    timedelta: _enc_timedelta,
    Decimal: _enc_decimal,
    UUID: _enc_uuid,
}
_ENC: dict[type, _Encoder] = dict(_BUILTIN_ENC)  # plus classified and extension types
_ENC_GET = _ENC.get  # _ENC is mutated, never rebound
_DC_FIELDS: dict[type, tuple[str, ...]] = {}  # field names, for encoding
_DC_INIT: dict[type, tuple[tuple[str, bool], ...]] = {}  # (field name, init?), for decoding

_DEC: dict[str, Callable[[Any], Any]] = {
    "$int": _dec_int,
    "$float": _dec_float,
    "$bytes": _dec_bytes,
    "$bytearray": _dec_bytearray,
    "$tuple": tuple,
    "$set": set,
    "$frozenset": frozenset,
    "$map": _dec_map,
    "$dt": _dec_datetime,
    "$date": date.fromisoformat,
    "$time": _dec_time,
    "$td": _dec_timedelta,
    "$dec": Decimal,
    "$uuid": UUID,
    "$enum": _dec_enum,
    "$dc": _dec_dataclass,
    "$pyd": _dec_pydantic,
    "$exc": _dec_exception,
    "$ext": _dec_ext,
}

_PY_ENCODER = json.JSONEncoder(
    separators=(",", ":"), ensure_ascii=False, allow_nan=False, check_circular=False
)
# The C encoder behind JSONEncoder.encode, built once instead of on every call.
_C_ENCODER: Callable[[Any, int], Sequence[str]] | None = (
    json.encoder.c_make_encoder(  # type: ignore[attr-defined]
        None,
        _PY_ENCODER.default,
        json.encoder.encode_basestring,
        None,
        ":",
        ",",
        False,
        False,
        False,
    )
    if getattr(json.encoder, "c_make_encoder", None) is not None
    else None
)
_DECODER = json.JSONDecoder(object_hook=_hook)
