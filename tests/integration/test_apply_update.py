"""The `update` action against real PostgreSQL: every outcome code, and only the targets change."""

from __future__ import annotations

import threading

import numpy as np
import polars as pl
import psycopg
import pytest

from crm_bulk import kernels
from crm_bulk.apply.engine import apply_chunk
from crm_bulk.ledger.payload import encode_ids
from tests.integration.apply_support import (
    Conn,
    apply_on_own_connection,
    codes,
    contact,
    counts_add_up,
    insert_contacts,
    new_account,
    outcomes,
    run_job,
    submit,
    wait_for_a_lock_waiter,
)

pytestmark = pytest.mark.postgres
# The phone kernel's own reason for "12" (which of its codes it picks is the kernel's business).
PHONE_REASON = kernels.normalize_phones(pl.Series(["12"]))[1][0]


def _update(ids: list[int], changes: dict[str, object]) -> dict[str, object]:
    return {"action": "update", "target": {"ids": ids}, "changes": changes}


def test_set_unset_and_custom_fields_change_the_targets(conn: Conn) -> None:
    account = new_account(conn)
    a, b = insert_contacts(
        conn,
        account,
        [
            {
                "email": "a@example.com",
                "company": "Old",
                "phone": "x",
                "custom_fields": {"plan": "free", "legacy": 1},
            },
            {"email": "b@example.com", "company": "Old", "custom_fields": {"keep": True}},
        ],
    )
    job = run_job(
        conn,
        account,
        _update(
            [a, b],
            {
                "set": {"company": "Acme Inc", "phone": "+1 415 555 0100"},
                "unset": ["job_title"],
                "custom_fields": {"plan": "gold"},
                "remove_custom_fields": ["legacy"],
            },
        ),
    )
    assert (job.total, job.succeeded, job.failed, job.skipped) == (2, 2, 0, 0)
    first, second = contact(conn, a), contact(conn, b)
    assert (first["company"], first["phone"], first["phone_e164"]) == (
        "Acme Inc",
        "+1 415 555 0100",
        "+14155550100",
    )
    assert first["custom_fields"] == {"plan": "gold"}
    assert second["custom_fields"] == {"keep": True, "plan": "gold"}
    log = outcomes(conn, job.id)
    assert log.get_column("changed_fields").to_list()[0] == ["phone", "company", "custom_fields"]
    assert log.get_column("email").to_list() == ["a@example.com", "b@example.com"]


def test_identical_values_are_no_change_and_the_row_is_not_rewritten(conn: Conn) -> None:
    account = new_account(conn)
    (same,) = insert_contacts(
        conn, account, [{"email": "s@example.com", "company": "Acme", "custom_fields": {"a": 1}}]
    )
    before = contact(conn, same)
    job = run_job(conn, account, _update([same], {"set": {"company": "Acme"}, "custom_fields": {"a": 1}}))
    assert codes(conn, job.id) == ["no_change"]
    after = contact(conn, same)
    assert after["row_version"] == before["row_version"]
    assert after["updated_at"] == before["updated_at"]


def test_unknown_deleted_and_foreign_ids_are_not_found_and_untouched(conn: Conn) -> None:
    account, other = new_account(conn), new_account(conn)
    live, gone = insert_contacts(conn, account, [{"email": "l@example.com"}, {"email": "g@example.com"}])
    conn.execute("UPDATE contacts SET deleted_at = now() WHERE id = %s", (gone,))
    (foreign,) = insert_contacts(conn, other, [{"email": "f@example.com", "company": "Theirs"}])
    job = run_job(conn, account, _update([live, gone, foreign, 10**12], {"set": {"company": "Mine"}}))
    assert codes(conn, job.id) == ["succeeded", "not_found", "not_found", "not_found"]
    assert contact(conn, foreign)["company"] == "Theirs"
    assert contact(conn, gone)["company"] is None
    assert counts_add_up(job)


def test_an_email_another_contact_holds_is_duplicate_email_and_the_chunk_goes_on(conn: Conn) -> None:
    account = new_account(conn)
    holder, mover, bystander = insert_contacts(
        conn,
        account,
        [{"email": "taken@example.com"}, {"email": "m@example.com"}, {"email": "x@example.com"}],
    )
    job = run_job(conn, account, _update([mover, bystander], {"set": {"email": "Taken@Example.com"}}))
    assert codes(conn, job.id) == ["duplicate_email", "duplicate_email"]
    assert contact(conn, mover)["email"] == "m@example.com"
    assert contact(conn, holder)["email"] == "taken@example.com"


def test_one_new_email_for_many_contacts_goes_to_the_lowest_id(conn: Conn) -> None:
    account = new_account(conn)
    first, second = insert_contacts(
        conn, account, [{"email": "one@example.com"}, {"email": "two@example.com"}]
    )
    job = run_job(conn, account, _update([second, first], {"set": {"email": " Fresh@Example.com"}}))
    log = outcomes(conn, job.id)
    assert dict(zip(log.get_column("entity_id"), log.get_column("code"), strict=True)) == {
        first: "succeeded",
        second: "duplicate_email",
    }
    updated = contact(conn, first)
    assert (updated["email"], updated["email_normalized"]) == (" Fresh@Example.com", "fresh@example.com")


@pytest.mark.parametrize(
    ("changes", "code", "message"),
    [
        ({"set": {"email": "not-an-email"}}, "invalid_email", "missing_at"),
        ({"set": {"phone": "12"}}, "invalid_phone", PHONE_REASON),
        ({"set": {"company": "x" * 201}}, "too_long", "company"),
        (
            {"custom_fields": {"a": {"b": {"c": {"d": {"e": {"f": 1}}}}}}},
            "invalid_field",
            "custom_fields: too_deep",
        ),
    ],
)
def test_invalid_values_fail_every_entity(
    conn: Conn, changes: dict[str, object], code: str, message: str
) -> None:
    account = new_account(conn)
    ids = insert_contacts(conn, account, [{"email": "v1@example.com"}, {"email": "v2@example.com"}])
    before = [contact(conn, i)["row_version"] for i in ids]
    job = run_job(conn, account, _update(ids, changes))
    log = outcomes(conn, job.id)
    assert log.get_column("code").to_list() == [code, code]
    assert log.get_column("outcome").to_list() == ["failed", "failed"]
    assert log.get_column("message").to_list() == [message, message]
    assert [contact(conn, i)["row_version"] for i in ids] == before
    assert (job.failed, job.total) == (2, 2)


def test_repeated_ids_are_one_entity_each_and_duplicates_in_input(conn: Conn) -> None:
    account = new_account(conn)
    (only,) = insert_contacts(conn, account, [{"email": "r@example.com"}])
    job_id, chunks = submit(conn, account, _update([only], {"set": {"job_title": "CTO"}}))
    assert chunks == 1
    # Ids are de-duplicated when planned; the engine still guards a payload that repeats one.
    conn.execute(
        "UPDATE bulk_action_chunks SET payload = %s, entity_count = 2 WHERE job_id = %s",
        (encode_ids(np.array([only, only], dtype=np.int64)), job_id),
    )
    result = apply_chunk(conn, job_id, 0)
    assert (result.succeeded, result.skipped) == (1, 1)
    assert codes(conn, job_id) == ["succeeded", "duplicate_in_input"]


def test_filter_target_updates_only_matching_live_contacts_of_the_account(conn: Conn) -> None:
    account, other = new_account(conn), new_account(conn)
    match, miss = insert_contacts(
        conn,
        account,
        [{"email": "m1@example.com", "company": "Acme"}, {"email": "m2@example.com", "company": "Beta"}],
    )
    (theirs,) = insert_contacts(conn, other, [{"email": "t@example.com", "company": "Acme"}])
    job = run_job(
        conn,
        account,
        {
            "action": "update",
            "target": {"filter": {"company": {"eq": "Acme"}}},
            "changes": {"set": {"last_name": "X"}},
        },
    )
    assert (job.total, job.succeeded) == (1, 1)
    assert contact(conn, match)["last_name"] == "X"
    assert contact(conn, miss)["last_name"] is None
    assert contact(conn, theirs)["last_name"] is None


def test_two_chunks_racing_for_one_email_never_abort(conn: Conn, database_url: str) -> None:
    account = new_account(conn)
    first, second = insert_contacts(conn, account, [{"email": "r1@example.com"}, {"email": "r2@example.com"}])
    job_id, chunks = submit(
        conn, account, _update([first, second], {"set": {"email": "race@example.com"}}), chunk_size=1
    )
    assert chunks == 2
    results = []
    with psycopg.connect(database_url) as holder:
        # Chunk 0 takes the email inside a transaction that stays open, so chunk 1's statement meets the
        # uncommitted row in the unique index and has to wait for it.
        with holder.transaction():
            apply_chunk(holder, job_id, 0)
            racer = threading.Thread(
                target=lambda: results.append(apply_on_own_connection(database_url, job_id, 1))
            )
            racer.start()
            wait_for_a_lock_waiter(conn)
        racer.join(timeout=60)
    assert results == ["applied"]
    assert codes(conn, job_id) == ["succeeded", "duplicate_email"]
    assert contact(conn, second)["email"] == "r2@example.com"
