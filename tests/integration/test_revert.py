"""Revert against real PostgreSQL: every action's before-images written back, contacts changed since left
alone (`changed_since`), reverts of reverts, and what may not be reverted."""

from __future__ import annotations

import os
import threading

import psycopg
import pytest

from crm_bulk.errors import ConflictError
from crm_bulk.jobs.control import cancel_job
from crm_bulk.jobs.derived import purge_before_images, revert_job
from crm_bulk.jobs.lifecycle import start_planned_jobs
from crm_bulk.postgres import Conn
from tests.integration.apply_support import (
    apply_on_own_connection,
    codes,
    counts_add_up,
    insert_contacts,
    new_account,
    outcomes,
    submit,
    wait_for_a_lock_waiter,
)
from tests.integration.derived_support import RETENTION_DAYS, checksum, revert_to_end, run_to_end

pytestmark = pytest.mark.postgres
# CI size; CRM_BULK_REVERT_ROWS=1000000 runs the same test at scale.
ROWS = int(os.environ.get("CRM_BULK_REVERT_ROWS", "2500"))
CHUNK_SIZE = 1000


def _seed(conn: Conn, account: int, n: int) -> None:
    conn.execute(
        "INSERT INTO contacts (account_id, email, email_normalized, first_name, company, phone, phone_e164,"
        " tags, custom_fields)"
        " SELECT %(a)s, 'P' || g || '@Example.com', 'p' || g || '@example.com', 'First ' || g,"
        " CASE WHEN g %% 3 = 0 THEN NULL ELSE 'Co ' || (g %% 7) END, NULL, NULL,"
        " CASE WHEN g %% 2 = 0 THEN ARRAY['a', 'vip'] ELSE ARRAY['b'] END COLLATE \"C\","
        " jsonb_build_object('plan', CASE WHEN g %% 5 = 0 THEN 'gold' ELSE 'free' END, 'n', g)"
        " FROM generate_series(1, %(n)s) AS g",
        {"a": account, "n": n},
    )


def test_update_then_revert_restores_every_contact_exactly(conn: Conn) -> None:
    account = new_account(conn)
    _seed(conn, account, ROWS)
    before = checksum(conn, account)
    job = run_to_end(
        conn,
        account,
        {
            "action": "update",
            "target": {"all": True},
            "changes": {
                "set": {"company": "Acme Inc", "phone": "+1 415 555 0100", "first_name": "Same"},
                "unset": ["job_title"],
                "custom_fields": {"plan": "platinum"},
                "remove_custom_fields": ["n"],
            },
        },
        chunk_size=CHUNK_SIZE,
    )
    assert job.status == "completed" and job.succeeded == ROWS
    assert checksum(conn, account) != before

    revert = revert_to_end(conn, account, job.id)

    assert revert.action == "revert" and revert.source_id == job.id and revert.status == "completed"
    assert (revert.total, revert.succeeded, revert.skipped, revert.failed) == (ROWS, ROWS, 0, 0)
    assert checksum(conn, account) == before


def test_a_contact_changed_in_between_keeps_its_value_and_is_changed_since(conn: Conn) -> None:
    account = new_account(conn)
    a, b, c = insert_contacts(
        conn,
        account,
        [
            {"email": "a@example.com", "company": "Old"},
            {"email": "b@example.com", "company": "Old"},
            {"email": "c@example.com", "company": "Old", "first_name": "Cy"},
        ],
    )
    job = run_to_end(
        conn,
        account,
        {"action": "update", "target": {"ids": [a, b, c]}, "changes": {"set": {"company": "New"}}},
    )
    # b is edited by someone else after the job; c is only rewritten with the same values (still a write).
    conn.execute("UPDATE contacts SET company = 'Edited' WHERE id = %s", (b,))
    conn.execute("UPDATE contacts SET first_name = first_name WHERE id = %s", (c,))

    revert = revert_to_end(conn, account, job.id)

    assert codes(conn, revert.id) == ["succeeded", "changed_since", "changed_since"]
    assert (revert.succeeded, revert.skipped, revert.failed) == (1, 2, 0)
    companies = dict(conn.execute("SELECT id, company FROM contacts WHERE id = ANY(%s)", ([a, b, c],)))
    assert companies == {a: "Old", b: "Edited", c: "New"}


@pytest.mark.parametrize(
    "body",
    [
        {"action": "add_tags", "target": {"all": True}, "tags": ["new", "vip"]},
        {"action": "remove_tags", "target": {"all": True}, "tags": ["a"]},
        {"action": "delete", "target": {"filter": {"tags": {"contains": "b"}}}},
    ],
    ids=["add_tags", "remove_tags", "delete"],
)
def test_revert_of_tags_and_of_a_delete_restores_them(conn: Conn, body: dict[str, object]) -> None:
    account = new_account(conn)
    _seed(conn, account, 300)
    before = checksum(conn, account)
    job = run_to_end(conn, account, body, chunk_size=100)
    assert job.succeeded > 0 and checksum(conn, account) != before

    revert = revert_to_end(conn, account, job.id)

    assert (revert.total, revert.succeeded, revert.skipped) == (job.succeeded, job.succeeded, 0)
    assert counts_add_up(revert)
    assert checksum(conn, account) == before


def test_reverting_an_older_job_after_a_newer_one_skips_the_rows_both_wrote(conn: Conn) -> None:
    """The newer revert is a write of its own, so to the older job those contacts changed since."""
    account = new_account(conn)
    a, b = insert_contacts(conn, account, [{"email": "a@example.com"}, {"email": "b@example.com"}])
    older = run_to_end(conn, account, {"action": "add_tags", "target": {"ids": [a, b]}, "tags": ["t1"]})
    newer = run_to_end(conn, account, {"action": "add_tags", "target": {"ids": [a]}, "tags": ["t2"]})
    revert_to_end(conn, account, newer.id)

    revert = revert_to_end(conn, account, older.id)

    assert codes(conn, revert.id) == ["changed_since", "succeeded"]
    tags = dict(conn.execute("SELECT id, tags FROM contacts WHERE id = ANY(%s)", ([a, b],)))
    assert tags == {a: ["t1"], b: []}


def test_revert_of_an_import_removes_what_it_created_and_restores_what_it_updated(conn: Conn) -> None:
    account = new_account(conn)
    insert_contacts(
        conn,
        account,
        [
            {"email": "old1@example.com", "first_name": "Old", "tags": ["x"]},
            {"email": "old2@example.com", "first_name": "Keep"},
        ],
    )
    before = checksum(conn, account, live_only=True)
    records = [
        {"email": "old1@example.com", "first_name": "New", "tags": ["y"], "custom_fields": {"k": 1}},
        {"email": "old2@example.com", "first_name": "Keep"},
        {"email": "fresh@example.com", "first_name": "Fresh"},
        {"email": "FRESH@example.com", "first_name": "Again"},
        {"email": "bad"},
    ]
    job = run_to_end(conn, account, {"action": "import", "records": records, "on_duplicate": "update"})
    assert codes(conn, job.id) == [
        "succeeded",
        "no_change",
        "succeeded",
        "duplicate_in_input",
        "invalid_email",
    ]

    revert = revert_to_end(conn, account, job.id)

    assert (revert.total, revert.succeeded, revert.skipped) == (2, 2, 0)
    assert checksum(conn, account, live_only=True) == before
    live = conn.execute(
        "SELECT email FROM contacts WHERE account_id = %s AND deleted_at IS NULL ORDER BY email", (account,)
    ).fetchall()
    assert live == [("old1@example.com",), ("old2@example.com",)]


def test_a_revert_can_be_reverted(conn: Conn) -> None:
    account = new_account(conn)
    _seed(conn, account, 50)
    job = run_to_end(conn, account, {"action": "delete", "target": {"filter": {"tags": {"contains": "vip"}}}})
    after_delete = checksum(conn, account)
    revert = revert_to_end(conn, account, job.id)
    assert revert.succeeded == 25

    again = revert_to_end(conn, account, revert.id)

    assert again.source_id == revert.id and again.succeeded == 25
    # deleted_at is written back too: the contacts are deleted again as of the first job.
    assert checksum(conn, account) == after_delete


def test_restoring_an_email_another_contact_took_since_is_duplicate_email(conn: Conn) -> None:
    account = new_account(conn)
    (a,) = insert_contacts(conn, account, [{"email": "taken@example.com"}])
    job = run_to_end(conn, account, {"action": "delete", "target": {"ids": [a]}})
    insert_contacts(conn, account, [{"email": "taken@example.com"}])

    revert = revert_to_end(conn, account, job.id)

    assert codes(conn, revert.id) == ["duplicate_email"]
    assert conn.execute("SELECT deleted_at IS NOT NULL FROM contacts WHERE id = %s", (a,)).fetchone() == (
        True,
    )


def test_only_ended_real_jobs_within_retention_can_be_reverted(conn: Conn) -> None:
    account = new_account(conn)
    (a,) = insert_contacts(conn, account, [{"email": "r@example.com"}])
    queued, _ = submit(conn, account, {"action": "delete", "target": {"ids": [a]}})
    with pytest.raises(ConflictError, match="has not ended"):
        revert_job(conn, account_id=account, created_by=None, job_id=queued, retention_days=RETENTION_DAYS)

    dry = run_to_end(conn, account, {"action": "delete", "target": {"ids": [a]}, "dry_run": True})
    with pytest.raises(ConflictError, match="dry run"):
        revert_job(conn, account_id=account, created_by=None, job_id=dry.id, retention_days=RETENTION_DAYS)

    conn.execute("UPDATE bulk_actions SET status = 'failed' WHERE id = %s", (queued,))
    done = run_to_end(conn, account, {"action": "delete", "target": {"ids": [a]}})
    conn.execute("UPDATE bulk_actions SET finished_at = now() - interval '31 days' WHERE id = %s", (done.id,))
    with pytest.raises(ConflictError, match="30 days"):
        revert_job(conn, account_id=account, created_by=None, job_id=done.id, retention_days=RETENTION_DAYS)


def test_a_cancelled_revert_logs_its_contacts_as_cancelled(conn: Conn) -> None:
    account = new_account(conn)
    ids = insert_contacts(conn, account, [{"email": f"k{i}@example.com"} for i in range(3)])
    job = run_to_end(conn, account, {"action": "add_tags", "target": {"ids": ids}, "tags": ["k"]})
    revert = revert_job(
        conn, account_id=account, created_by=None, job_id=job.id, retention_days=RETENTION_DAYS
    )

    cancelled = cancel_job(conn, account, revert.id)

    assert (cancelled.status, cancelled.cancelled) == ("cancelled", 3)
    logged = outcomes(conn, revert.id)
    assert logged.get_column("entity_id").to_list() == ids
    assert set(logged.get_column("code")) == {"cancelled"}


def test_images_of_jobs_ended_past_the_retention_are_purged(conn: Conn) -> None:
    account = new_account(conn)
    ids = insert_contacts(conn, account, [{"email": f"g{i}@example.com"} for i in range(4)])
    old = run_to_end(conn, account, {"action": "add_tags", "target": {"ids": ids[:2]}, "tags": ["g"]})
    recent = run_to_end(conn, account, {"action": "add_tags", "target": {"ids": ids[2:]}, "tags": ["g"]})
    conn.execute("UPDATE bulk_actions SET finished_at = now() - interval '31 days' WHERE id = %s", (old.id,))
    conn.execute(
        "UPDATE bulk_action_chunk_images SET created_at = now() - interval '31 days' WHERE job_id = ANY(%s)",
        ([old.id, recent.id],),
    )

    assert purge_before_images(conn, retention_days=RETENTION_DAYS) >= 1

    kept = conn.execute(
        "SELECT job_id FROM bulk_action_chunk_images WHERE job_id = ANY(%s)", ([old.id, recent.id],)
    ).fetchall()
    assert kept == [(recent.id,)]


def test_a_write_committed_while_the_revert_waits_on_the_row_wins(conn: Conn, database_url: str) -> None:
    """The version check is re-made on the row version the revert's update finally locks."""
    account = new_account(conn)
    a, b = insert_contacts(conn, account, [{"email": "w1@example.com"}, {"email": "w2@example.com"}])
    job = run_to_end(
        conn, account, {"action": "update", "target": {"ids": [a, b]}, "changes": {"set": {"company": "J"}}}
    )
    revert = revert_job(
        conn, account_id=account, created_by=None, job_id=job.id, retention_days=RETENTION_DAYS
    )
    start_planned_jobs(conn)
    with psycopg.connect(database_url) as writer:
        writer.execute("UPDATE contacts SET company = 'Racing' WHERE id = %s", (a,))
        applied: list[str] = []
        racing = threading.Thread(
            target=lambda: applied.append(apply_on_own_connection(database_url, revert.id, 0))
        )
        racing.start()
        wait_for_a_lock_waiter(conn)
        writer.commit()
    racing.join(timeout=30)

    assert applied == ["applied"]
    assert codes(conn, revert.id) == ["changed_since", "succeeded"]
    companies = dict(conn.execute("SELECT id, company FROM contacts WHERE id = ANY(%s)", ([a, b],)))
    assert companies == {a: "Racing", b: None}
