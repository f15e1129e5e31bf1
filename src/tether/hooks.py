"""Hooks: a workflow waits for payloads delivered from anywhere by token.

``create_hook()`` in a workflow returns a ``Hook``: ``await hook`` gives the
first payload, ``async for payload in hook`` each payload in turn. Because a
``Hook`` is an asyncio future, it races with a sleep in ``asyncio.wait`` (an
approval with a timeout). ``resume_hook(token, payload)`` delivers a payload
from any process; ``create_webhook()`` gives a hook with a URL served by
``tether.asgi.app``. This module is the workflow side; ``resume_hook``
lives with the other clients in ``tether.api``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import secrets
import urllib.parse
from typing import Any

from tether import serde, storable
from tether.context import current_instance
from tether.errors import ConfigurationError, ContextError

WEBHOOK_PATH = "/.well-known/workflow/v1/webhook/{token}"

log = logging.getLogger("tether.hooks")


class Hook(asyncio.Future[Any]):
    """A hook of a running workflow; resolves with its first payload.

    ``token`` is what ``resume_hook`` takes; ``url`` is the absolute URL of a
    webhook (``None`` for a plain hook). Iterate it (``async for``) to
    receive every payload in order.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        token: str,
        metadata: Any,
        webhook: bool,
        url: str | None = None,
    ) -> None:
        super().__init__(loop=loop)
        self.token = token
        self.metadata = metadata
        self.webhook = webhook
        self._url = url
        self._payloads: list[Any] = []
        self._waiters: list[tuple[int, asyncio.Future[Any]]] = []
        self._error: BaseException | None = None

    @property
    def url(self) -> str | None:
        """The webhook's URL: absolute with ``$TETHER_WEBHOOK_BASE_URL``, else its path alone.

        Fixed when the hook was created and replayed from the log, as its token
        is: every replay, on any worker, sees the URL that was handed out.
        Workflow code must not fail for a setting of the worker it happens to
        run on; a client asking for the URL (``run.hooks()``) gets
        ``ConfigurationError`` instead of a path.
        """
        if not self.webhook:
            return None
        return self._url or _current_url(self.token)

    def __aiter__(self) -> _HookPayloads:
        return _HookPayloads(self)

    def receive(self, payload: Any) -> None:
        """Record a delivered payload and wake whoever waits for it (the runtime calls this)."""
        index = len(self._payloads)
        self._payloads.append(payload)
        if not self.done():
            self.set_result(payload)
        for waited, future in list(self._waiters):
            if waited == index and not future.done():
                future.set_result(payload)
        self._waiters = [(i, f) for i, f in self._waiters if i != index]

    def fail(self, error: BaseException) -> None:
        """End the hook with an error for every present and future waiter."""
        self._error = error
        if not self.done():
            self.set_exception(error)
        for _, future in self._waiters:
            if not future.done():
                future.set_exception(error)
        self._waiters.clear()


class _HookPayloads:
    """Each payload of a hook, in delivery order, for ``async for``."""

    def __init__(self, hook: Hook) -> None:
        self._hook = hook
        self._index = 0

    def __aiter__(self) -> _HookPayloads:
        return self

    async def __anext__(self) -> Any:
        hook, index = self._hook, self._index
        if index < len(hook._payloads):
            self._index += 1
            return hook._payloads[index]
        if hook._error is not None:
            raise hook._error
        future: asyncio.Future[Any] = hook.get_loop().create_future()
        hook._waiters.append((index, future))
        payload = await future
        self._index += 1
        return payload


def create_hook(token: str | None = None, metadata: Any = None) -> Hook:
    """Create a hook in a workflow; without a token an unguessable one (192 bits) is made.

    Raises ``HookConflictError`` (when awaited) if another active hook holds
    the token, ``InvalidIdentifierError`` (a ``ValueError``) for a token no
    World can store (``storable.check_identifier``: empty, over 256 characters,
    a NUL or a lone surrogate), and ``SerializationError`` if ``metadata`` is
    not JSON (NaN and infinities are not) or holds a lone surrogate.
    """
    return _create(token, metadata, webhook=False)


def create_webhook(token: str | None = None, metadata: Any = None) -> Hook:
    """Create a hook whose payloads arrive over HTTP at ``hook.url`` (see ``tether.asgi``).

    The URL is ``$TETHER_WEBHOOK_BASE_URL`` followed by
    ``/.well-known/workflow/v1/webhook/{token}``; the payload is the request
    as ``{"method", "headers", "body"}``.
    """
    return _create(token, metadata, webhook=True)


def webhook_url(token: str, base: str | None = None) -> str:
    """Where a webhook with ``token`` is served: ``base`` (else ``$TETHER_WEBHOOK_BASE_URL``)
    followed by the path.

    Raises ``ConfigurationError`` when neither is set, or not absolute: a URL
    handed to another system must say which server answers it.
    """
    path = webhook_path(token)
    root = (base or "").rstrip("/") or _base_url()
    if not root.startswith(("http://", "https://")):
        raise ConfigurationError(
            f"the webhook URL of hook {token!r} needs TETHER_WEBHOOK_BASE_URL, the absolute"
            f" URL where tether.asgi.app is served (got {root!r}): set e.g."
            f" TETHER_WEBHOOK_BASE_URL=https://api.example.com; the path is {path}"
        )
    return root + path


def webhook_path(token: str) -> str:
    """The path under which ``tether.asgi.app`` serves the webhook with ``token``."""
    return WEBHOOK_PATH.format(token=urllib.parse.quote(token, safe=""))


def _base_url() -> str:
    return os.environ.get("TETHER_WEBHOOK_BASE_URL", "").rstrip("/")


def _current_url(token: str) -> str:
    """The webhook URL this worker would hand out now: absolute if it can, else the path."""
    path = webhook_path(token)
    base = _base_url()
    if not base:
        _warn_relative()
        return path
    return base + path


@functools.cache
def _warn_relative() -> None:
    log.warning(
        "TETHER_WEBHOOK_BASE_URL is unset: a workflow's hook.url is the path alone;"
        " set it to the absolute URL where tether.asgi.app is served"
    )


def _create(token: str | None, metadata: Any, *, webhook: bool) -> Hook:
    instance = current_instance.get()
    if instance is None:
        raise ContextError("create_hook() and create_webhook() are called inside a @workflow")
    if token is not None:
        storable.check_identifier(token, "hook token")
    serde.check_json(metadata, where="hook metadata")
    loop = instance.loop
    token = token or secrets.token_urlsafe(24)
    attrs: dict[str, Any] = {"token": token, "metadata": metadata, "webhook": webhook}
    if webhook:
        attrs["url"] = _current_url(token)

    def make(logged: dict[str, Any]) -> Hook:
        url = logged.get("url")
        return Hook(
            loop,
            str(logged["token"]),
            logged.get("metadata"),
            bool(logged.get("webhook")),
            url if isinstance(url, str) else None,  # a log from before URLs were recorded
        )

    return instance.create_hook(attrs, make)
