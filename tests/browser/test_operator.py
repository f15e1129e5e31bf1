"""The operator's work, done entirely in a browser, against real workers and a real World.

v1 and v2 of ``orders`` (``tests/apps/fork_v1``, ``fork_v2``) serve the runs:
v1's shipping fails, v2's works. Pages update themselves over server-sent
events; each test marks the page's window and checks the mark is still there,
so what it saw arrived without a reload.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

import tether
from tests.browser.conftest import Dialogs, screenshot
from tests.browser.server import WebServer
from tests.integration.processes import REPO, WorkerProcess, wait_for

pytestmark = pytest.mark.both_worlds

V1, V2 = REPO / "tests" / "apps" / "fork_v1", REPO / "tests" / "apps" / "fork_v2"
FULFIL = "workflow//orders//fulfil"


def worker_of(version: str, url: str, tmp_path: Path) -> WorkerProcess:
    code = V1 if version == "v1" else V2
    return WorkerProcess(
        url,
        ["orders"],
        tmp_path / f"{version}.log",
        pythonpath=code,
        env={"TETHER_DEPLOYMENT_ID": version},
    )


def stranded_on_v1(url: str, tmp_path: Path, count: int, nap: float) -> list[tether.Run]:
    """``count`` runs asleep on v1, whose worker then stops: stranded until moved."""
    v1 = worker_of("v1", url, tmp_path)
    runs = [
        tether.start(FULFIL, [str(tmp_path / "marks"), f"o-{i}", nap], deployment_id="v1")
        for i in range(count)
    ]
    for run in runs:
        wait_for(lambda r=run: bool(r._world.list_waits(r.run_id)), 20, "a run to sleep")
    v1.stop()
    return runs


def mark_window(page: Page) -> None:
    page.evaluate("window.__noReload = true")


def assert_not_reloaded(page: Page) -> None:
    assert page.evaluate("window.__noReload === true"), "the page was reloaded"


def test_the_guides_recovery_in_the_browser(
    world_url: str, world_kind: str, tmp_path: Path, web: WebServer, page: Page, dialogs: Dialogs
) -> None:
    stranded = stranded_on_v1(world_url, tmp_path, 3, 2.0)
    v2 = worker_of("v2", world_url, tmp_path)  # the fix, deployed: latest
    try:
        # A stranded deployment is flagged, with what to do.
        page.goto(web.url + "/deployments")
        row = page.locator("tr[data-deployment=v1]")
        expect(row.locator("[data-stranded]")).to_contain_text("no live worker")
        expect(page.locator("tr[data-deployment=v2]")).to_contain_text("latest")
        screenshot(page, "deployments", world_kind)

        # Find v1's runs: filter by deployment, then by workflow to see the reruns too.
        page.goto(web.url + "/")
        page.select_option("select[name=deployment]", "v1")
        page.click("form.filters button[type=submit]")
        expect(page.locator("tr[data-run]")).to_have_count(3)
        page.goto(web.url + f"/?workflow={FULFIL}")
        mark_window(page)
        expect(page.locator("tr[data-run]")).to_have_count(3)
        screenshot(page, "runs", world_kind)

        # Select them, cancel: the rows turn cancelled where they are.
        page.check("[data-select-page]")
        expect(page.locator("[data-selected]")).to_have_text("3 selected")
        page.click("form#bulk button[value=cancel]")
        expect(page.locator("tr[data-status=cancelled]")).to_have_count(3)
        assert dialogs.asked == ["Cancel: 3 runs?"]

        # Select them again, rerun on latest: three new rows, which complete on v2.
        page.check("[data-select-page]")
        page.click("form#bulk button[value=rerun-latest]")
        expect(page.locator("#flash")).to_have_text("Rerun on latest: 3 of 3 runs done")
        expect(page.locator("tr[data-run]")).to_have_count(6)
        expect(page.locator("tr[data-status=completed]")).to_have_count(3, timeout=30_000)
        for row in page.locator("tr[data-status=completed]").all():
            expect(row).to_contain_text("v2")
        assert_not_reloaded(page)
        screenshot(page, "runs-recovered", world_kind)
    finally:
        v2.stop()
    reruns = tether.list_runs(deployment_id="v2", limit=None)
    assert sorted(r.rerun_of or "" for r in reruns) == sorted(r.run_id for r in stranded)
    assert all(r.status() == "completed" for r in reruns)


def test_a_run_followed_live_through_its_hook_and_stream(
    world_url: str, world_kind: str, tmp_path: Path, web: WebServer, page: Page
) -> None:
    v2 = worker_of("v2", world_url, tmp_path)
    try:
        run = tether.start(
            "workflow//orders//dispatch", [str(tmp_path / "marks"), "d-7"], deployment_id="v2"
        )
        wait_for(lambda: bool(run.hooks()), 20, "the run to wait for its carrier")
        page.goto(web.url + f"/runs/{run.run_id}")
        mark_window(page)
        timeline = page.locator("#run-timeline li[data-request]")
        expect(timeline).to_have_count(2)  # pack, then the hook it waits on
        expect(page.locator("[data-stream=default] .chunks li")).to_have_count(1)
        screenshot(page, "run-waiting", world_kind)

        # A payload that is not JSON is refused in the page; nothing is sent.
        form = page.locator("form.resolve")
        form.locator("textarea").fill("{not json")
        form.locator("button").click()
        expect(form.locator("[data-field-error]")).to_contain_text("not JSON")
        assert run.status() == "running"

        # Resolve the hook: the run continues, its timeline gains the label step,
        # its stream the label chunk, and it completes, all without a reload.
        form.locator("textarea").fill('"fast-carrier"')
        form.locator("button").click()
        expect(page.locator("#flash")).to_contain_text("delivered to hook 'carrier-d-7'")
        expect(timeline).to_have_count(3)
        expect(page.locator("#run-head .badge").first).to_have_text("completed")
        chunks = page.locator("[data-stream=default] .chunks li")
        expect(chunks).to_have_count(2)
        expect(chunks.nth(1)).to_contain_text("labelled d-7 for fast-carrier on v2")
        expect(page.locator("#run-io")).to_contain_text("labelled d-7")
        expect(page.locator("form.resolve")).to_have_count(0)  # no hook waits any more
        assert_not_reloaded(page)
        screenshot(page, "run", world_kind)
    finally:
        v2.stop()
    assert run.result(timeout=10) == ["packed d-7", "labelled d-7", "v2"]


def test_a_sleeping_run_moved_onto_latest_from_the_deployments_page(
    world_url: str, world_kind: str, tmp_path: Path, web: WebServer, page: Page, dialogs: Dialogs
) -> None:
    [run] = stranded_on_v1(world_url, tmp_path, 1, 3600.0)
    deadline = run._world.list_waits(run.run_id)[0].resume_at
    v2 = worker_of("v2", world_url, tmp_path)  # its live worker checks the run
    try:
        page.goto(web.url + "/deployments")
        page.click("tr[data-deployment=v1] >> text=check against latest")
        page.click("form[data-navigate] button")  # the check is an action: a POST
        expect(page.locator(f"tr[data-run='{run.run_id}']")).to_contain_text("replays")
        screenshot(page, "check", world_kind)
        page.click("text=Move 1 of 1 runs onto latest")
        expect(page.locator("#flash")).to_contain_text("1 moved, 0 left")
        assert dialogs.asked == ["Move 1 runs of v1 onto latest?"]
    finally:
        v2.stop()
    assert run.status() == "cancelled" and run.upgraded_to is not None
    new = tether.get_run(run.upgraded_to)
    assert new.deployment_id == "v2"
    assert new._world.list_waits(new.run_id)[0].resume_at == deadline  # same sleep
    # The run's own page links to where it went.
    page.goto(web.url + f"/runs/{run.run_id}")
    expect(page.locator("#run-family")).to_contain_text(re.compile(f"moved to {new.run_id}"))


def test_a_failed_run_forked_from_its_failing_step_picked_on_the_timeline(
    world_url: str, world_kind: str, tmp_path: Path, web: WebServer, page: Page
) -> None:
    v1 = worker_of("v1", world_url, tmp_path)
    failed = tether.start(FULFIL, [str(tmp_path / "marks"), "f-1", 0.1], deployment_id="v1")
    with pytest.raises(tether.RunFailedError):
        failed.result(timeout=30)
    v1.stop()
    v2 = worker_of("v2", world_url, tmp_path)
    try:
        page.goto(web.url + f"/runs/{failed.run_id}")
        expect(page.locator("#run-io .problem")).to_contain_text("FatalError: no carrier for f-1")
        expect(page.locator("#run-io")).to_contain_text(
            'raise FatalError(f"no carrier for {order}")'
        )
        ship = page.locator("li[data-request='3']")
        expect(ship).to_contain_text("ship")
        expect(ship).to_have_attribute("data-status", "failed")
        screenshot(page, "run-failed", world_kind)
        # Pick the failing step: the check's verdict comes first, nothing is written yet.
        ship.locator("a.fork").click()
        page.click("form[data-navigate] button")
        expect(page.locator(".verdict")).to_contain_text("replays, keeping 3 requests")
        assert len(tether.list_runs(limit=None)) == 1
        screenshot(page, "fork", world_kind)
        page.click("text=Fork onto v2")
        expect(page.locator("#flash")).to_contain_text("forked")
        [fork] = tether.list_runs(deployment_id="v2", limit=None)
        assert (fork.forked_from, fork.fork_point) == (failed.run_id, 3)
        assert fork.result(timeout=30)[-1] == "v2"
    finally:
        v2.stop()


def test_many_tabs_share_one_live_stream_and_all_stay_live(
    world_url: str, tmp_path: Path, web: WebServer, page: Page
) -> None:
    # A browser keeps 6 connections to a host: one stream per tab would starve the 7th.
    tabs = [page] + [page.context.new_page() for _ in range(7)]
    for tab in tabs:
        tab.goto(web.url + "/")
        expect(tab.locator("tr[data-run]")).to_have_count(0)
    v2 = worker_of("v2", world_url, tmp_path)
    try:
        run = tether.start(
            "workflow//orders//dispatch", [str(tmp_path / "marks"), "t-1"], deployment_id="v2"
        )
        for tab in tabs:
            expect(tab.locator(f"tr[data-run='{run.run_id}']")).to_have_count(1)
        ninth = page.context.new_page()
        ninth.goto(web.url + f"/runs/{run.run_id}", timeout=10_000)
        expect(ninth.locator("#run-head")).to_contain_text(run.run_id)
        run.cancel()
        for tab in tabs:
            expect(tab.locator(f"tr[data-run='{run.run_id}']")).to_have_attribute(
                "data-status", "cancelled"
            )
    finally:
        v2.stop()
