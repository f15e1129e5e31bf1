"""How tether shows stored values and names to people: the CLI and the web UI alike.

``jsonable`` turns a decoded value (``serde.loads``) into plain JSON;
``compact`` puts it on one line; ``short_name`` is a workflow's or step's
name without its module.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import json
import math
from collections.abc import Iterable, Mapping
from datetime import date, datetime, timedelta
from datetime import time as dtime
from decimal import Decimal
from typing import Any
from uuid import UUID

from tether.registry import parse_workflow_name


def short_name(name: str) -> str:
    """``fulfill_order`` for ``workflow//shop.workflows//fulfill_order`` (steps too)."""
    if name.startswith("workflow//"):
        try:
            return parse_workflow_name(name).short_name
        except ValueError:
            return name
    parts = name.split("//")
    return parts[-1].rsplit(".", 1)[-1] if len(parts) == 3 and parts[-1] else name


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


def traceback_of(value: Any) -> str | None:
    """The formatted traceback a stored error carries (a run's dict, a step's exception)."""
    if isinstance(value, Mapping):
        text = value.get("traceback")
        return text if isinstance(text, str) and text else None
    for attribute in ("traceback", "__tether_traceback__"):
        text = getattr(value, attribute, None)
        if isinstance(text, str) and text:
            return text
    return None
