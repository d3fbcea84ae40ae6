"""Dry runs against real PostgreSQL: the whole pipeline runs and rolls back, so counts, codes and errors are
the real run's while the contacts stay as they were; the preview's sample; promotion to the real job over
the dry run's own target snapshot."""

from __future__ import annotations

import os
from typing import Any

import pytest

from crm_bulk.errors import ConflictError
from crm_bulk.jobs.derived import preview, promote_dry_run
from crm_bulk.postgres import Conn
from tests.integration.apply_support import (
    codes,
    counts_add_up,
    insert_contacts,
    new_account,
    outcomes,
    submit,
)
from tests.integration.derived_support import checksum, promote_to_end, run_to_end

pytestmark = pytest.mark.postgres
# CI size; CRM_BULK_DRY_RUN_ROWS=1000000 runs the same comparison at scale.
ROWS = int(os.environ.get("CRM_BULK_DRY_RUN_ROWS", "3000"))
CHUNK_SIZE = 1000


def _seed(conn: Conn, account: int, n: int) -> None:
    conn.execute(
        "INSERT INTO contacts (account_id, email, email_normalized, company, tags)"
        " SELECT %(a)s, 'd' || g || '@example.com', 'd' || g || '@example.com',"
        " CASE WHEN g %% 4 = 0 THEN 'Acme' ELSE 'Other' END,"
        " CASE WHEN g %% 2 = 0 THEN ARRAY['vip'] ELSE ARRAY[]::text[] END COLLATE \"C\""
        " FROM generate_series(1, %(n)s) AS g",
        {"a": account, "n": n},
    )


def _summary(job: Any) -> tuple[int, int, int, int]:
    return job.total, job.succeeded, job.failed, job.skipped


def _import_records(n: int) -> list[dict[str, Any]]:
    """New emails, emails the account holds, repeats across chunks, and invalid rows."""
    records: list[dict[str, Any]] = []
    for i in range(n):
        kind = i % 10
        if kind == 0:
            records.append({"email": f"d{i + 1}@example.com", "first_name": "Existing"})
        elif kind == 1:
            # The record 257 before (a kind-4 row), in an earlier chunk of 250.
            records.append({"email": f"NEW{i - 257}@example.com", "first_name": "Repeat"})
        elif kind == 2:
            records.append({"email": f"bad-{i}", "first_name": "Bad"})
        elif kind == 3:
            records.append({"email": f"p{i}@example.com", "phone": "12"})
        else:
            records.append({"email": f"new{i}@example.com", "first_name": "New", "tags": ["t"]})
    return records


@pytest.mark.parametrize(
    "body",
    [
        {
            "action": "update",
            "target": {"filter": {"company": {"eq": "Acme"}}},
            "changes": {"set": {"job_title": "X"}},
        },
        {"action": "add_tags", "target": {"all": True}, "tags": ["vip"]},
        {"action": "delete", "target": {"filter": {"tags": {"contains": "vip"}}}},
        {"action": "update", "target": {"all": True}, "changes": {"set": {"phone": "12"}}},
    ],
    ids=["update", "add_tags", "delete", "invalid_update"],
)
def test_a_dry_run_counts_like_the_real_run_and_changes_nothing(conn: Conn, body: dict[str, Any]) -> None:
    account = new_account(conn)
    _seed(conn, account, ROWS)
    before = checksum(conn, account)

    dry = run_to_end(conn, account, {**body, "dry_run": True}, chunk_size=CHUNK_SIZE)

    assert dry.dry_run and dry.status in ("completed", "completed_with_errors", "failed")
    assert checksum(conn, account) == before
    dry_codes = codes(conn, dry.id)

    real = run_to_end(conn, account, body, chunk_size=CHUNK_SIZE)

    assert not real.dry_run and _summary(real) == _summary(dry) and counts_add_up(real)
    assert codes(conn, real.id) == dry_codes
    assert real.succeeded == 0 or checksum(conn, account) != before


@pytest.mark.parametrize("on_duplicate", ["skip", "update"])
def test_a_dry_run_import_reports_duplicates_and_errors_as_the_real_run(
    conn: Conn, on_duplicate: str
) -> None:
    account = new_account(conn)
    _seed(conn, account, 50)
    before = checksum(conn, account)
    body = {"action": "import", "records": _import_records(ROWS // 3), "on_duplicate": on_duplicate}

    dry = run_to_end(conn, account, {**body, "dry_run": True}, chunk_size=CHUNK_SIZE // 4)

    assert checksum(conn, account) == before
    dry_outcomes = outcomes(conn, dry.id)
    real = run_to_end(conn, account, body, chunk_size=CHUNK_SIZE // 4)
    real_outcomes = outcomes(conn, real.id)
    assert _summary(real) == _summary(dry)
    assert real_outcomes.get_column("code").to_list() == dry_outcomes.get_column("code").to_list()
    assert real_outcomes.get_column("message").to_list() == dry_outcomes.get_column("message").to_list()
    existing = "duplicate_email" if on_duplicate == "skip" else "succeeded"
    assert {existing, "duplicate_in_input", "invalid_email", "invalid_phone", "succeeded"} <= set(
        dry_outcomes.get_column("code")
    )


def test_the_preview_shows_before_and_after_of_the_sample(conn: Conn) -> None:
    account = new_account(conn)
    a, b, c = insert_contacts(
        conn,
        account,
        [
            {"email": "a@example.com", "company": "Old", "tags": ["x"]},
            {"email": "b@example.com", "company": "New"},
            {"email": "c@example.com", "company": "Old"},
        ],
    )
    dry = run_to_end(
        conn,
        account,
        {
            "action": "update",
            "target": {"ids": [a, b, c, 999_999_999]},
            "changes": {"set": {"company": "New"}},
            "dry_run": True,
        },
        chunk_size=2,
    )

    items = preview(conn, account_id=account, job_id=dry.id, limit=10).items

    assert [(i.entity_id, i.line, i.outcome, i.code) for i in items] == [
        (a, 1, "succeeded", "succeeded"),
        (b, 2, "skipped", "no_change"),
        (c, 3, "succeeded", "succeeded"),
        (999_999_999, 4, "skipped", "not_found"),
    ]
    assert (items[0].before, items[0].after) == ({"company": "Old"}, {"company": "New"})
    assert (items[1].before, items[1].after) == ({}, {})
    assert [i.entity_id for i in preview(conn, account_id=account, job_id=dry.id, limit=3).items] == [a, b, c]


def test_the_preview_of_an_import_shows_the_new_contact(conn: Conn) -> None:
    account = new_account(conn)
    records = [
        {"email": "Z@Example.com", "first_name": "Zed", "tags": ["b", "a"], "custom_fields": {"k": [1]}}
    ]
    dry = run_to_end(conn, account, {"action": "import", "records": records, "dry_run": True})

    (item,) = preview(conn, account_id=account, job_id=dry.id).items

    assert item.before == {} and item.code == "succeeded" and item.line == 1
    assert item.after["email"] == "Z@Example.com" and item.after["first_name"] == "Zed"
    assert item.after["tags"] == ["a", "b"] and item.after["custom_fields"] == {"k": [1]}
    assert conn.execute("SELECT count(*) FROM contacts WHERE account_id = %s", (account,)).fetchone() == (0,)


def test_promotion_applies_the_dry_runs_snapshot_not_a_fresh_filter(conn: Conn) -> None:
    account = new_account(conn)
    _seed(conn, account, 40)
    body = {"action": "add_tags", "target": {"filter": {"company": {"eq": "Acme"}}}, "tags": ["promo"]}
    dry = run_to_end(conn, account, {**body, "dry_run": True})
    # After the dry run, one more contact matches the filter and one matching contact no longer does.
    conn.execute(
        "UPDATE contacts SET company = 'Acme' WHERE account_id = %s AND email = 'd1@example.com'", (account,)
    )
    conn.execute(
        "UPDATE contacts SET company = 'Gone' WHERE account_id = %s AND email = 'd4@example.com'", (account,)
    )

    real = promote_to_end(conn, account, dry.id)

    assert real.source_id == dry.id and not real.dry_run and real.action == "add_tags"
    assert _summary(real) == _summary(dry) == (10, 10, 0, 0)
    tagged = {
        email
        for (email,) in conn.execute(
            "SELECT email FROM contacts WHERE account_id = %s AND 'promo' = ANY(tags)", (account,)
        )
    }
    assert "d4@example.com" in tagged and "d1@example.com" not in tagged and len(tagged) == 10


def test_only_a_completed_dry_run_can_be_promoted(conn: Conn) -> None:
    account = new_account(conn)
    (a,) = insert_contacts(conn, account, [{"email": "p@example.com"}])
    real = run_to_end(conn, account, {"action": "delete", "target": {"ids": [a]}})
    with pytest.raises(ConflictError, match="not a dry run"):
        promote_dry_run(conn, account_id=account, created_by=None, job_id=real.id)
    queued, _ = submit(conn, account, {"action": "delete", "target": {"ids": [a]}, "dry_run": True})
    with pytest.raises(ConflictError, match="has not completed"):
        promote_dry_run(conn, account_id=account, created_by=None, job_id=queued)
    with pytest.raises(ConflictError, match="not a dry run"):
        preview(conn, account_id=account, job_id=real.id)
