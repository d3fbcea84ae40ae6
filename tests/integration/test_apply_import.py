"""The `import` action against real PostgreSQL: inserts, merges, every validation and duplicate code."""

from __future__ import annotations

import threading
from uuid import UUID

import polars as pl
import psycopg
import pytest

from crm_bulk import kernels
from crm_bulk.actions.specs import BulkActionRequest
from crm_bulk.apply.engine import apply_chunk
from crm_bulk.ipc import write_ipc
from crm_bulk.jobs.repository import create_job, get_job
from crm_bulk.ledger.payload import IMPORT_SCHEMA, REPEAT_OF, decode_payload
from crm_bulk.planner import append_import_chunk, finish_import
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


def _import(records: list[dict[str, object]], on_duplicate: str = "skip") -> dict[str, object]:
    return {"action": "import", "records": records, "on_duplicate": on_duplicate}


def _by_email(conn: Conn, account: int, email: str) -> dict[str, object]:
    row = conn.execute(
        "SELECT id FROM contacts WHERE account_id = %s AND email_normalized = %s AND deleted_at IS NULL",
        (account, email),
    ).fetchone()
    assert row is not None
    return contact(conn, int(row[0]))


def test_new_contacts_are_inserted_normalised(conn: Conn) -> None:
    account = new_account(conn)
    job = run_job(
        conn,
        account,
        _import(
            [
                {
                    "email": "  Ada@Example.COM ",
                    "first_name": "Ada",
                    "phone": "(415) 555-0100",
                    "tags": ["b", "a", "b"],
                    "custom_fields": {"plan": "pro", "seats": 3},
                },
                {"email": "grace@bücher.example", "company": "Navy", "last_name": ""},
            ]
        ),
    )
    assert (job.total, job.succeeded) == (2, 2)
    ada = _by_email(conn, account, "ada@example.com")
    assert (ada["email"], ada["first_name"], ada["phone_e164"]) == (
        "  Ada@Example.COM ",
        "Ada",
        "+14155550100",
    )
    assert (ada["tags"], ada["custom_fields"]) == (["a", "b"], {"plan": "pro", "seats": 3})
    assert ada["last_import_job"] == job.id
    grace = _by_email(conn, account, "grace@xn--bcher-kva.example")
    assert grace["last_name"] is None  # a blank cell is "not provided"
    log = outcomes(conn, job.id)
    assert log.get_column("entity_id").to_list() == [ada["id"], grace["id"]]
    assert log.get_column("changed_fields").to_list() == [None, None]


@pytest.mark.parametrize(
    ("record", "code", "message"),
    [
        ({"email": "no-at-sign"}, "invalid_email", "missing_at"),
        ({"first_name": "No Email"}, "invalid_email", "empty"),
        ({"email": "p@example.com", "phone": "12"}, "invalid_phone", PHONE_REASON),
        ({"email": "l@example.com", "job_title": "x" * 201}, "too_long", "job_title"),
        ({"email": "t@example.com", "tags": ["y" * 101]}, "too_long", "tags"),
        (
            {"email": "c@example.com", "custom_fields": {"a": {"b": {"c": {"d": {"e": {}}}}}}},
            "invalid_field",
            "custom_fields: too_deep",
        ),
    ],
)
def test_invalid_records_fail_with_their_code(
    conn: Conn, record: dict[str, object], code: str, message: str
) -> None:
    account = new_account(conn)
    job = run_job(conn, account, _import([record, {"email": "fine@example.com"}]))
    log = outcomes(conn, job.id)
    assert log.get_column("code").to_list() == [code, "succeeded"]
    assert log.get_column("message").to_list()[0] == message
    assert log.get_column("entity_id").to_list()[0] is None
    count = conn.execute("SELECT count(*) FROM contacts WHERE account_id = %s", (account,)).fetchone()
    assert count == (1,)
    assert counts_add_up(job) and job.failed == 1


def test_repeats_within_a_chunk_are_duplicate_in_input_pointing_at_the_first(conn: Conn) -> None:
    account = new_account(conn)
    job = run_job(
        conn,
        account,
        _import(
            [
                {"email": "d@example.com", "first_name": "First"},
                {"email": " D@EXAMPLE.com", "first_name": "2nd"},
            ]
        ),
    )
    log = outcomes(conn, job.id)
    assert log.get_column("code").to_list() == ["succeeded", "duplicate_in_input"]
    ids = log.get_column("entity_id").to_list()
    assert ids[0] == ids[1]
    assert log.get_column("message").to_list()[1] == "repeats the email of record 1"
    assert _by_email(conn, account, "d@example.com")["first_name"] == "First"


def test_the_first_record_owns_its_email_even_when_it_fails(conn: Conn) -> None:
    # Which record wins depends on input order only, never on which other fields pass or which chunk
    # commits first: the user fixes record 1 and imports again.
    account = new_account(conn)
    job = run_job(
        conn,
        account,
        _import([{"email": "o@example.com", "phone": "not a phone"}, {"email": "O@example.com"}]),
    )
    log = outcomes(conn, job.id)
    assert log.get_column("code").to_list() == ["invalid_phone", "duplicate_in_input"]
    assert log.get_column("message").to_list()[1] == "repeats the email of record 1"
    assert log.get_column("entity_id").to_list() == [None, None]
    count = conn.execute("SELECT count(*) FROM contacts WHERE account_id = %s", (account,)).fetchone()
    assert count == (0,)
    assert counts_add_up(job)


@pytest.mark.parametrize("on_duplicate", ["skip", "update"])
def test_repeats_across_chunks_of_one_job_are_duplicate_in_input(conn: Conn, on_duplicate: str) -> None:
    account = new_account(conn)
    job = run_job(
        conn,
        account,
        _import(
            [
                {"email": "x@example.com", "first_name": "A"},
                {"email": "y@example.com"},
                {"email": "X@example.com", "first_name": "B"},
            ],
            on_duplicate,
        ),
        chunk_size=2,
    )
    log = outcomes(conn, job.id)
    assert log.get_column("code").to_list() == ["succeeded", "succeeded", "duplicate_in_input"]
    assert log.get_column("message").to_list()[2] == "repeats the email of record 1"
    assert _by_email(conn, account, "x@example.com")["first_name"] == "A"


@pytest.mark.parametrize("on_duplicate", ["skip", "update"])
def test_two_import_chunks_racing_for_one_email_report_duplicate_in_input(
    conn: Conn, database_url: str, on_duplicate: str
) -> None:
    account = new_account(conn)
    body = _import([{"email": "race@example.com"}, {"email": "RACE@example.com"}], on_duplicate)
    job_id, chunks = submit(conn, account, body, chunk_size=1)
    assert chunks == 2
    # Chunks stored by the planner carry the repeat already (`repeat_of`) and never race; ledger rows
    # without that column (written before it existed) still must come out right.
    _forget_repeats(conn, job_id)
    results: list[str] = []
    with psycopg.connect(database_url) as holder:
        # Chunk 0 inserts the email in a transaction that stays open, so chunk 1's insert waits on the
        # uncommitted row and, once it commits, has to look the winner up with a new statement.
        with holder.transaction():
            apply_chunk(holder, job_id, 0)
            racer = threading.Thread(
                target=lambda: results.append(apply_on_own_connection(database_url, job_id, 1))
            )
            racer.start()
            wait_for_a_lock_waiter(conn)
        racer.join(timeout=60)
    assert results == ["applied"]
    assert codes(conn, job_id) == ["succeeded", "duplicate_in_input"]
    assert counts_add_up(get_job(conn, account, job_id))


def _forget_repeats(conn: Conn, job_id: UUID) -> None:
    for chunk_no, payload in conn.execute(
        "SELECT chunk_no, payload FROM bulk_action_chunks WHERE job_id = %s", (job_id,)
    ).fetchall():
        frame = decode_payload(bytes(payload)).drop(REPEAT_OF)
        table = frame.to_arrow().cast(IMPORT_SCHEMA)
        conn.execute(
            "UPDATE bulk_action_chunks SET payload = %s WHERE job_id = %s AND chunk_no = %s",
            (write_ipc(table), job_id, chunk_no),
        )


def test_skip_leaves_existing_contacts_as_duplicate_email(conn: Conn) -> None:
    account = new_account(conn)
    (existing,) = insert_contacts(conn, account, [{"email": "old@example.com", "first_name": "Old"}])
    before = contact(conn, existing)
    job = run_job(conn, account, _import([{"email": "OLD@example.com", "first_name": "New"}]))
    log = outcomes(conn, job.id)
    assert log.get_column("code").to_list() == ["duplicate_email"]
    assert log.get_column("entity_id").to_list() == [existing]
    assert contact(conn, existing)["row_version"] == before["row_version"]


def test_update_merges_provided_fields_and_reports_what_changed(conn: Conn) -> None:
    account = new_account(conn)
    changed, same = insert_contacts(
        conn,
        account,
        [
            {"email": "m@example.com", "first_name": "Old", "company": "Keep", "custom_fields": {"a": 1}},
            {"email": "s@example.com", "first_name": "Same", "tags": ["t"]},
        ],
    )
    untouched = contact(conn, same)
    job = run_job(
        conn,
        account,
        _import(
            [
                {"email": "m@example.com", "first_name": "New", "custom_fields": {"b": 2}},
                {"email": "s@example.com", "first_name": "Same", "tags": ["t"]},
                {"email": "n@example.com"},
            ],
            "update",
        ),
    )
    log = outcomes(conn, job.id)
    assert log.get_column("code").to_list() == ["succeeded", "no_change", "succeeded"]
    assert log.get_column("changed_fields").to_list()[0] == ["first_name", "custom_fields"]
    merged = contact(conn, changed)
    assert (merged["first_name"], merged["company"], merged["custom_fields"]) == (
        "New",
        "Keep",
        {"a": 1, "b": 2},
    )
    assert contact(conn, same)["row_version"] == untouched["row_version"]
    assert (job.succeeded, job.skipped) == (2, 1)


def test_other_accounts_and_deleted_contacts_do_not_count_as_duplicates(conn: Conn) -> None:
    account, other = new_account(conn), new_account(conn)
    (theirs,) = insert_contacts(conn, other, [{"email": "shared@example.com", "first_name": "Theirs"}])
    (gone,) = insert_contacts(conn, account, [{"email": "shared@example.com"}])
    conn.execute("UPDATE contacts SET deleted_at = now() WHERE id = %s", (gone,))
    job = run_job(conn, account, _import([{"email": "shared@example.com", "first_name": "Mine"}], "update"))
    assert codes(conn, job.id) == ["succeeded"]
    assert contact(conn, theirs)["first_name"] == "Theirs"
    assert _by_email(conn, account, "shared@example.com")["id"] not in (gone, theirs)


def test_streamed_import_rejects_nul_characters_per_entity(conn: Conn) -> None:
    account = new_account(conn)
    job = create_job(conn, account_id=account, created_by=None, request=BulkActionRequest(action="import"))
    frame = pl.DataFrame(
        {
            "email": ["a@example.com", "b@example.com", "c@example.com", "d@example.com"],
            "first_name": ["bad\x00name", None, None, None],
            "custom_fields": [None, '{"k": "\\u0000"}', '{"k": "\\\\u0000"}', None],
            "tags": [None, None, None, ["ok", "n\x00l"]],
        }
    )
    assert append_import_chunk(conn, job.id, frame, seen=kernels.SeenKeys()) == 1
    assert finish_import(conn, job.id) == 1
    apply_chunk(conn, job.id, 0)
    log = outcomes(conn, job.id)
    assert log.get_column("code").to_list() == [
        "invalid_field",
        "invalid_field",
        "succeeded",
        "invalid_field",
    ]
    assert log.get_column("message").to_list() == ["first_name", "custom_fields", None, "tags"]
    assert _by_email(conn, account, "c@example.com")["custom_fields"] == {"k": "\\u0000"}
    assert counts_add_up(get_job(conn, account, job.id))
