"""A Starlette app on tether: a streamed export and an approval by webhook.

Run it with ``uvicorn examples.http_app:app`` (a worker runs in the app's
process). ``POST /export`` starts ``export_report``, which exports a page
per run and continues itself on the latest deployment, passing its stream
along; the response streams every page as JSON lines while the runs go on.
``POST /refunds/{order_id}`` starts an approval that waits for a webhook
(``POST`` its ``approve_url`` with ``{"approved": true}``) or times out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Mount, Route

import tether
from tether import StreamHandle, step, workflow
from tether.asgi import app as webhooks

# -- the export: a bounded piece of work per run, one stream across runs ------


@step
def export_page(state: dict[str, Any], stream: StreamHandle) -> bool:
    """Export one page, write it to the stream; returns whether pages remain."""
    stream.write(json.dumps({"type": "page", "page": state["page"]}) + "\n")
    return bool(state["page"] < state["pages"])


@step
def write_done(stream: StreamHandle, total_pages: int) -> None:
    """Write the last line and close the stream: readers stop after it."""
    stream.write(json.dumps({"type": "done", "total_pages": total_pages}) + "\n")
    stream.close()


@step
def continue_export_on_latest(state: dict[str, Any], stream: StreamHandle) -> str:
    """Start the next page's run on the newest deployment, with the same stream."""
    return tether.start(export_report, [state, stream], deployment_id="latest").run_id


@workflow
async def export_report(state: dict[str, Any], progress: StreamHandle | None = None) -> Any:
    """Export one page; continue on latest while pages remain."""
    stream = progress if progress is not None else tether.get_writable()
    if not await export_page(state, stream):
        await write_done(stream, state["page"])
        return {"total_pages": state["page"]}
    next_state = {**state, "page": state["page"] + 1}
    return {"continued_as": await continue_export_on_latest(next_state, stream)}


# -- the approval: a webhook raced against a timeout ----------------------------


@workflow
async def approve_refund(order_id: str, timeout: str = "1h") -> dict[str, Any]:
    """Wait for an approval on a webhook, or time out."""
    hook = tether.create_webhook(metadata={"order_id": order_id})
    timer = tether.sleep(timeout)
    done, _ = await asyncio.wait({hook, timer}, return_when=asyncio.FIRST_COMPLETED)
    if hook not in done:
        return {"order_id": order_id, "approved": False, "reason": "timed out"}
    request = hook.result()
    body = request["body"] if isinstance(request["body"], dict) else {}
    return {"order_id": order_id, "approved": body.get("approved") is True}


# -- routes --------------------------------------------------------------------


async def start_export(request: Request) -> StreamingResponse:
    """Start an export and stream its lines as they are written."""
    body = await request.json()
    state = {"export_id": body["export_id"], "page": 1, "pages": int(body.get("pages", 10))}
    run = await tether.start_async(export_report, [state])

    async def lines() -> AsyncIterator[str]:
        async for line in run.readable:
            yield line

    return StreamingResponse(
        lines(), media_type="application/jsonl", headers={"x-run-id": run.run_id}
    )


async def start_refund(request: Request) -> JSONResponse:
    """Start an approval; answer with the URL that approves it."""
    order_id = request.path_params["order_id"]
    timeout = request.query_params.get("timeout", "1h")
    run = await tether.start_async(approve_refund, [order_id, timeout])
    while not (hooks := run.hooks()):  # the worker in this process creates it at once
        await asyncio.sleep(0.01)
    # Where this app is served, unless TETHER_WEBHOOK_BASE_URL says otherwise.
    base = os.environ.get("TETHER_WEBHOOK_BASE_URL") or str(request.base_url)
    return JSONResponse(
        {"run_id": run.run_id, "approve_url": tether.hooks.webhook_url(hooks[0].token, base)}
    )


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    """Serve the workflows in this process while the app runs."""
    with tether.Worker():
        yield


app = Starlette(
    routes=[
        Route("/export", start_export, methods=["POST"]),
        Route("/refunds/{order_id}", start_refund, methods=["POST"]),
        Mount("/", app=webhooks),
    ],
    lifespan=lifespan,
)
