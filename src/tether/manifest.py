"""A process's deployment: its id, its environment, and the manifest of what it defines.

A deployment's id is ``$TETHER_DEPLOYMENT_ID`` (a git sha, a release tag)
or, when unset, a fingerprint of the source of the modules that define the
process's workflows and steps. Workers register it with a manifest: every
workflow and step name with its parameters and a fingerprint of its code.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import os
import sys
import types
import unicodedata
from collections.abc import Callable
from typing import Any

from tether import registry
from tether.errors import ConfigurationError, InvalidIdentifierError

DEFAULT_ENVIRONMENT = "default"
#: A worker whose heartbeat is older than this is not counted as live.
LIVE_WITHIN_SECONDS = 15.0

#: The Python version whose bytecode a manifest's fingerprints hash.
PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"

_module_hashes: dict[str, str] = {}


def current_deployment_id() -> str:
    """This process's deployment: ``$TETHER_DEPLOYMENT_ID``, else a fingerprint of its code."""
    return explicit_deployment_id() or _fingerprint(len(registry.WORKFLOWS), len(registry.STEPS))


def explicit_deployment_id() -> str | None:
    """``$TETHER_DEPLOYMENT_ID`` when it is set (to something), else ``None``.

    Raises ``ConfigurationError`` for an id ``check_deployment_id`` refuses.
    """
    value = os.environ.get("TETHER_DEPLOYMENT_ID") or None
    if value is not None and value != _checked.get("id"):
        try:
            check_deployment_id(value)
        except InvalidIdentifierError as exc:
            raise ConfigurationError(f"TETHER_DEPLOYMENT_ID: {exc}") from None
        _checked["id"] = value
    return value


def check_deployment_id(value: str) -> str:
    """``value`` if it can name a deployment; else ``InvalidIdentifierError`` saying why.

    A deployment id is 1 to 256 characters without spaces, control or format
    characters (a git sha, a release tag, a branch name), and not ``latest``,
    which ``start(deployment_id="latest")`` means.
    """
    bad = next((c for c in value if unicodedata.category(c)[0] in "CZ"), None)
    if value == "latest" or not value or len(value) > 256 or bad is not None:
        why = (
            "'latest' stands for the newest deployment"
            if value == "latest"
            else f"it holds {bad!r}"
            if bad is not None
            else "expected 1 to 256 characters"
        )
        raise InvalidIdentifierError(
            f"invalid deployment id {value!r}: {why}; use a git sha or a release tag"
            " without spaces, e.g. v42 or 3f2a9c1"
        )
    return value


#: The last ``$TETHER_DEPLOYMENT_ID`` checked: it is read on every start.
_checked: dict[str, str] = {}


@functools.lru_cache(maxsize=8)
def _fingerprint(workflows: int, steps: int) -> str:
    """The fingerprint of the registered code; cached while the registry's size stays."""
    modules = sorted(
        {d.fn.__module__ for d in registry.WORKFLOWS.values()}
        | {d.fn.__module__ for d in registry.STEPS.values()}
    )
    digest = hashlib.sha256()
    for module in modules:
        digest.update(f"{module}\0{_module_hash(module)}\0".encode())
    return f"dep-{digest.hexdigest()[:12]}"


def current_environment() -> str:
    """This process's environment: ``$TETHER_ENVIRONMENT``, else ``default``."""
    return os.environ.get("TETHER_ENVIRONMENT") or DEFAULT_ENVIRONMENT


def defines_workflows() -> bool:
    """Whether this process registered workflows of its own (else it is a pure client)."""
    return bool(registry.WORKFLOWS)


def build_manifest() -> dict[str, Any]:
    """Every workflow and step this process defines, with parameters and code fingerprints."""
    return {
        "workflows": {
            name: {**_describe(wf.fn), "steps": sorted(_steps_used(wf.fn))}
            for name, wf in sorted(registry.WORKFLOWS.items())
        },
        "steps": {name: _describe(s.fn) for name, s in sorted(registry.STEPS.items())},
    }


# -- helpers ------------------------------------------------------------------


def _module_hash(module: str) -> str:
    cached = _module_hashes.get(module)
    if cached is None:
        mod = sys.modules.get(module)
        try:
            source = inspect.getsource(mod) if mod is not None else module
        except (OSError, TypeError):
            source = module
        cached = _module_hashes[module] = hashlib.sha256(source.encode()).hexdigest()
    return cached


def _describe(fn: Callable[..., Any]) -> dict[str, Any]:
    signature = inspect.signature(fn)
    digest = hashlib.sha256()
    _digest_code(fn.__code__, digest)
    return {
        "fingerprint": digest.hexdigest()[:16],
        "params": [
            {
                "name": p.name,
                "kind": p.kind.name,
                "default": p.default is not inspect.Parameter.empty,
                "annotation": _annotation(p.annotation),
            }
            for p in signature.parameters.values()
        ],
        "returns": _annotation(signature.return_annotation),
        # Bytecode, and so the fingerprint, differs between Python versions.
        "python": PYTHON,
    }


def _digest_code(code: types.CodeType, digest: Any) -> None:
    """Hash what a function does, not its name or line numbers: a renamed copy matches."""
    digest.update(code.co_code)
    digest.update(repr((code.co_names, code.co_varnames, code.co_freevars)).encode())
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _digest_code(const, digest)
        else:
            digest.update(_canonical(const).encode())


def _canonical(const: object) -> str:
    """``repr(const)``, but a frozenset's members in a fixed order.

    A set literal compiles to a frozenset, whose order follows the string hash
    seed, which differs in every process: unsorted, one code would have many
    fingerprints.
    """
    if isinstance(const, frozenset):
        return "frozenset({" + ", ".join(sorted(_canonical(c) for c in const)) + "})"
    if isinstance(const, tuple):
        inner = ", ".join(_canonical(c) for c in const)
        return f"({inner},)" if len(const) == 1 else f"({inner})"
    return repr(const)


def _annotation(annotation: Any) -> str:
    if annotation is inspect.Signature.empty:
        return ""
    return (
        annotation
        if isinstance(annotation, str)
        else getattr(annotation, "__qualname__", repr(annotation))
    )


def _steps_used(fn: Callable[..., Any]) -> set[str]:
    """Names of the steps a workflow's code refers to (its globals that are steps)."""
    found: set[str] = set()
    codes = [fn.__code__]
    while codes:
        code = codes.pop()
        for name in code.co_names:
            value = fn.__globals__.get(name)
            if isinstance(value, registry.Step):
                found.add(value.name)
        codes.extend(c for c in code.co_consts if inspect.iscode(c))
    return found
