"""Who may see the UI and act through it: the access token, and cross-site request refusal.

Without a token, the UI answers only requests addressed to this machine by
name (``Host`` a loopback address or ``localhost``, or one of
``allowed_hosts``): a web page whose domain an attacker points at
127.0.0.1 (DNS rebinding) is refused. With a token, every request must
carry it: ``Authorization: Bearer TOKEN``, or the cookie a first visit
with ``?token=TOKEN`` sets. Every action is a
POST that must come from the UI's own pages: its ``Origin`` (when the
browser sends one) names this host, and its form carries the ``csrf``
value the page was rendered with, which must equal the browser's
``tether_csrf`` cookie: another site can neither read that value nor set
the cookie (double submit; it works across server processes).
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from collections.abc import Sequence
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

COOKIE = "tether_web_token"
CSRF_COOKIE = "tether_csrf"


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address, or a name with no port) is this machine alone."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _host_name(header: str) -> str:
    """The name of a ``Host`` header, without its port."""
    if header.startswith("["):  # [::1]:8484
        return header[1 : header.find("]")]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class TokenGuard:
    """ASGI middleware: refuse every request that lacks the token, or, without a token,
    that is not addressed to this machine (or to one of ``allowed_hosts``)."""

    def __init__(self, app: ASGIApp, token: str | None, allowed_hosts: Sequence[str] = ()) -> None:
        self.app = app
        self.token = token
        self.allowed_hosts = set(allowed_hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        if self.token is None:
            name = _host_name(request.headers.get("host", ""))
            if is_loopback(name) or name in self.allowed_hosts:
                await self.app(scope, receive, send)
                return
            refused = Response(
                f"This tether web UI serves this machine only, not requests for host"
                f" {name!r}: give it a token (tether web --token, tether.web.app(token=...)),"
                " or name the host in tether.web.app(allowed_hosts=[...]).\n",
                status_code=403,
                media_type="text/plain",
            )
            await refused(scope, receive, send)
            return
        given = request.query_params.get("token")
        if given is not None and _same(given, self.token):
            # Set the cookie and drop the token from the address bar (and from history);
            # a relative redirect, right behind a proxy that rewrites the host too.
            url = request.url.remove_query_params("token")
            target = url.path + (f"?{url.query}" if url.query else "")
            response: Response = RedirectResponse(target, status_code=303)
            response.set_cookie(COOKIE, self.token, httponly=True, samesite="lax")
            await response(scope, receive, send)
            return
        header = request.headers.get("authorization", "")
        bearer = header[7:] if header.lower().startswith("bearer ") else None
        cookie = request.cookies.get(COOKIE)
        if any(v is not None and _same(v, self.token) for v in (bearer, cookie)):
            await self.app(scope, receive, send)
            return
        response = Response(
            "This tether web UI needs its access token: open it with ?token=TOKEN (the one"
            " given to tether web with --token or $TETHER_WEB_TOKEN), or send"
            " 'Authorization: Bearer TOKEN'.\n",
            status_code=401,
            media_type="text/plain",
        )
        await response(scope, receive, send)


def _same(given: str, token: str) -> bool:
    return hmac.compare_digest(given.encode(), token.encode())


def new_csrf() -> str:
    """A value for the pages' forms that no other site can learn."""
    return secrets.token_urlsafe(24)


def cross_site(request: Request, form_csrf: str | None) -> str | None:
    """Why a POST is refused as cross-site, or ``None`` when it came from the UI's pages."""
    csrf = request.cookies.get(CSRF_COOKIE)
    origin = request.headers.get("origin")
    if origin is not None and urlsplit(origin).netloc != request.headers.get("host"):
        return f"refused: a request from {origin} is not from this UI"
    if not csrf or form_csrf is None or not hmac.compare_digest(form_csrf.encode(), csrf.encode()):
        return "refused: the form did not come from this UI (reload the page and try again)"
    return None
