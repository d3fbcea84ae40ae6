"""Fixtures of the browser tests: the whole platform (`crm-bulk up`) on a database of its own, and Debian's
Chromium through Playwright with every request off this machine aborted."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, Playwright, sync_playwright

from tests.browser.browser_support import AXE, CHROMIUM, CHROMIUM_ARGS, SHOTS, cut_network, required_file
from tests.databases import own_database
from tests.integration.client_support import Stack, platform


@pytest.fixture(scope="session")
def axe_source() -> str:
    """axe-core's script (scripts/browser_tools.sh installs it)."""
    return required_file(AXE, "run scripts/browser_tools.sh install").read_text()


# The stack, the driver and the browser last for this package only: Playwright's sync driver keeps an event
# loop running on the main thread while it lives, which would break later tests that call asyncio.run().
@pytest.fixture(scope="package")
def stack(pg_server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """API, scheduler, a worker process and the log shipper; 5,000-row chunks keep a 100k import short."""
    with (
        own_database(pg_server_url, prefix="crm_bulk_ui") as url,
        platform(url, tmp_path_factory.mktemp("ui-stack"), chunk_size=5000) as running,
    ):
        yield running


@pytest.fixture(scope="package")
def playwright_driver() -> Iterator[Playwright]:
    """Playwright's driver for the browser tests."""
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="package")
def browser(playwright_driver: Playwright) -> Iterator[Browser]:
    """Debian's Chromium, headless (Playwright's own browser builds cannot be downloaded here)."""
    executable = required_file(CHROMIUM, "run scripts/browser_tools.sh install (Debian's chromium)")
    launched = playwright_driver.chromium.launch(executable_path=str(executable), args=CHROMIUM_ARGS)
    yield launched
    launched.close()


@pytest.fixture(scope="session")
def shots() -> str:
    """The folder the screenshots go to."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    return str(SHOTS)


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    """A fresh profile (nothing kept between tests) with the network beyond this machine cut off."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    ctx.route("**/*", cut_network)
    yield ctx
    ctx.close()


@pytest.fixture
def page(context: BrowserContext) -> Iterator[Page]:
    """A tab whose console errors (a CSP refusal, a script error, a failed load) fail the test."""
    tab = context.new_page()
    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            problems.append(message.text)

    tab.on("console", on_console)
    tab.on("pageerror", lambda error: problems.append(f"uncaught: {error}"))
    yield tab
    assert not problems, f"console errors: {problems}"
