"""What text a World can store: identifiers it can hold, and text with surrogates escaped.

Both Worlds store text as UTF-8 and PostgreSQL refuses NUL in text, so an
identifier (hook token, stream namespace, run or deployment id) is checked
once, here, for both; a lookup by one that cannot exist finds nothing.
"""

from __future__ import annotations

import re
import reprlib

from tether.errors import InvalidIdentifierError

#: A lone surrogate: a code point UTF-8 cannot encode.
SURROGATE = re.compile(r"[\ud800-\udfff]")

MAX_IDENTIFIER_LENGTH = 256
"""The longest identifier, in characters: PostgreSQL's indexes hold keys of ~2,700 bytes."""


def escape_surrogates(text: str) -> str:
    """``text`` with each surrogate code point written as the six characters ``\\udXXX``.

    What UTF-8 can hold is left as it is; use it for text that must be stored
    whatever it holds (an error message).
    """
    if text.isascii() or SURROGATE.search(text) is None:
        return text
    return SURROGATE.sub(lambda found: f"\\u{ord(found.group()):04x}", text)


def check_identifier(
    value: object, what: str, *, max_length: int | None = MAX_IDENTIFIER_LENGTH
) -> str:
    """Return ``value`` if it can name something a World stores, else raise.

    An identifier (hook token, stream namespace, run id, deployment id) is a
    non-empty ``str`` of at most ``max_length`` characters (``None``: any)
    without NUL, which PostgreSQL's text refuses, and without lone surrogates,
    which UTF-8 cannot encode; astral characters, U+2028 and the like are
    fine. Raises ``InvalidIdentifierError`` (a ``ValueError``) naming ``what``
    (e.g. ``"hook token"``), the value and what is allowed.
    """
    problem = _identifier_problem(value, max_length)
    if problem is None:
        return value  # type: ignore[return-value]
    longest = f" of at most {max_length} characters" if max_length is not None else ""
    raise InvalidIdentifierError(
        f"invalid {what} {_shown(value)}: {problem}; a {what} is a non-empty string{longest}"
        " without NUL (\\x00) or lone surrogates (U+D800 to U+DFFF)"
    )


def can_be_identifier(value: object) -> bool:
    """Whether ``value`` could name something stored: a ``str`` without NUL or surrogates.

    Worlds answer a lookup by any other value with "not found" (no such thing
    can exist) instead of sending it to a database that would refuse it.
    """
    return (
        type(value) is str
        and "\x00" not in value
        and (value.isascii() or SURROGATE.search(value) is None)
    )


# -- helpers ------------------------------------------------------------------


def _identifier_problem(value: object, max_length: int | None) -> str | None:
    if type(value) is not str:
        return f"expected a str, got {type(value).__qualname__}"
    if not value:
        return "it is empty"
    if max_length is not None and len(value) > max_length:
        return f"it is {len(value)} characters long"
    if "\x00" in value:
        return "it holds a NUL (\\x00)"
    found = None if value.isascii() else SURROGATE.search(value)
    if found is not None:
        return f"it holds the lone surrogate U+{ord(found.group()):04X}"
    return None


def _shown(value: object) -> str:
    """``repr(value)``, cut short for a long string."""
    if type(value) is not str:
        return reprlib.repr(value)
    if len(value) > 60:
        return f"{repr(value[:40])[:-1]}...' ({len(value)} characters)"
    return repr(value)
