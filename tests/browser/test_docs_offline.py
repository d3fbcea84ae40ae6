"""The API docs page renders from the package's own Swagger UI with every request off this machine aborted,
under a CSP that allows scripts from the API's origin only; axe-core finds no serious or critical violation
(Swagger UI's colours are darkened to AA contrast in docs.css, its server picker labelled in docs.js)."""

from __future__ import annotations

import httpx
from playwright.sync_api import BrowserContext, Page, Request, expect

from tests.browser.browser_support import LOCAL_HOSTS, assert_accessible
from tests.integration.client_support import Stack


def test_docs_page_renders_offline(
    context: BrowserContext, page: Page, stack: Stack, axe_source: str
) -> None:
    outside: list[str] = []

    def note(request: Request) -> None:
        host = request.url.split("/")[2].rsplit(":", 1)[0] if "://" in request.url else ""
        if host and host not in LOCAL_HOSTS:
            outside.append(request.url)

    context.on("request", note)
    page.goto(f"{stack.base}/schema")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("crm-bulk", timeout=30_000)
    operations = page.locator(".opblock-summary-path")
    expect(operations.first).to_be_visible()
    assert operations.count() > 30
    # An operation opens and shows its parameters: the UI is working, not just painted.
    assert_accessible(page, axe_source, "the API docs page")
    page.locator(".opblock-post .opblock-summary-control").first.click()
    expect(page.locator(".opblock.is-open").first).to_be_visible()
    assert outside == [], f"the docs page asked for {outside}"
    policy = httpx.get(f"{stack.base}/schema").headers["content-security-policy"]
    assert "script-src 'self';" in policy
    assert "http" not in policy
