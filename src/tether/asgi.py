"""``tether.asgi.app``: the webhook endpoint, an ASGI app to serve or mount in your own.

``POST /.well-known/workflow/v1/webhook/{token}`` delivers the request to the
webhook with that token: ``202`` when delivered, ``404`` for a token that is
not an active webhook (a token no World can store included), ``413`` for a
body over ``$TETHER_WEBHOOK_MAX_BYTES`` (default 1 MiB), ``400`` for a body
declared JSON that is not, or whose strings UTF-8 cannot hold. The payload
the workflow receives is ``{"method", "headers", "body"}``: ``body`` is the
parsed JSON, else the text, else the bytes.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tether.config import resolve_world
from tether.errors import HookNotFoundError, SerializationError
from tether.hooks import WEBHOOK_PATH
from tether.serde import dumps

DEFAULT_MAX_BYTES = 1024 * 1024


class _TooLarge(Exception):
    pass


async def webhook(request: Request) -> JSONResponse:
    """Deliver one webhook request to its hook."""
    token = request.path_params["token"]
    try:
        body = await _read_body(request, _max_bytes())
    except _TooLarge as exc:
        return JSONResponse({"error": str(exc)}, status_code=413)
    content_type = request.headers.get("content-type", "")
    parsed: Any
    if "json" in content_type.split(";")[0]:
        try:
            parsed = json.loads(body) if body else None
        except ValueError as exc:
            return JSONResponse({"error": f"body is not valid JSON: {exc}"}, status_code=400)
    else:
        try:
            parsed = body.decode()
        except UnicodeDecodeError:
            parsed = body
    payload = {"method": request.method, "headers": dict(request.headers), "body": parsed}
    try:
        text = dumps(payload, where=f"payload of webhook {token!r}")
    except SerializationError as exc:  # JSON whose strings UTF-8 cannot hold (a lone surrogate)
        return JSONResponse({"error": str(exc)}, status_code=400)
    try:
        run_id = await asyncio.to_thread(
            resolve_world().resume_hook, token, text, webhook_only=True
        )
    except HookNotFoundError as exc:
        return JSONResponse({"error": str(exc)}, status_code=404)
    return JSONResponse({"ok": True, "run_id": run_id}, status_code=202)


def _max_bytes() -> int:
    return int(os.environ.get("TETHER_WEBHOOK_MAX_BYTES", DEFAULT_MAX_BYTES))


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _TooLarge(f"body of {declared} bytes is over the limit of {limit}")
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > limit:
            raise _TooLarge(f"body is over the limit of {limit} bytes")
    return bytes(body)


# ``path``: a token may hold a slash, which its URL carries as %2F and the server decodes.
routes = [Route(WEBHOOK_PATH.replace("{token}", "{token:path}"), webhook, methods=["POST"])]
app = Starlette(routes=routes)
