"""Fixtures for the dashboard's browser tests: Debian's Chromium driven by Playwright (one
browser per module), a real sctk server with job workers per test, and a page that records
every console error.

Playwright's own browser download is never used: the browser is /usr/bin/chromium.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from sctk import config
from sctk.config import Settings
from sctk.storage.engine import make_engine
from tests.helpers import LiveServer
from tests.security.conftest import ACCOUNTS, Account, accounts, api, create_user, engine, start_api  # noqa: F401

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).parent / "screenshots"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
FAST_JOBS = {
    "jobs": {"poll_seconds": 0.05, "heartbeat_seconds": 0.2},
    "executor": {"processes": 1},
    "security": {
        "client_rate_limit_per_minute": 100_000,
        "rate_limit_per_minute": 100_000,
        "rate_limit_burst": 10_000,
    },
}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (see .ci/run)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield browser
        browser.close()


@dataclass
class Site:
    """A served sctk (with a job worker) on the test's data directory."""

    server: LiveServer
    settings: Settings
    accounts: dict[str, Account]

    @property
    def url(self) -> str:
        return self.server.url


def serve_site(stack: ExitStack, settings: Settings, *roles: str) -> Site:
    """Serve create_app on SETTINGS' data directory with a job worker and the metrics
    collector, with one account per role, until STACK closes."""
    from sctk.api.app import create_app

    db = make_engine(settings)
    for role in roles:
        a = ACCOUNTS[role]
        create_user(db, a.username, a.password, a.role)
    db.dispose()
    served = config.load(settings.home, FAST_JOBS).settings
    server = stack.enter_context(LiveServer(create_app(served, workers=1, collect=True)))
    return Site(server, served, {r: ACCOUNTS[r] for r in roles})


@pytest.fixture
def start_site(settings) -> Iterator:
    """start_site(*roles) serves the test's data directory (see serve_site)."""
    with ExitStack() as stack:
        yield lambda *roles: serve_site(stack, settings, *roles)


# a response the test provoked on purpose, logged by Chromium as a failed resource
NETWORK = re.compile(r"Failed to load resource: the server responded with a status of (\d+)")
# The pages fetch what they show again every 5 s (every(5000, ...) in static/js/pages/).
REFRESH_MS = 5000


@dataclass
class Browsing:
    """One page of its own browser context, with the console errors it logged."""

    page: Any
    site: Site
    errors: list[str] = field(default_factory=list)

    def goto(self, path: str) -> None:
        self.page.goto(self.site.url + path)
        self.page.wait_for_selector("body[data-ready=true]", timeout=15_000)

    def refreshed(self, selector: str) -> Any:
        """SELECTOR once the page's next periodic refresh shows it, for something that has
        already changed on the server. The page's clock is moved on to that refresh rather
        than waited for (it keeps running in real time otherwise): the refresh itself, its
        requests and its drawing are the page's own, and a page that stopped refreshing
        still fails the wait."""
        self.page.clock.fast_forward(REFRESH_MS)
        return self.page.wait_for_selector(selector)

    def login(self, role: str) -> None:
        account = self.site.accounts[role]
        self.page.goto(self.site.url + "/ui/login")
        self.page.fill("#login-form input[name=username]", account.username)
        self.page.fill("#login-form input[name=password]", account.password)
        self.page.click("#login-form button[type=submit]")
        self.page.wait_for_url(self.site.url + "/")
        self.page.wait_for_selector("body[data-ready=true]")

    def shoot(self, name: str) -> None:
        """Screenshots of the page at desktop and phone width (tests/web/screenshots/)."""
        SCREENSHOTS.mkdir(exist_ok=True)
        for size, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
            self.page.set_viewport_size(viewport)
            # usable at this width: nothing wider than the window
            overflow = self.page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 1, f"{name} is {overflow} px wider than a {size} window"
            self.page.screenshot(path=str(SCREENSHOTS / f"{name}-{size}.png"), full_page=True)
        self.page.set_viewport_size(DESKTOP)

    def take_errors(self, allowed_status: tuple[int, ...] = ()) -> list[str]:
        """The console errors so far (minus failed loads with an ALLOWED_STATUS), cleared."""
        kept = []
        for text in self.errors:
            m = NETWORK.search(text)
            if m and int(m.group(1)) in allowed_status:
                continue
            kept.append(text)
        self.errors.clear()
        return kept


def open_browsing(browser, site: Site) -> tuple[Any, Browsing]:
    """A browser context of its own and a 1280x800 page in it on SITE, recording console
    errors; the caller closes the context."""
    context = browser.new_context(viewport=DESKTOP)
    context.clock.install()  # before any page script: Browsing.refreshed moves it on
    page = context.new_page()
    page.set_default_timeout(20_000)
    b = Browsing(page, site)
    page.on("console", lambda m: m.type == "error" and b.errors.append(m.text))
    page.on("pageerror", lambda e: b.errors.append(f"uncaught: {e}"))
    return context, b


@pytest.fixture
def browse(browser) -> Iterator:
    """browse(site) opens a fresh 1280x800 page on SITE that records console errors."""
    contexts = []

    def open_page(site: Site) -> Browsing:
        context, b = open_browsing(browser, site)
        contexts.append(context)
        return b

    yield open_page
    for context in contexts:
        context.close()
