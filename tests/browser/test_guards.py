"""What the UI refuses and how it fails: the token, cross-site posts, read-only, escaping, 404s,
bad payloads, ended runs, an unreachable World. Against a real ``tether web`` server."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
from playwright.sync_api import Page, expect

import tether
from tests.browser.conftest import Dialogs
from tests.browser.server import WebServer
from tests.integration.processes import REPO, wait_for
from tests.integration.test_postgres_faults import PrivateServer
from tether import create_hook, step, workflow
from tether.worlds.records import NewRun

SCRIPT = "<script>alert('from the World')</script>"


@step
def shout(text: str) -> str:
    return text


@workflow
async def hostile(text: str) -> str:
    """Returns markup, and waits on a hook for more."""
    await create_hook(token="hostile-hook")
    return await shout(text)


@workflow
async def waiting(token: str) -> str:
    return str(await create_hook(token=token))


def browse(root: str, path: str = "/") -> tuple[httpx.Client, str]:
    """A client that opened ``path`` (so it holds the csrf cookie), and the page's csrf value."""
    client = httpx.Client(base_url=root, timeout=30)
    found = re.search(r'data-csrf="([^"]+)"', client.get(path).text)
    assert found, "the page carries no csrf value"
    return client, found.group(1)


def post(client: httpx.Client, path: str, data: dict[str, str], **headers: str) -> httpx.Response:
    return client.post(path, data=data, headers={"Accept": "application/json", **headers})


def test_off_loopback_the_ui_needs_its_token(world_url: str, tmp_path: Path) -> None:
    tether.config.resolve_world(world_url)
    refused = subprocess.run(
        [sys.executable, "-m", "tether", "web", "--backend", world_url, "--host", "0.0.0.0"],
        cwd=REPO,
        env={"PYTHONPATH": f"{REPO}:{REPO / 'src'}", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert refused.returncode == 2 and "give --token TOKEN" in refused.stderr
    server = WebServer(world_url, tmp_path / "web.log", "--token", "s3cret", host="0.0.0.0")
    try:
        for path in ("/", "/deployments", "/live", "/static/tether.js", "/runs/x"):
            response = server.get(path)
            assert response.status_code == 401, path
            assert "needs its access token" in response.text
        assert server.get("/?token=wrong").status_code == 401
        opened = server.get("/?token=s3cret", follow_redirects=False)
        assert opened.status_code == 303 and opened.headers["location"] == "/"
        cookie = opened.cookies.get("tether_web_token")
        assert cookie == "s3cret"
        assert server.get("/", cookies={"tether_web_token": "s3cret"}).status_code == 200
        assert server.get("/", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert server.get("/", headers={"Authorization": "Bearer nope"}).status_code == 401
    finally:
        server.stop()


def test_cross_site_and_unsigned_posts_are_refused(
    world_url: str, web: WebServer, worker: tether.Worker
) -> None:
    run = tether.start(waiting, ["guard-1"])
    wait_for(lambda: bool(run.hooks()), 20, "the hook")
    path = f"/runs/{run.run_id}/actions"
    client, csrf = browse(web.url, f"/runs/{run.run_id}")
    evil = post(client, path, {"action": "cancel", "csrf": csrf}, Origin="http://evil.example")
    assert evil.status_code == 403 and "not from this UI" in evil.json()["message"]
    unsigned = post(client, path, {"action": "cancel"})
    assert unsigned.status_code == 403 and "did not come from this UI" in unsigned.json()["message"]
    # The page's value alone is not enough: another site's form lacks the browser's cookie.
    stranger = httpx.post(
        web.url + path,
        data={"action": "cancel", "csrf": csrf},
        headers={"Accept": "application/json"},
    )
    assert stranger.status_code == 403
    assert run.status() == "running"
    # A malformed payload is refused with the parse error; nothing is delivered.
    bad = post(
        client, path, {"action": "resolve", "token": "guard-1", "payload": "{bad", "csrf": csrf}
    )
    assert (
        bad.status_code == 400
        and "the payload is not JSON: Expecting property name" in bad.json()["message"]
    )
    assert run.status() == "running"
    done = post(
        client,
        path,
        {"action": "resolve", "token": "guard-1", "payload": '{"ok": 1}', "csrf": csrf},
    )
    assert done.status_code == 200 and done.json()["ok"], done.text
    assert run.result(timeout=20) == "{'ok': 1}"
    # An action on a run that has ended says so.
    late = post(client, path, {"action": "cancel", "csrf": csrf})
    assert late.status_code == 400 and "has ended (completed)" in late.json()["message"]
    # Without the script, a refused form gets a page, an accepted one a redirect back.
    page = httpx.post(web.url + path, data={"action": "cancel"}, timeout=30)
    assert page.status_code == 403 and "text/html" in page.headers["content-type"]


def test_read_only_offers_no_action_and_takes_none(
    world_url: str, tmp_path: Path, worker: tether.Worker
) -> None:
    run = tether.start(waiting, ["guard-2"])
    wait_for(lambda: bool(run.hooks()), 20, "the hook")
    server = WebServer(world_url, tmp_path / "web.log", "--read-only")
    try:
        for path in ("/", f"/runs/{run.run_id}", "/deployments"):
            html = server.get(path).text
            assert 'method="post"' not in html and "read-only" in html, path
        client, csrf = browse(server.url)
        refused = post(client, f"/runs/{run.run_id}/actions", {"action": "cancel", "csrf": csrf})
        assert refused.status_code == 403 and "read-only" in refused.json()["message"]
        assert run.status() == "running"
    finally:
        server.stop()
    run.cancel()


def test_values_from_the_world_are_text_never_markup(
    world_url: str, web: WebServer, worker: tether.Worker, page: Page, dialogs: Dialogs
) -> None:
    run = tether.start(hostile, [SCRIPT])
    wait_for(lambda: bool(run.hooks()), 20, "the hook")
    tether.resume_hook("hostile-hook", "<img src=x onerror=alert('payload')>")
    assert run.result(timeout=20) == SCRIPT
    html = web.get(f"/runs/{run.run_id}").text
    assert SCRIPT not in html and "&lt;script&gt;" in html
    assert "<img src=x" not in html
    page.goto(web.url + f"/runs/{run.run_id}")
    expect(page.locator("#run-io")).to_contain_text(SCRIPT)  # shown, as text
    expect(page.locator("#run-timeline")).to_contain_text("<img src=x onerror=")
    page.goto(web.url + f"/?q={run.run_id}")
    expect(page.locator("tr[data-run]")).to_have_count(1)
    assert dialogs.asked == []  # no script from the World ran


def test_what_the_world_does_not_hold_is_a_404_that_says_so(world_url: str, web: WebServer) -> None:
    missing = web.get("/runs/run_nope")
    assert missing.status_code == 404 and "no run &#39;run_nope&#39;" in missing.text
    assert web.get("/deployments/nope/check").status_code == 404
    diff = web.get("/deployments/diff?old=a&new=b")
    assert diff.status_code == 404 and "deployment &#39;a&#39; is not registered" in diff.text
    client, csrf = browse(web.url)
    gone = post(client, "/runs/run_nope/actions", {"action": "cancel", "csrf": csrf})
    assert gone.status_code == 404


def test_an_unreachable_world_is_an_error_page_until_it_returns(
    private_server: PrivateServer, tmp_path: Path
) -> None:
    # The World gives up on a lost server after reconnect_timeout seconds (default 60).
    url = private_server.url.replace("postgres@", "postgres:s3cret@")
    url += "?schema=web&reconnect_timeout=2"
    tether.config.resolve_world(url)
    server = WebServer(url, tmp_path / "web.log")
    try:
        assert server.get("/").status_code == 200
        private_server.stop()
        away = server.get("/")
        assert away.status_code == 503, away.text
        assert "cannot reach the World postgresql://postgres:***@127.0.0.1" in away.text
        assert "s3cret" not in away.text
        private_server.start()
        wait_for(lambda: server.get("/").status_code == 200, 30, "the UI to recover")
    finally:
        server.stop()
        tether.config.close(url)


def test_the_ui_mounts_in_your_own_app_under_a_prefix(
    world_url: str, worker: tether.Worker
) -> None:
    import threading

    import uvicorn
    from starlette.applications import Starlette
    from starlette.routing import Mount

    import tether.web
    from tests.browser.server import free_port

    run = tether.start(waiting, ["guard-3"])
    wait_for(lambda: bool(run.hooks()), 20, "the hook")
    host = Starlette(routes=[Mount("/ops/tether", app=tether.web.app(world=world_url))])
    port = free_port()
    served = uvicorn.Server(uvicorn.Config(host, port=port, log_level="warning"))
    thread = threading.Thread(target=served.run, daemon=True)
    thread.start()
    wait_for(lambda: served.started, 20, "the host app to serve")
    root = f"http://127.0.0.1:{port}/ops/tether"
    try:
        client, csrf = browse(root + "/")
        listing = client.get(root + "/")
        assert listing.status_code == 200
        assert f'href="/ops/tether/runs/{run.run_id}"' in listing.text
        assert 'src="/ops/tether/static/tether.js"' in listing.text
        assert client.get(root + "/static/tether.css").status_code == 200
        done = post(client, f"{root}/runs/{run.run_id}/actions", {"action": "cancel", "csrf": csrf})
        assert done.json()["ok"], done.text
    finally:
        served.should_exit = True
        thread.join(timeout=10)
    assert run.status() == "cancelled"


def test_a_page_addressed_to_another_host_is_refused_without_a_token(web: WebServer) -> None:
    # DNS rebinding: a page of evil.example whose name now points at 127.0.0.1.
    rebound = web.get("/", headers={"Host": f"evil.example:{web.port}"})
    assert rebound.status_code == 403 and "serves this machine only" in rebound.text
    assert web.get("/", headers={"Host": f"localhost:{web.port}"}).status_code == 200
    assert web.get("/", headers={"Host": f"[::1]:{web.port}"}).status_code == 200


def test_actions_redirect_only_within_the_ui(world_url: str, web: WebServer) -> None:
    client, csrf = browse(web.url)
    back = client.post(
        "/actions/runs",
        data={"action": "cancel", "run_id": "run_gone", "csrf": csrf},
        headers={"Referer": "https://evil.example/phish"},
        follow_redirects=False,
    )
    assert back.status_code == 303
    assert back.headers["location"].startswith("/?failed=0+of+1+cancelled")


def test_bulk_actions_say_what_each_run_did_and_all_matching_needs_no_script(
    world_url: str, web: WebServer, worker: tether.Worker
) -> None:
    live = [tether.start(waiting, [f"bulk-{i}"]) for i in range(3)]
    for run in live:
        wait_for(lambda r=run: bool(r.hooks()), 20, "a hook")
    ended = tether.start(waiting, ["bulk-x"])
    wait_for(lambda: bool(ended.hooks()), 20, "a hook")
    ended.cancel()
    client, csrf = browse(web.url)
    ids = [r.run_id for r in [*live[:1], ended]]
    mixed = post(client, "/actions/runs", {"action": "cancel", "run_id": ids, "csrf": csrf})  # type: ignore[dict-item]
    body = mixed.json()
    assert body["ok"] is False and body["message"].startswith("1 of 2 cancelled")
    assert [r["ok"] for r in body["results"]] == [True, False]
    assert "had ended" in body["results"][1]["text"]
    # Without the script, "all matching" posts the filters: the server lists the runs.
    form = {"action": "cancel", "all": "1", "status": "running", "csrf": csrf}
    everything = client.post("/actions/runs", data=form, follow_redirects=False)
    assert (
        everything.status_code == 303 and "done=2+of+2+cancelled" in everything.headers["location"]
    )
    assert all(r.status() == "cancelled" for r in live)


def test_all_matching_pages_through_more_than_a_thousand_runs(
    world_url: str, web: WebServer
) -> None:
    world = tether.config.resolve_world(world_url)
    for i in range(1203):
        world.create_run(NewRun(f"run_many_{i:05d}", waiting.name, "nowhere", "[[],{}]"))
    ids = web.get("/actions/matching?deployment=nowhere").json()
    assert len(ids) == 1203 and len(set(ids)) == 1203
    assert web.get("/?cursor=not-a-cursor").status_code == 400


def test_a_check_runs_only_when_asked_by_post(
    world_url: str, web: WebServer, worker: tether.Worker
) -> None:
    run = tether.start(waiting, ["checked-1"])
    wait_for(lambda: bool(run.hooks()), 20, "a hook")
    page = web.get("/deployments/tests/check")  # what another site's <img> could fetch
    assert page.status_code == 200 and "Check</button>" in page.text and "verdict" not in page.text
    client, csrf = browse(web.url, "/deployments/tests/check")
    done = client.post("/deployments/tests/check", data={"to": "tests", "csrf": csrf})
    assert done.status_code == 200 and f'data-run="{run.run_id}"' in done.text
    assert 'data-verdict="replays"' in done.text
    run.cancel()


def test_ctrl_c_stops_the_server_while_pages_listen(
    world_url: str, web: WebServer, page: Page
) -> None:
    page.goto(web.url + "/")
    expect(page.locator("#live-dot")).to_have_class(re.compile(r"\bon\b"))  # its stream is open
    web.proc.send_signal(signal.SIGINT)
    assert web.proc.wait(timeout=10) == 0  # the streams ended; no browser had to leave
    assert "Traceback" not in web.log.read_text()


@workflow
async def napping(seconds: float) -> str:
    await tether.sleep(seconds)
    return "woke"


def test_a_sleep_woken_and_two_deployments_compared_from_the_ui(
    world_url: str, web: WebServer, worker: tether.Worker
) -> None:
    run = tether.start(napping, [3600])
    wait_for(lambda: bool(run._world.list_waits(run.run_id)), 20, "the sleep")
    page = web.get(f"/runs/{run.run_id}").text
    assert "Wake its sleep" in page and "left" in page  # its deadline and the time left
    client, csrf = browse(web.url, f"/runs/{run.run_id}")
    woken = post(client, f"/runs/{run.run_id}/actions", {"action": "wake", "csrf": csrf})
    assert woken.json()["message"] == f"woke 1 sleep of {run.run_id}"
    assert run.result(timeout=20) == "woke"
    with tether.Worker(deployment_id="tests-next"):
        pass
    diff = web.get("/deployments/diff?old=tests&new=tests-next")
    assert diff.status_code == 200 and "napping" in diff.text and "unchanged" in diff.text
