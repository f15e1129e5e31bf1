"""Showing a World URL without its secrets: one function every message that names a URL uses.

A password may sit in the authority (``postgresql://app:s3cret@db/prod``) or
in a query parameter (``?password=s3cret``); both are shown as ``***``.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

_MASK = "***"


def redact(url: str) -> str:
    """The URL with every password in it replaced by ``***`` (a URL without one, as it is)."""
    if not _passwords(url):
        return url  # rebuilt, ``sqlite:///a.db`` would lose a slash
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        if ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":" + _MASK
        netloc = f"{userinfo}@{host}"
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    query = [(key, _MASK if key.lower() == "password" else value) for key, value in pairs]
    return urlunsplit(parts._replace(netloc=netloc, query=urlencode(query, safe="=-/:,*")))


def scrub(text: str, url: str) -> str:
    """``text`` with ``url`` shown redacted and each password of ``url`` masked wherever it is."""
    text = text.replace(url, redact(url))
    for secret in _passwords(url):
        text = text.replace(secret, _MASK)
    return text


def _passwords(url: str) -> list[str]:
    try:
        parts = urlsplit(url)
        found = [parts.password] if parts.password else []
    except ValueError:
        return []
    found += [
        v for k, v in parse_qsl(parts.query, keep_blank_values=True) if k.lower() == "password"
    ]
    return [secret for secret in found if secret]
