"""The UI's routes: pages (GET) and actions (POST), over the functions the CLI calls.

An action answers JSON to the pages' script (``Accept: application/json``)
and a redirect back with a message otherwise, so that every page and action
works with JavaScript off.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)

from tether import api, deployments
from tether.checking import Checker
from tether.errors import (
    DeploymentNotFoundError,
    InvalidValueError,
    TetherError,
    WorldUnavailableError,
)
from tether.forking import FromStep
from tether.pinning import resolve_target
from tether.redaction import redact
from tether.web import guard, views
from tether.web.live import Changes
from tether.worlds.base import World
from tether.worlds.records import TERMINAL_STATUSES, RunRecord

#: The runs page's filters, as the bulk form posts them for "all matching".
FILTERS = ("status", "workflow", "deployment", "q", "range")
#: The bulk actions of the runs page, and what each says it did.
RUN_ACTIONS = {
    "cancel": "cancelled",
    "rerun": "rerun",
    "rerun-latest": "rerun on latest",
    "upgrade": "moved onto latest",
}

_templates = Environment(
    loader=PackageLoader("tether.web", "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)


class NotFound(Exception):
    """A page for something the World does not hold: a 404 that says what."""


class Ui:
    """The pages of one UI instance: its World, its mode, its live feed."""

    def __init__(self, world: World, *, read_only: bool) -> None:
        self.world = world
        self.read_only = read_only
        self.changes = Changes(world)

    # -- rendering --------------------------------------------------------------

    def page(
        self, request: Request, template: str, status: int = 200, **context: Any
    ) -> HTMLResponse:
        base = request.scope.get("root_path", "").rstrip("/")
        csrf = request.cookies.get(guard.CSRF_COOKIE) or guard.new_csrf()
        html = _templates.get_template(template).render(
            base=base,
            csrf=csrf,
            read_only=self.read_only,
            done=request.query_params.get("done", ""),
            failed=request.query_params.get("failed", ""),
            world_url=redact(self.world.url),
            **context,
        )
        response = HTMLResponse(html, status_code=status)
        if request.cookies.get(guard.CSRF_COOKIE) != csrf:
            # Lax: sent when a link elsewhere opens the UI (so it is not minted anew under
            # the other tabs), never with another site's POST.
            response.set_cookie(
                guard.CSRF_COOKIE, csrf, path=base or "/", httponly=True, samesite="lax"
            )
        return response

    async def guarded(
        self, request: Request, handler: Callable[[], Awaitable[Response]]
    ) -> Response:
        """Run a page; what the World does not hold is a 404, an unreachable World a 503."""
        try:
            return await handler()
        except NotFound as exc:
            return self.page(request, "error.html", 404, title="Not found", message=str(exc))
        except (InvalidValueError, ValueError) as exc:  # a bad cursor, page number, filter
            return self.page(request, "error.html", 400, title="Bad request", message=str(exc))
        except WorldUnavailableError as exc:
            message = f"cannot reach the World {redact(self.world.url)}: {redact(str(exc))}"
            return self.page(request, "error.html", 503, title="World unreachable", message=message)

    # -- pages ------------------------------------------------------------------

    async def runs(self, request: Request) -> Response:
        async def show() -> Response:
            filters = views.Filters.parse(dict(request.query_params))
            data = await _off_loop(views.runs_page, self.world, filters)
            return self.page(request, "runs.html", **data)

        return await self.guarded(request, show)

    async def run(self, request: Request) -> Response:
        async def show() -> Response:
            record = await self._run(request.path_params["run_id"])
            page = int(request.query_params.get("events", "0") or 0)
            data = await _off_loop(views.run_page, self.world, record, max(page, 0))
            return self.page(request, "run.html", **data)

        return await self.guarded(request, show)

    async def fork_form(self, request: Request) -> Response:
        """GET: the fork's form. POST: the check's verdict for it, before anything is made."""
        posted = request.method == "POST"
        if posted:
            form = await self._form(request)
            if isinstance(form, Response):
                return form
            step, target = str(form.get("step", "auto")), str(form.get("to", "latest"))
        else:
            step = request.query_params.get("step", "auto")
            target = request.query_params.get("to", "latest")

        async def show() -> Response:
            record = await self._run(request.path_params["run_id"])
            verdict: dict[str, Any] = {"verdict": None, "problem": "", "deployment": target}
            if posted:
                verdict = await _off_loop(_fork_verdict, self.world, record, step, target)
            return self.page(
                request,
                "fork.html",
                run=views.run_row(record, 0),
                step=step,
                target=target,
                checked=posted,
                **verdict,
            )

        return await self.guarded(request, show)

    async def deployments(self, request: Request) -> Response:
        async def show() -> Response:
            data = await _off_loop(views.deployments_page, self.world)
            return self.page(request, "deployments.html", **data)

        return await self.guarded(request, show)

    async def check(self, request: Request) -> Response:
        """GET: what a check does, and its button. POST: the check's verdicts.

        A check asks a live worker to replay runs: an action, never a GET that
        another site's page could make the browser send.
        """
        deployment = request.path_params["deployment_id"]
        posted = request.method == "POST"
        if posted:
            form = await self._form(request)
            if isinstance(form, Response):
                return form
            to = str(form.get("to", "latest"))
        else:
            to = request.query_params.get("to", "latest")

        async def show() -> Response:
            if await _off_loop(self.world.get_deployment, deployment) is None:
                raise NotFound(f"deployment {deployment!r} is not registered")
            found: list[Any] = []
            problem = ""
            if posted:
                try:
                    found = await _off_loop(deployments.check, deployment, to, world=self.world)
                except TetherError as exc:
                    problem = str(exc)
            return self.page(
                request,
                "check.html",
                deployment=deployment,
                to=to,
                checks=found,
                problem=problem,
                ran=posted,
            )

        return await self.guarded(request, show)

    async def diff(self, request: Request) -> Response:
        async def show() -> Response:
            old, new = request.query_params.get("old", ""), request.query_params.get("new", "")
            try:
                found = await _off_loop(deployments.diff, old, new, world=self.world)
            except DeploymentNotFoundError as exc:
                raise NotFound(str(exc)) from exc
            return self.page(request, "diff.html", diff=found, old=old, new=new)

        return await self.guarded(request, show)

    async def live(self, request: Request) -> Response:
        return StreamingResponse(
            self.changes.stream(request.is_disconnected),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    async def matching(self, request: Request) -> Response:
        """The ids of the runs the filters match (the script's "all matching" selection)."""

        async def ids() -> Response:
            filters = views.Filters.parse(dict(request.query_params))
            return JSONResponse(await _off_loop(views.matching_ids, self.world, filters))

        return await self.guarded(request, ids)

    # -- actions ----------------------------------------------------------------

    async def act_on_runs(self, request: Request) -> Response:
        form = await self._form(request)
        if isinstance(form, Response):
            return form
        action = str(form.get("action", ""))
        ids = [str(v) for v in form.getlist("run_id")]
        if action not in RUN_ACTIONS:
            return self._answer(request, False, f"unknown action {action!r}")
        if form.get("all") == "1":  # "all matching", posted without the script
            filters = views.Filters.parse({k: str(v) for k, v in form.items() if k in FILTERS})
            ids = await _off_loop(views.matching_ids, self.world, filters)
        if not ids:
            return self._answer(request, False, "no run selected")
        try:
            results = await _off_loop(self._do, action, ids)
        except TetherError as exc:
            return self._answer(request, False, str(exc))
        done = sum(1 for ok, _ in results if ok)
        message = f"{done} of {len(ids)} {RUN_ACTIONS[action]}"
        if done < len(ids):
            message += ": " + "; ".join(text for ok, text in results if not ok)[:2000]
        return self._answer(request, done == len(ids), message, results)

    def _do(self, action: str, ids: list[str]) -> list[tuple[bool, str]]:
        """Apply one bulk action: per run, whether it was done, and what happened."""
        if action == "cancel":
            cancelled = set(self.world.cancel_runs(ids).cancelled)
            return [
                (i in cancelled, f"{i}: {'cancelled' if i in cancelled else 'had ended'}")
                for i in ids
            ]
        if action == "upgrade":
            return [
                (True, f"{u.run_id}: moved to {u.moved_to}")
                if u.moved_to
                else (False, f"{u.run_id}: left ({u.reason})")
                for u in deployments.upgrade_runs(ids, "latest", world=self.world)
            ]
        target = "latest" if action == "rerun-latest" else None
        results = []
        for run_id in ids:
            try:
                made = api.rerun(run_id, target, world=self.world)
                results.append((True, f"{run_id}: rerun as {made.run_id} on {made.deployment_id}"))
            except TetherError as exc:
                results.append((False, f"{run_id}: {exc}"))
        return results

    async def act_on_run(self, request: Request) -> Response:
        form = await self._form(request)
        if isinstance(form, Response):
            return form
        run_id = request.path_params["run_id"]
        action = str(form.get("action", ""))
        try:
            record = await self._run(run_id)
            message = await _off_loop(self._do_one, record, action, form)
        except NotFound as exc:
            return self._answer(request, False, str(exc), status=404)
        except (TetherError, ValueError) as exc:
            return self._answer(request, False, str(exc))
        return self._answer(request, True, message)

    def _do_one(self, record: RunRecord, action: str, form: Any) -> str:
        run_id = record.run_id
        if action in ("cancel", "wake", "resolve") and record.status in TERMINAL_STATUSES:
            raise ValueError(f"run {run_id} has ended ({record.status}): nothing to {action}")
        if action == "cancel":
            self.world.cancel_runs([run_id])
            return f"run {run_id} cancelled"
        if action in ("rerun", "rerun-latest"):
            made = api.rerun(
                run_id, "latest" if action == "rerun-latest" else None, world=self.world
            )
            return f"rerun of {run_id}: {made.run_id} on {made.deployment_id}"
        if action == "wake":
            woken = self.world.wake_sleeps(run_id)
            return f"woke {woken} sleep{'s' if woken != 1 else ''} of {run_id}"
        if action == "resolve":
            token = str(form.get("token", ""))
            text = str(form.get("payload", "")).strip() or "null"
            try:
                payload = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"the payload is not JSON: {exc}") from None
            api.resume_hook(token, payload, world=self.world)
            return f"delivered to hook {token!r}"
        if action == "fork":
            step = _step(str(form.get("step", "auto")))
            target = str(form.get("to", "latest"))
            made = api.rerun(run_id, target, from_step=step, world=self.world)
            return (
                f"forked {run_id} from step {made.fork_point}: {made.run_id}"
                f" on {made.deployment_id}"
            )
        raise ValueError(f"unknown action {action!r}")

    async def upgrade(self, request: Request) -> Response:
        form = await self._form(request)
        if isinstance(form, Response):
            return form
        deployment = request.path_params["deployment_id"]
        try:
            done = await _off_loop(deployments.upgrade, deployment, "latest", world=self.world)
        except TetherError as exc:
            return self._answer(request, False, str(exc))
        moved = sum(1 for u in done if u.outcome == "moved")
        results = [
            (u.outcome == "moved", f"{u.run_id}: {u.outcome} {u.moved_to or u.reason}")
            for u in done
        ]
        return self._answer(request, True, f"{moved} moved, {len(done) - moved} left", results)

    # -- helpers ----------------------------------------------------------------

    async def _run(self, run_id: str) -> RunRecord:
        record = await self.world.get_run_async(run_id)
        if record is None:
            raise NotFound(f"no run {run_id!r} in {redact(self.world.url)}")
        return record

    async def _form(self, request: Request) -> Any:
        """The POST's form, or the response refusing it (read-only, cross-site)."""
        if self.read_only:
            return self._answer(
                request, False, "this UI is read-only (tether web --read-only)", status=403
            )
        form = await request.form()
        csrf = form.get("csrf")
        why = guard.cross_site(request, csrf if isinstance(csrf, str) else None)
        if why is not None:
            return self._answer(request, False, why, status=403)
        return form

    def _answer(
        self,
        request: Request,
        ok: bool,
        message: str,
        results: list[tuple[bool, str]] | None = None,
        status: int | None = None,
    ) -> Response:
        """JSON to the script (``results``: per run, whether it was done and what
        happened); else a redirect back to the page, or an error page for a refusal."""
        if "application/json" in request.headers.get("accept", ""):
            code = status or (200 if ok else 400)
            shown = [{"ok": done, "text": text} for done, text in results or []]
            body = {"ok": ok, "message": message, "results": shown}
            return JSONResponse(body, status_code=code)
        if status is not None and not ok:
            return self.page(request, "error.html", status, title="Refused", message=message)
        return RedirectResponse(_back(request, ok, message), 303)


def _back(request: Request, ok: bool, message: str) -> str:
    """The page the action came from (a path of this UI, never another site), with the
    outcome to show."""
    root = request.scope.get("root_path", "").rstrip("/")
    referer = urlsplit(request.headers.get("referer", ""))
    same = referer.netloc == request.headers.get("host") and referer.path.startswith(root + "/")
    path = referer.path if same else root + "/"
    kept = [
        (k, v) for k, v in parse_qsl(referer.query if same else "") if k not in ("done", "failed")
    ]
    kept.append(("done" if ok else "failed", message[:500]))
    return f"{path}?{urlencode(kept)}"


def _step(text: str) -> FromStep:
    if text == "auto":
        return "auto"
    if not text.isdigit():
        raise ValueError(f"invalid step {text!r}: give a step number (0, 1, ...) or auto")
    return int(text)


def _fork_verdict(world: World, record: RunRecord, step: str, target: str) -> dict[str, Any]:
    """What a fork from ``step`` onto ``target`` would keep, from the check (nothing written)."""
    try:
        deployment = resolve_target(world, record.workflow_name, target)[0]
        point = _step(step)
        found = Checker(world, deployment).check_one(record, None if point == "auto" else point)
    except (TetherError, ValueError) as exc:
        return {"verdict": None, "problem": str(exc), "deployment": target}
    return {"verdict": found.check, "problem": "", "deployment": deployment}


async def _off_loop(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Blocking World calls run on a thread: the server's loop keeps serving pages."""
    return await asyncio.get_running_loop().run_in_executor(
        None, functools.partial(fn, *args, **kwargs)
    )
