"""``tether web``: the web UI, served by uvicorn on this machine (loopback by default)."""

from __future__ import annotations

import contextlib
import threading
import webbrowser

import click

from tether.cli import backend, render
from tether.cli.backend import backend_option
from tether.cli.errors import UsageProblem
from tether.redaction import redact

DEFAULT_PORT = 8484


@click.command(short_help="Serve the web UI: runs and deployments, live.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=click.IntRange(1, 65535))
@click.option("--open", "open_browser", is_flag=True, help="Open the UI in a browser.")
@click.option("--read-only", is_flag=True, help="Offer no actions; refuse every POST.")
@click.option(
    "--token",
    envvar="TETHER_WEB_TOKEN",
    metavar="TOKEN",
    help="Require this token of every request (needed off loopback; default $TETHER_WEB_TOKEN).",
)
@backend_option
def web(host: str, port: int, open_browser: bool, read_only: bool, token: str | None) -> None:
    """Serve the web UI on HOST:PORT until Ctrl-C.

    It binds to 127.0.0.1 by default: only this machine reaches it. Any
    other address needs --token (or $TETHER_WEB_TOKEN), then checked on
    every request: open the printed URL once, with its ?token=, and the
    browser keeps it in a cookie.
    """
    from tether import web as tether_web
    from tether.web.guard import is_loopback

    if not is_loopback(host) and not token:
        raise UsageProblem(
            f"--host {host} lets other machines reach the UI: give --token TOKEN (or set"
            " $TETHER_WEB_TOKEN), or keep the default --host 127.0.0.1"
        )
    world = backend.world()
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}/"
    shown = url + ("?token=…" if token else "")
    render.err().print(
        f"tether web on {shown} (World: {redact(world.url)}"
        f"{', read-only' if read_only else ''}); Ctrl-C stops it",
        soft_wrap=True,
    )
    if open_browser:
        target = url + (f"?token={token}" if token else "")
        threading.Timer(0.5, webbrowser.open, (target,)).start()
    # uvicorn raises the signal it stopped on again, once stopped: Ctrl-C ends it cleanly.
    with contextlib.suppress(KeyboardInterrupt):
        tether_web.serve(world, host=host, port=port, read_only=read_only, token=token)
    render.err().print("tether web stopped")
