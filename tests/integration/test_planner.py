"""Jobs and planning against real PostgreSQL: job rows, idempotency, snapshots, import slices."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import msgspec
import polars as pl
import psycopg
import pytest

from crm_bulk import kernels
from crm_bulk.actions.specs import BulkActionRequest, decode_request
from crm_bulk.errors import ConflictError, NotFoundError, ValidationError
from crm_bulk.jobs.repository import create_job, get_job, list_jobs
from crm_bulk.ledger.payload import IMPORT_PAYLOAD_SCHEMA, REPEAT_OF, decode_payload
from crm_bulk.planner import append_import_chunk, finish_import, plan_job
from tests.integration.apply_support import Conn, insert_contacts, new_account

pytestmark = pytest.mark.postgres


def _request(body: dict[str, object]) -> BulkActionRequest:
    return decode_request(msgspec.json.encode(body))


def _payload_ids(conn: Conn, job_id: object) -> list[list[int]]:
    rows = conn.execute(
        "SELECT payload, entity_count FROM bulk_action_chunks WHERE job_id = %s ORDER BY chunk_no", (job_id,)
    ).fetchall()
    chunks = [decode_payload(bytes(payload)).get_column("id").to_list() for payload, _ in rows]
    assert [len(c) for c in chunks] == [count for _, count in rows]
    return chunks


def test_jobs_start_queued_or_scheduled_and_unplanned(conn: Conn) -> None:
    account = new_account(conn)
    now_job = create_job(
        conn,
        account_id=account,
        created_by=None,
        request=_request({"action": "delete", "target": {"all": True}}),
    )
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    later_job = create_job(
        conn,
        account_id=account,
        created_by=None,
        request=_request({"action": "delete", "target": {"all": True}, "scheduled_for": later}),
    )
    assert (now_job.status, later_job.status) == ("queued", "scheduled")
    assert later_job.scheduled_for is not None
    planned = conn.execute("SELECT planned, total FROM bulk_actions WHERE id = %s", (now_job.id,)).fetchone()
    assert planned == (False, 0)
    assert (now_job.progress, now_job.eta_seconds) == (0.0, None)


def test_idempotency_key_returns_the_same_job_for_the_same_request(conn: Conn) -> None:
    account = new_account(conn)
    body = {"action": "add_tags", "target": {"ids": [1]}, "tags": ["a"]}
    first = create_job(
        conn, account_id=account, created_by=None, request=_request(body), idempotency_key="k1"
    )
    again = create_job(
        conn, account_id=account, created_by=None, request=_request(body), idempotency_key="k1"
    )
    assert again.id == first.id
    with pytest.raises(ConflictError) as caught:
        create_job(
            conn,
            account_id=account,
            created_by=None,
            request=_request({**body, "tags": ["b"]}),
            idempotency_key="k1",
        )
    assert caught.value.existing_id == str(first.id)
    # Another account may use the same key; a key older than a day names a new job.
    other = create_job(
        conn, account_id=new_account(conn), created_by=None, request=_request(body), idempotency_key="k1"
    )
    assert other.id != first.id
    conn.execute(
        "UPDATE bulk_actions SET created_at = now() - interval '25 hours' WHERE id = %s", (first.id,)
    )
    fresh = create_job(
        conn, account_id=account, created_by=None, request=_request(body), idempotency_key="k1"
    )
    assert fresh.id != first.id


def test_jobs_are_read_and_listed_within_their_account_only(conn: Conn) -> None:
    account, other = new_account(conn), new_account(conn)
    jobs = [
        create_job(
            conn,
            account_id=account,
            created_by=None,
            request=_request({"action": "delete", "target": {"ids": [i + 1]}}),
        )
        for i in range(5)
    ]
    with pytest.raises(NotFoundError):
        get_job(conn, other, jobs[0].id)
    with pytest.raises(NotFoundError):
        get_job(conn, account, "not-a-uuid")
    assert get_job(conn, account, str(jobs[0].id)).id == jobs[0].id
    seen = []
    page = list_jobs(conn, account, limit=2)
    while True:
        seen += [job.id for job in page.items]
        if page.next_cursor is None:
            break
        page = list_jobs(conn, account, limit=2, cursor=page.next_cursor)
    assert seen == [job.id for job in reversed(jobs)]
    assert list_jobs(conn, other).items == []
    assert len(list_jobs(conn, account, status="queued").items) == 5
    assert list_jobs(conn, account, status="running").items == []
    with pytest.raises(ValidationError):
        list_jobs(conn, account, status="bogus")
    with pytest.raises(ValidationError):
        list_jobs(conn, account, cursor="%%%")


def test_ids_target_is_deduplicated_sorted_and_chunked(conn: Conn) -> None:
    account = new_account(conn)
    job = create_job(
        conn,
        account_id=account,
        created_by=None,
        request=_request({"action": "delete", "target": {"ids": [9, 3, 7, 3, 1, 9, 5]}}),
    )
    assert plan_job(conn, job.id, chunk_size=2) == 3
    assert _payload_ids(conn, job.id) == [[1, 3], [5, 7], [9]]
    assert get_job(conn, account, job.id).total == 5


def test_filter_target_snapshots_live_matching_ids_of_the_account_by_keyset_pages(conn: Conn) -> None:
    account, other = new_account(conn), new_account(conn)
    ids = insert_contacts(
        conn,
        account,
        [{"email": f"p{i}@example.com", "company": "Acme" if i % 2 else "Beta"} for i in range(11)],
    )
    insert_contacts(conn, other, [{"email": "x@example.com", "company": "Acme"}])
    conn.execute("UPDATE contacts SET deleted_at = now() WHERE id = %s", (ids[1],))
    job = create_job(
        conn,
        account_id=account,
        created_by=None,
        request=_request({"action": "delete", "target": {"filter": {"company": {"eq": "Acme"}}}}),
    )
    assert plan_job(conn, job.id, chunk_size=2) == 2
    expected = [i for n, i in enumerate(ids) if n % 2 and n != 1]
    assert _payload_ids(conn, job.id) == [expected[:2], expected[2:]]
    everything = create_job(
        conn,
        account_id=account,
        created_by=None,
        request=_request({"action": "delete", "target": {"all": True}}),
    )
    assert plan_job(conn, everything.id, chunk_size=4) == 3
    assert [i for chunk in _payload_ids(conn, everything.id) for i in chunk] == [
        i for i in ids if i != ids[1]
    ]


def test_a_target_matching_nothing_plans_zero_chunks(conn: Conn) -> None:
    account = new_account(conn)
    job = create_job(
        conn,
        account_id=account,
        created_by=None,
        request=_request({"action": "delete", "target": {"filter": {"company": {"eq": "nobody"}}}}),
    )
    assert plan_job(conn, job.id) == 0
    row = conn.execute(
        "SELECT planned, total, chunk_count FROM bulk_actions WHERE id = %s", (job.id,)
    ).fetchone()
    assert row == (True, 0, 0)


def test_planning_twice_or_concurrently_plans_once(conn: Conn, database_url: str) -> None:
    account = new_account(conn)
    insert_contacts(conn, account, [{"email": f"c{i}@example.com"} for i in range(6)])
    job = create_job(
        conn,
        account_id=account,
        created_by=None,
        request=_request({"action": "add_tags", "target": {"all": True}, "tags": ["t"]}),
    )
    results: list[int] = []

    def plan() -> None:
        with psycopg.connect(database_url, autocommit=True) as own:
            results.append(plan_job(own, job.id, chunk_size=4))

    threads = [threading.Thread(target=plan) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert results == [2, 2, 2]
    assert plan_job(conn, job.id, chunk_size=1) == 2
    rows = conn.execute("SELECT count(*) FROM bulk_action_chunks WHERE job_id = %s", (job.id,)).fetchone()
    assert rows == (2,)


def test_inline_import_records_become_payload_chunks_in_input_order(conn: Conn) -> None:
    account = new_account(conn)
    records = [{"email": f"i{i}@example.com", "tags": ["t"], "custom_fields": {"n": i}} for i in range(5)]
    job = create_job(
        conn, account_id=account, created_by=None, request=_request({"action": "import", "records": records})
    )
    assert plan_job(conn, job.id, chunk_size=2) == 3
    rows = conn.execute(
        "SELECT payload FROM bulk_action_chunks WHERE job_id = %s ORDER BY chunk_no", (job.id,)
    ).fetchall()
    frame = pl.concat([decode_payload(bytes(r[0])) for r in rows])
    assert frame.columns == IMPORT_PAYLOAD_SCHEMA.names
    assert frame.get_column("email").to_list() == [r["email"] for r in records]
    assert frame.get_column("custom_fields").to_list()[4] == '{"n":4}'
    assert get_job(conn, account, job.id).total == 5


def test_streamed_import_appends_slices_until_finished(conn: Conn) -> None:
    account = new_account(conn)
    job = create_job(conn, account_id=account, created_by=None, request=BulkActionRequest(action="import"))
    with pytest.raises(ConflictError):
        plan_job(conn, job.id)
    first = pl.DataFrame({"email": ["a@x.io", "b@x.io", "c@x.io"], "company": ["A", None, "C"]})
    seen = kernels.SeenKeys()
    assert append_import_chunk(conn, job.id, first, seen=seen, chunk_size=2) == 2
    assert (
        append_import_chunk(conn, job.id, pl.DataFrame({"email": ["d@x.io"]}), seen=seen, chunk_size=2) == 1
    )
    assert finish_import(conn, job.id) == 3
    assert finish_import(conn, job.id) == 3
    assert plan_job(conn, job.id) == 3
    with pytest.raises(ConflictError):
        append_import_chunk(conn, job.id, first, seen=seen)
    row = conn.execute(
        "SELECT total, chunk_count, planned FROM bulk_actions WHERE id = %s", (job.id,)
    ).fetchone()
    assert row == (4, 3, True)
    with pytest.raises(ValidationError):
        append_import_chunk(conn, job.id, pl.DataFrame({"email": ["e@x.io"], "fax": ["1"]}), seen=seen)


def test_repeats_are_numbered_across_the_slices_of_an_import(conn: Conn) -> None:
    account = new_account(conn)
    job = create_job(conn, account_id=account, created_by=None, request=BulkActionRequest(action="import"))
    seen = kernels.SeenKeys()
    slices = [["a@x.io", "b@x.io", " A@X.io"], ["b@x.io", "c@x.io", "not an email", "not an email"]]
    for emails in slices:
        append_import_chunk(conn, job.id, pl.DataFrame({"email": emails}), seen=seen, chunk_size=2)
    finish_import(conn, job.id)
    rows = conn.execute(
        "SELECT payload FROM bulk_action_chunks WHERE job_id = %s ORDER BY chunk_no", (job.id,)
    ).fetchall()
    frame = pl.concat([decode_payload(bytes(r[0])) for r in rows])
    # Record numbers count from 1 over the whole import; invalid emails are never repeats.
    assert frame.get_column(REPEAT_OF).to_list() == [None, None, 1, 2, None, None, None]
    assert len(seen) == 3
