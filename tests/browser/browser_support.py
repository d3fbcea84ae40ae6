"""Helpers of the browser tests: Debian's Chromium driven by Playwright, axe-core, accounts made over HTTP."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from playwright.sync_api import Page, Route

from tests.integration.api_support import PASSWORD, unique_email
from tests.requirements import unavailable

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
AXE = ROOT / ".tools" / "browser" / "node_modules" / "axe-core" / "axe.min.js"
# Written by every run (git-ignored); `docs/ui-*.png` in the README are copies of these.
SHOTS = Path(os.environ.get("CRM_BULK_BROWSER_SHOTS") or ROOT / "browser-shots")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
LOCAL_HOSTS = {"127.0.0.1", "localhost", "[::1]", "::1"}
SERIOUS = {"serious", "critical"}


def required_file(path: Path, how: str) -> Path:
    """`path`, which the browser tests need; missing fails on CI and skips elsewhere (like a service)."""
    if not path.exists():
        unavailable(f"{path} is missing: {how}")
    return path


@dataclass(frozen=True)
class Member:
    """A member of an account, with the credentials the sign-in form takes and a token for API checks."""

    email: str
    role: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        """The API's Authorization header for this member."""
        return {"Authorization": f"Bearer {self.token}"}


def login(base: str, email: str) -> str:
    """An access token for `email` (password PASSWORD)."""
    answer = httpx.post(f"{base}/auth/login", json={"email": email, "password": PASSWORD})
    assert answer.status_code == 200, answer.text
    token: str = answer.json()["access_token"]
    return token


def register_admin(base: str, account_name: str) -> Member:
    """A new account and its admin."""
    email = unique_email("ui-admin")
    made = httpx.post(
        f"{base}/auth/register", json={"email": email, "password": PASSWORD, "account_name": account_name}
    )
    assert made.status_code == 201, made.text
    return Member(email, "admin", login(base, email))


def add_member(base: str, admin: Member, role: str) -> Member:
    """Another member of the admin's account, in `role`."""
    email = unique_email(f"ui-{role}")
    made = httpx.post(
        f"{base}/accounts/me/members",
        json={"email": email, "password": PASSWORD, "role": role},
        headers=admin.headers,
    )
    assert made.status_code == 201, made.text
    return Member(email, role, login(base, email))


def cut_network(route: Route) -> None:
    """Playwright route handler: requests to this machine go on, any other is aborted (no CDN, no fonts)."""
    host = urlsplit(route.request.url).hostname or ""
    if host in LOCAL_HOSTS or route.request.url.startswith(("data:", "blob:")):
        route.continue_()
    else:
        route.abort("internetdisconnected")


def sign_in(page: Page, base: str, member: Member) -> None:
    """Through the dashboard's form, as a person would; ends on the jobs list."""
    page.goto(f"{base}/ui#/jobs")
    page.get_by_label("Email").fill(member.email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", level=1, name="Jobs").wait_for()


def serious_violations(page: Page, axe_source: str) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on the page as it is now.

    Injected with `evaluate` (the DevTools protocol), which the page's CSP does not govern: the page itself
    still loads no inline script.
    """
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.evaluate(axe_source)
    result: dict[str, Any] = page.evaluate(
        "async () => await window.axe.run(document, {resultTypes: ['violations']})"
    )
    return [
        {
            "id": v["id"],
            "impact": v["impact"],
            "help": v["help"],
            "nodes": [n["target"] for n in v["nodes"][:5]],
        }
        for v in result["violations"]
        if v["impact"] in SERIOUS
    ]


def assert_accessible(page: Page, axe_source: str, where: str) -> None:
    """No serious or critical axe-core violation on the page."""
    found = serious_violations(page, axe_source)
    assert not found, f"axe-core on {where}: {found}"


def count_text(text: str) -> int:
    """A count as the dashboard shows it (`100,000`)."""
    return int(text.replace(",", "").strip())
