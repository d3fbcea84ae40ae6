"""The dashboard in Debian's Chromium, end to end against `crm-bulk up`: sign in, import 100k rows through the
import page, follow the job, read its errors and download them, cancel a scheduled job; a viewer's pages
hold no write buttons; axe-core finds no serious or critical violation on any page."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.browser.browser_support import (
    Member,
    add_member,
    assert_accessible,
    count_text,
    register_admin,
    sign_in,
)
from tests.integration.client_support import Stack

ROWS = 100_000
BAD_EVERY = 1_000  # an invalid email: failed invalid_email
REPEAT_EVERY = 2_000  # the row before's email again: skipped as a duplicate
WRITE_BUTTONS = ["#cancel-job", "#run-job", "#retry-job", "#revert-job"]
COUNTS = ["total", "succeeded", "failed", "skipped", "cancelled"]


@pytest.fixture(scope="module")
def admin(stack: Stack) -> Member:
    """The admin of an account of this module's own."""
    return register_admin(stack.base, "Dashboard")


@pytest.fixture(scope="module")
def viewer(stack: Stack, admin: Member) -> Member:
    """A viewer of the admin's account."""
    return add_member(stack.base, admin, "viewer")


@pytest.fixture(scope="module")
def contacts_csv(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, int]:
    """A 100k-row CSV: (path, rows that fail, rows skipped as duplicates)."""
    path = tmp_path_factory.mktemp("ui-import") / "contacts.csv"
    emails = [_email_of(i) for i in range(1, ROWS + 1)]
    lines = ["Email,First Name,Last Name,Company"]
    lines += [f"{email},First{i},Last{i},Company {i % 97}" for i, email in enumerate(emails, start=1)]
    path.write_text("\n".join(lines) + "\n")
    failed = sum("@" not in e for e in emails)
    return path, failed, len(emails) - failed - len(set(emails) - {e for e in emails if "@" not in e})


def _email_of(line: int) -> str:
    if line % BAD_EVERY == 0:
        return f"not-an-email-{line}"
    if line % REPEAT_EVERY == 2:
        return f"person{line - 1}@example.com"
    return f"person{line}@example.com"


def _imported_starting_with(prefix: str) -> int:
    return len({e for e in map(_email_of, range(1, ROWS + 1)) if "@" in e and e.startswith(prefix)})


def _job(stack: Stack, member: Member, job_id: str) -> dict[str, Any]:
    answer = httpx.get(f"{stack.base}/bulk-actions/{job_id}", headers=member.headers)
    assert answer.status_code == 200, answer.text
    job: dict[str, Any] = answer.json()
    return job


def _scheduled_job(stack: Stack, member: Member) -> str:
    """A tagging job over the whole account that waits a day in `scheduled`."""
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    made = httpx.post(
        f"{stack.base}/bulk-actions",
        json={"action": "add_tags", "target": {"all": True}, "tags": ["later"], "scheduled_for": later},
        headers=member.headers,
    )
    assert made.status_code == 202, made.text
    job_id: str = made.json()["id"]
    return job_id


def _map_and_upload(page: Page, path: Path, axe_source: str) -> str:
    """Through the import page: the mapping step (Company left out), then the upload; the new job's id."""
    page.get_by_role("navigation").get_by_role("link", name="Import").click()
    page.get_by_role("heading", level=1, name="Import contacts").wait_for()
    assert_accessible(page, axe_source, "the import page")
    page.get_by_label("Choose a CSV, NDJSON or XLSX file").set_input_files(path)
    expect(page.locator("#import-preview")).to_be_visible()
    # The preview matched each header to its field.
    expect(page.get_by_label("Field for column Email")).to_have_value("email")
    expect(page.get_by_label("Field for column First Name")).to_have_value("first_name")
    # A column left out: the preview is read again with that mapping, and the keyboard stays on the column.
    page.get_by_label("Field for column Company").select_option("")
    expect(page.locator("select[data-header='Company']")).to_be_focused()
    expect(page.get_by_label("Field for column Company")).to_have_value("")
    assert_accessible(page, axe_source, "the import page's mapping step")
    # Every value the upload bar takes, as the page sets it (the page moves on to the job once it is sent).
    page.evaluate(
        """() => {
            const bar = document.getElementById('upload-progress');
            window.__uploadProgress = [];
            new MutationObserver(() => window.__uploadProgress.push(bar.value))
                .observe(bar, {attributes: true, attributeFilter: ['aria-valuetext']});
        }"""
    )
    page.get_by_role("button", name="Import", exact=True).click()
    page.wait_for_url("**/ui#/jobs/*", timeout=120_000)
    seen: list[int] = page.evaluate("() => window.__uploadProgress")
    assert seen and seen[-1] == 100, seen
    assert seen == sorted(seen), seen
    return page.url.rsplit("/", 1)[1]


def _download_errors(page: Page, job_id: str) -> list[dict[str, str]]:
    """The error CSV through the job page's button, as the browser saved it."""
    with page.expect_download() as download_info:
        page.get_by_role("button", name="Download errors (CSV)").click()
    download = download_info.value
    assert download.suggested_filename == f"bulk-action-{job_id}-errors.csv"
    return list(csv.DictReader(io.StringIO(Path(download.path()).read_text())))


def test_import_100k_rows_then_counts_errors_and_csv(
    *,
    page: Page,
    stack: Stack,
    admin: Member,
    contacts_csv: tuple[Path, int, int],
    axe_source: str,
    shots: str,
) -> None:
    path, bad_rows, repeated_rows = contacts_csv
    sign_in(page, stack.base, admin)
    job_id = _map_and_upload(page, path, axe_source)

    expect(page.locator("#job-status")).to_have_text("completed with errors", timeout=150_000)
    api_job = _job(stack, admin, job_id)
    assert (api_job["total"], api_job["failed"], api_job["skipped"]) == (ROWS, bad_rows, repeated_rows)
    assert api_job["succeeded"] == ROWS - bad_rows - repeated_rows
    assert api_job["mapping_used"]["Company"] == ""
    expect(page.get_by_role("region", name="How the file's columns were read")).to_contain_text("left out")
    for name in COUNTS:
        shown = count_text(page.locator(f"[data-count={name}]").inner_text())
        assert shown == api_job[name], (name, shown, api_job[name])
    expect(page.locator("#job-progress")).to_have_js_property("value", 100)

    # Statistics once the log holds every outcome, then the failed entities, page by page.
    by_code = page.get_by_role("region", name="Failed entities by error code")
    expect(by_code.get_by_role("row", name=f"invalid_email {bad_rows}")).to_be_visible(timeout=60_000)
    errors = page.locator("#error-table tbody tr")
    expect(errors).to_have_count(20)
    expect(errors.first).to_contain_text("invalid_email")
    page.get_by_role("button", name="Next page").click()
    expect(page.locator("#error-page")).to_have_text("Page 2")
    expect(errors).to_have_count(20)
    assert_accessible(page, axe_source, "a job page")
    page.screenshot(path=f"{shots}/job.png", full_page=True)

    rows = _download_errors(page, job_id)
    assert len(rows) == bad_rows + repeated_rows
    assert sum(r["code"] == "invalid_email" for r in rows) == bad_rows
    assert {r["outcome"] for r in rows} == {"failed", "skipped"}

    page.get_by_role("navigation").get_by_role("link", name="Jobs").click()
    row = page.locator(f"tr[data-job-id='{job_id}']")
    expect(row).to_contain_text("completed with errors")
    expect(row.get_by_role("progressbar")).to_have_js_property("value", 100)
    assert_accessible(page, axe_source, "the jobs list")


def test_jobs_list_follows_a_running_job_live(
    page: Page, stack: Stack, admin: Member, axe_source: str, shots: str
) -> None:
    # Paced to 2,000 entities a second, 11,111 contacts take a few seconds: long enough to watch.
    limits = {"entities_per_second": 2_000}
    assert httpx.patch(f"{stack.base}/accounts/me/limits", json=limits, headers=admin.headers).is_success
    made = httpx.post(
        f"{stack.base}/bulk-actions",
        json={
            "action": "add_tags",
            "target": {"filter": {"email": {"starts_with": "person1"}}},
            "tags": ["vip"],
        },
        headers=admin.headers,
    )
    assert made.status_code == 202, made.text
    job_id = made.json()["id"]
    streams: list[str] = []
    page.on("request", lambda r: streams.append(r.url) if r.url.endswith(f"/{job_id}/events") else None)
    sign_in(page, stack.base, admin)
    bar = page.locator(f"tr[data-job-id='{job_id}']").get_by_role("progressbar")
    bar.wait_for()
    page.evaluate(
        """(id) => {
            const bar = document.querySelector(`tr[data-job-id='${id}'] progress`);
            window.__listProgress = [bar.value];
            new MutationObserver(() => window.__listProgress.push(bar.value))
                .observe(bar, {attributes: true, attributeFilter: ['aria-valuetext']});
        }""",
        job_id,
    )
    page.wait_for_function(
        "(id) => { const v = document.querySelector(`tr[data-job-id='${id}'] progress`).value;"
        " return v > 0 && v < 100; }",
        arg=job_id,
        timeout=60_000,
    )
    page.screenshot(path=f"{shots}/jobs.png", full_page=True)
    row = page.locator(f"tr[data-job-id='{job_id}']")
    expect(row).to_contain_text("completed", timeout=60_000)
    expect(bar).to_have_js_property("value", 100)
    seen: list[int] = page.evaluate("() => window.__listProgress")
    assert any(0 < v < 100 for v in seen) and seen[-1] == 100 and seen == sorted(seen), seen
    assert streams, "the list follows running jobs through their event stream"
    assert_accessible(page, axe_source, "the jobs list with a running job")
    done = _job(stack, admin, job_id)
    assert done["succeeded"] + done["skipped"] == done["total"] == _imported_starting_with("person1")
    restore = {"entities_per_second": 50_000}
    assert httpx.patch(f"{stack.base}/accounts/me/limits", json=restore, headers=admin.headers).is_success


def test_cancel_a_scheduled_job(page: Page, stack: Stack, admin: Member, axe_source: str) -> None:
    job_id = _scheduled_job(stack, admin)
    sign_in(page, stack.base, admin)
    row = page.locator(f"tr[data-job-id='{job_id}']")
    expect(row).to_contain_text("scheduled")
    page.get_by_label("Status", exact=True).select_option("scheduled")
    expect(page.locator("tbody tr")).to_have_count(1)
    row.get_by_role("link").click()
    expect(page.locator("#job-status")).to_have_text("scheduled")
    page.get_by_role("button", name="Cancel job").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("Cancel job")
    assert_accessible(page, axe_source, "the cancel dialog")
    dialog.get_by_role("button", name="Cancel the job").click()
    expect(page.locator("#job-status")).to_have_text("cancelled")
    expect(page.get_by_role("button", name="Cancel job")).to_have_count(0)
    assert _job(stack, admin, job_id)["status"] == "cancelled"


def test_viewer_sees_no_write_buttons(
    page: Page, stack: Stack, admin: Member, viewer: Member, axe_source: str
) -> None:
    pending = _scheduled_job(stack, admin)
    sign_in(page, stack.base, viewer)
    expect(page.locator("#whoami")).to_contain_text("viewer")
    expect(page.get_by_role("link", name="Import")).to_have_count(0)
    page.locator(f"tr[data-job-id='{pending}']").get_by_role("link").click()
    expect(page.locator("#job-status")).to_have_text("scheduled")
    expect(page.get_by_role("button", name="Download errors (CSV)")).to_be_visible()
    for selector in WRITE_BUTTONS:
        expect(page.locator(selector)).to_have_count(0)
    # An ended job with failures and successes: still nothing to press but the download.
    ended = httpx.get(
        f"{stack.base}/bulk-actions", params={"status": "completed_with_errors"}, headers=viewer.headers
    ).json()["items"]
    if ended:
        page.goto(f"{stack.base}/ui#/jobs/{ended[0]['id']}")
        expect(page.locator("#job-status")).to_have_text("completed with errors")
        for selector in WRITE_BUTTONS:
            expect(page.locator(selector)).to_have_count(0)
    page.get_by_role("navigation").get_by_role("link", name="Account").click()
    expect(page.locator("#my-role")).to_have_text("viewer")
    expect(page.get_by_role("heading", name="Members")).to_have_count(0)
    expect(page.get_by_role("button", name="Save limits")).to_have_count(0)
    page.goto(f"{stack.base}/ui#/import")
    expect(page.get_by_text("Importing needs the editor or admin role.")).to_be_visible()
    expect(page.locator("#start-import")).to_have_count(0)
    assert_accessible(page, axe_source, "the import page as a viewer")


def test_admin_manages_members_and_limits(page: Page, stack: Stack, admin: Member, axe_source: str) -> None:
    sign_in(page, stack.base, admin)
    page.get_by_role("navigation").get_by_role("link", name="Account").click()
    members = page.get_by_role("region", name="Members of the account")
    expect(members.get_by_role("row", name=admin.email)).to_be_visible()
    assert_accessible(page, axe_source, "the account page")
    page.get_by_label("Email").fill("new-editor@example.com")
    page.get_by_label("Password").fill("a long and unusual passphrase 42")
    page.get_by_label("Role").select_option("editor")
    page.get_by_role("button", name="Add member").click()
    expect(members.get_by_role("row", name="new-editor@example.com editor")).to_be_visible()
    page.get_by_label("Entities per second").fill("1234")
    page.get_by_role("button", name="Save limits").click()
    expect(page.locator("#limit-entities")).to_have_text("1,234")
    account = httpx.get(f"{stack.base}/accounts/me", headers=admin.headers).json()
    assert account["limits"]["entities_per_second"] == 1234
    page.get_by_role("button", name="Remove new-editor@example.com").click()
    page.get_by_role("dialog").get_by_role("button", name="Remove").click()
    expect(members.get_by_role("row", name="new-editor@example.com")).to_have_count(0)
    listed = httpx.get(f"{stack.base}/accounts/me/members", headers=admin.headers).json()
    assert "new-editor@example.com" not in {m["email"] for m in listed}


def test_sign_in_page_keyboard_and_narrow_screen(
    page: Page, stack: Stack, admin: Member, axe_source: str
) -> None:
    policy = httpx.get(f"{stack.base}/ui").headers["content-security-policy"]
    assert "script-src 'self';" in policy and "unsafe" not in policy and "http" not in policy
    page.set_viewport_size({"width": 360, "height": 740})
    page.goto(f"{stack.base}/ui")
    page.get_by_role("heading", level=1, name="Sign in").wait_for()
    assert_accessible(page, axe_source, "the sign-in page")
    # Keyboard only: the form is reached and sent without a pointer; focus is visibly outlined.
    page.keyboard.press("Tab")
    focused = page.evaluate(
        "() => [document.activeElement.id, getComputedStyle(document.activeElement).outlineStyle]"
    )
    assert focused[0] in {"skip-link", "login-email", "login-password"}
    page.locator("#login-email").focus()
    page.keyboard.type(admin.email)
    page.keyboard.press("Tab")
    outline = page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"
    page.keyboard.type("correct horse battery staple")
    page.keyboard.press("Enter")
    page.get_by_role("heading", level=1, name="Jobs").wait_for()
    token_kept = page.evaluate(
        "() => JSON.stringify(localStorage) + JSON.stringify(sessionStorage) + document.cookie"
    )
    assert "eyJ" not in token_kept  # the JWT stays in the page's memory
    # At 360 px nothing runs off the side but the tables' own scrolling regions.
    for route in ["#/jobs", "#/account", "#/import"]:
        page.goto(f"{stack.base}/ui{route}")
        page.locator("h1").wait_for()
        page.wait_for_timeout(200)
        width = page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 360, (route, width)
    # Contrast and target sizes at this width (the other pages were checked at desktop width).
    assert_accessible(page, axe_source, "the import page at 360 px")


def test_dry_run_preview_promote_retry_and_revert(
    page: Page, stack: Stack, admin: Member, tmp_path: Path
) -> None:
    small = tmp_path / "trial.csv"
    small.write_text(
        "email,first_name\n" + "".join(f"trial{i}@example.com,Trial{i}\n" for i in range(4)) + "broken,X\n"
    )
    sign_in(page, stack.base, admin)
    page.get_by_role("navigation").get_by_role("link", name="Import").click()
    page.get_by_label("Choose a CSV, NDJSON or XLSX file").set_input_files(small)
    expect(page.locator("#import-preview")).to_be_visible()
    page.get_by_label("Dry run (apply nothing, show what would change)").check()
    page.get_by_role("button", name="Import", exact=True).click()
    page.wait_for_url("**/ui#/jobs/*")
    dry_id = page.url.rsplit("/", 1)[1]
    expect(page.locator("#job-status")).to_have_text("completed with errors", timeout=60_000)
    preview = page.get_by_role("region", name="What the dry run would change")
    expect(preview).to_contain_text("trial0@example.com", timeout=30_000)
    expect(preview).to_contain_text("trial3@example.com")

    page.get_by_role("button", name="Run for real").click()
    page.get_by_role("dialog").get_by_role("button", name="Run it").click()
    expect(page).not_to_have_url(f"{stack.base}/ui#/jobs/{dry_id}")
    real_id = page.url.rsplit("/", 1)[1]
    expect(page.get_by_role("link", name=f"job {dry_id[:8]}")).to_be_visible()
    expect(page.locator("#job-status")).to_have_text("completed with errors", timeout=60_000)
    real = _job(stack, admin, real_id)
    assert (real["source_id"], real["succeeded"], real["failed"]) == (dry_id, 4, 1)

    page.get_by_role("button", name="Retry failed").click()
    expect(page).not_to_have_url(f"{stack.base}/ui#/jobs/{real_id}")
    retried = _job(stack, admin, page.url.rsplit("/", 1)[1])
    assert (retried["source_id"], retried["total"]) == (real_id, 1)

    page.goto(f"{stack.base}/ui#/jobs/{real_id}")
    expect(page.locator("#job-status")).to_have_text("completed with errors")
    page.get_by_role("button", name="Revert").click()
    page.get_by_role("dialog").get_by_role("button", name="Revert").click()
    expect(page).not_to_have_url(f"{stack.base}/ui#/jobs/{real_id}")
    expect(page.locator("#job-status")).to_have_text("completed", timeout=60_000)
    revert = _job(stack, admin, page.url.rsplit("/", 1)[1])
    assert (revert["action"], revert["source_id"], revert["succeeded"]) == ("revert", real_id, 4)
    left = httpx.get(f"{stack.base}/contacts", params={"email": "trial0@example.com"}, headers=admin.headers)
    assert left.json()["items"] == []
