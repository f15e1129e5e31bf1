"""Browser tests: Playwright driving Debian's Chromium against a real ``tether web``.

Each test saves a screenshot of the pages it visits under
``docs/screenshots/latest`` (the folder the README names; not committed),
overwriting the last run's.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Playwright, expect, sync_playwright

import tether
from tests.browser.server import WebServer
from tests.integration.processes import REPO
from tests.integration.test_postgres_faults import private_server  # noqa: F401 (a fixture)

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = REPO / "docs" / "screenshots" / "latest"

# What a page shows live may take a few seconds to arrive on a loaded machine (pushes come
# at most once a second, and the suite runs four workers and their browsers on two cores):
# an expectation waits up to this long, returning as soon as it holds.
expect.set_options(timeout=20_000)


# Per test, not per session: Playwright's sync API keeps an event loop running in the
# thread while it is open, and the other tests of this process call asyncio.run.
@pytest.fixture
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture
def browser(playwright: Playwright) -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)")
    b = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
    yield b
    b.close()


class Dialogs:
    """Every confirm() the page asked, each accepted."""

    def __init__(self) -> None:
        self.asked: list[str] = []


@pytest.fixture
def dialogs() -> Dialogs:
    return Dialogs()


@pytest.fixture
def page(browser: Browser, dialogs: Dialogs) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(30_000)

    def accept(dialog: object) -> None:
        dialogs.asked.append(dialog.message)  # type: ignore[attr-defined]
        dialog.accept()  # type: ignore[attr-defined]

    tab.on("dialog", accept)
    yield tab
    context.close()


@pytest.fixture
def web(world_url: str, tmp_path: Path) -> Iterator[WebServer]:
    tether.config.resolve_world(world_url)  # made now: the UI serves a World that exists
    server = WebServer(world_url, tmp_path / "web.log")
    yield server
    server.stop()


def screenshot(page: Page, name: str, world_kind: str) -> None:
    """Save what the page shows as ``docs/screenshots/latest/<name>-<world>.png``."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}-{world_kind}.png"), full_page=True)
