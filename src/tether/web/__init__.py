"""The web UI: every run and deployment, live, and the actions an operator takes on them.

``tether web`` serves it; ``tether.web.app(world=...)`` is the same UI as an
ASGI app to mount in your own Starlette or FastAPI app under a prefix::

    from starlette.applications import Starlette
    from starlette.routing import Mount
    import tether.web

    app = Starlette(routes=[Mount("/tether", app=tether.web.app(token="s3cret"))])

Pages are rendered on the server (Jinja2, escaped); a small script of our
own (``static/tether.js``, no library) keeps them live over server-sent
events and sends actions without a reload. With JavaScript off every page
still reads correctly (reload to refresh) and every action still works.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from types import FrameType

from starlette.applications import Starlette
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

from tether.config import resolve_world
from tether.web.guard import TokenGuard
from tether.web.pages import Ui
from tether.worlds.base import World


def app(
    world: World | str | None = None,
    *,
    read_only: bool = False,
    token: str | None = None,
    allowed_hosts: Sequence[str] = (),
) -> ASGIApp:
    """The UI as an ASGI app on ``world`` (default: the configured one).

    ``read_only`` offers no actions and refuses every POST; ``token``, when
    given, is required of every request (``?token=`` once, then a cookie;
    or ``Authorization: Bearer``). Without a token it answers only requests
    for a loopback host or one of ``allowed_hosts`` (behind your own app's
    authentication, name the host it is served as).
    """
    return _asgi(Ui(resolve_world(world), read_only=read_only), token, allowed_hosts)


def serve(
    world: World | str | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8484,
    read_only: bool = False,
    token: str | None = None,
) -> None:
    """Serve the UI with uvicorn until SIGINT/SIGTERM (what ``tether web`` runs).

    On a signal the open pages' live streams end at once, so the server stops
    without waiting for the browsers to go away.
    """
    import uvicorn

    ui = Ui(resolve_world(world), read_only=read_only)

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            ui.changes.end()
            super().handle_exit(sig, frame)

    config = uvicorn.Config(
        _asgi(ui, token, ()),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=2,
    )
    Server(config).run()


def _asgi(ui: Ui, token: str | None, allowed_hosts: Sequence[str]) -> ASGIApp:
    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        ui.changes.close()

    routes = [
        Route("/", ui.runs),
        Route("/actions/matching", ui.matching),
        Route("/actions/runs", ui.act_on_runs, methods=["POST"]),
        Route("/runs/{run_id:path}/fork", ui.fork_form, methods=["GET", "POST"]),
        Route("/runs/{run_id:path}/actions", ui.act_on_run, methods=["POST"]),
        Route("/runs/{run_id:path}", ui.run),
        Route("/deployments", ui.deployments),
        Route("/deployments/diff", ui.diff),
        Route("/deployments/{deployment_id:path}/check", ui.check, methods=["GET", "POST"]),
        Route("/deployments/{deployment_id:path}/upgrade", ui.upgrade, methods=["POST"]),
        Route("/live", ui.live),
        Mount("/static", StaticFiles(packages=[("tether.web", "static")]), name="static"),
    ]
    return TokenGuard(Starlette(routes=routes, lifespan=lifespan), token, allowed_hosts)


__all__ = ["app", "serve"]
