"""Exactly-once effect: the ledger makes re-applies no-ops, concurrent applies serialise, counts add up."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pyarrow as pa
import pytest

from crm_bulk.apply.engine import ChunkResult, apply_chunk
from crm_bulk.entitylog.outbox import OUTCOME_SCHEMA
from crm_bulk.jobs.repository import get_job
from tests.integration.apply_support import (
    Conn,
    contact,
    counts_add_up,
    insert_contacts,
    new_account,
    outcomes,
    run_job,
    submit,
)

pytestmark = pytest.mark.postgres


def _snapshot(conn: Conn, account: int) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT id, xmin::text, email, company, tags, custom_fields, deleted_at FROM contacts "
        "WHERE account_id = %s ORDER BY id",
        (account,),
    ).fetchall()


def _ledger(conn: Conn, job_id: object) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT chunk_no, state, succeeded, failed, skipped, outcomes, applied_at FROM bulk_action_chunks "
        "WHERE job_id = %s ORDER BY chunk_no",
        (job_id,),
    ).fetchall()


def test_reapplying_a_done_chunk_changes_nothing(conn: Conn) -> None:
    account = new_account(conn)
    ids = insert_contacts(conn, account, [{"email": f"r{i}@example.com"} for i in range(5)])
    job = run_job(
        conn, account, {"action": "add_tags", "target": {"ids": ids}, "tags": ["vip"]}, chunk_size=2
    )
    contacts, ledger = _snapshot(conn, account), _ledger(conn, job.id)
    again = [apply_chunk(conn, job.id, n, attempt=2) for n in range(3)]
    assert {r.state for r in again} == {"already_done"}
    assert _snapshot(conn, account) == contacts
    assert _ledger(conn, job.id) == ledger
    after = get_job(conn, account, job.id)
    assert (
        (after.succeeded, after.failed, after.skipped)
        == (job.succeeded, job.failed, job.skipped)
        == (5, 0, 0)
    )


def test_one_chunk_applied_from_two_connections_at_once_applies_once(conn: Conn, database_url: str) -> None:
    account = new_account(conn)
    ids = insert_contacts(
        conn, account, [{"email": f"c{i}@example.com", "company": "Old"} for i in range(50)]
    )
    job_id, chunks = submit(
        conn, account, {"action": "update", "target": {"ids": ids}, "changes": {"set": {"company": "New"}}}
    )
    assert chunks == 1
    results: list[ChunkResult] = []
    errors: list[BaseException] = []

    def apply_from_own_connection() -> None:
        try:
            with psycopg.connect(database_url, autocommit=True) as own:
                results.append(apply_chunk(own, job_id, 0, worker=threading.current_thread().name))
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    # Hold the ledger row so both appliers are waiting on it before either can start.
    with psycopg.connect(database_url) as gate:
        gate.execute("SELECT 1 FROM bulk_action_chunks WHERE job_id = %s FOR UPDATE", (job_id,))
        threads = [threading.Thread(target=apply_from_own_connection, name=f"w{i}") for i in range(2)]
        for thread in threads:
            thread.start()
        _wait_for_lock_waiters(conn, 2)
        gate.rollback()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert sorted(r.state for r in results) == ["already_done", "applied"]
    job = get_job(conn, account, job_id)
    assert (job.succeeded, job.skipped, job.failed) == (50, 0, 0)
    assert outcomes(conn, job_id).height == 50
    versions = conn.execute(
        "SELECT count(DISTINCT xmin::text) FROM contacts WHERE account_id = %s", (account,)
    ).fetchone()
    assert versions == (1,)  # every row rewritten by the one applying transaction


def _wait_for_lock_waiters(conn: Conn, count: int) -> None:
    for _ in range(400):
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE wait_event_type = 'Lock' AND datname = current_database()"
        ).fetchone()
        if row is not None and row[0] >= count:
            return
        threading.Event().wait(0.05)
    raise AssertionError("the appliers never queued on the ledger row")


def test_a_cancelled_chunk_is_left_alone(conn: Conn) -> None:
    account = new_account(conn)
    ids = insert_contacts(conn, account, [{"email": "k@example.com"}])
    job_id, _ = submit(conn, account, {"action": "delete", "target": {"ids": ids}})
    conn.execute("UPDATE bulk_action_chunks SET state = 'cancelled' WHERE job_id = %s", (job_id,))
    result = apply_chunk(conn, job_id, 0)
    assert result.state == "already_done"
    assert contact(conn, ids[0])["deleted_at"] is None
    assert get_job(conn, account, job_id).skipped == 0


@pytest.mark.parametrize(
    "body",
    [
        {
            "action": "update",
            "target": {"all": True},
            "changes": {"set": {"company": "Z"}, "custom_fields": {"x": 1}},
        },
        {"action": "delete", "target": {"all": True}},
        {"action": "add_tags", "target": {"all": True}, "tags": ["t2", "t1"]},
        {"action": "remove_tags", "target": {"all": True}, "tags": ["t0"]},
        {
            "action": "import",
            "records": [{"email": "a0@example.com", "first_name": "Q"}, {"email": "new@example.com"}],
            "on_duplicate": "update",
        },
    ],
)
def test_every_action_keeps_counts_and_leaves_other_accounts_alone(
    conn: Conn, body: dict[str, object]
) -> None:
    account, other = new_account(conn), new_account(conn)
    seed = [{"email": f"a{i}@example.com", "tags": ["t0"], "company": "A"} for i in range(7)]
    insert_contacts(conn, account, seed)
    insert_contacts(conn, other, seed)
    theirs = _snapshot(conn, other)
    job = run_job(conn, account, body, chunk_size=3)
    assert counts_add_up(job)
    assert job.succeeded > 0
    log = outcomes(conn, job.id)
    assert log.height == job.total
    per_chunk = conn.execute(
        "SELECT sum(succeeded), sum(failed), sum(skipped), count(*) FILTER (WHERE state = 'done') "
        "FROM bulk_action_chunks WHERE job_id = %s",
        (job.id,),
    ).fetchone()
    chunks = conn.execute(
        "SELECT chunk_count, chunks_done FROM bulk_actions WHERE id = %s", (job.id,)
    ).fetchone()
    assert chunks is not None and chunks[0] == chunks[1]
    assert per_chunk == (job.succeeded, job.failed, job.skipped, chunks[0])
    assert _snapshot(conn, other) == theirs


def test_outbox_holds_the_shared_schema(conn: Conn) -> None:
    account = new_account(conn)
    ids = insert_contacts(conn, account, [{"email": "o@example.com"}])
    job = run_job(conn, account, {"action": "add_tags", "target": {"ids": [*ids, 10**12]}, "tags": ["x"]})
    (blob,) = (
        conn.execute("SELECT outcomes FROM bulk_action_chunks WHERE job_id = %s", (job.id,)).fetchone() or ()
    )
    table = pa.ipc.open_stream(pa.py_buffer(bytes(blob))).read_all()
    assert table.schema.equals(OUTCOME_SCHEMA)
    assert table.to_pydict() == {
        "row_no": [0, 1],
        "entity_id": [ids[0], 10**12],
        "email": ["o@example.com", None],
        "outcome": ["succeeded", "skipped"],
        "code": ["succeeded", "not_found"],
        "message": [None, None],
        "changed_fields": [["tags"], None],
    }
    ledger = conn.execute(
        "SELECT state, attempts, worker, applied_at IS NOT NULL, duration_ms >= 0 FROM bulk_action_chunks "
        "WHERE job_id = %s",
        (job.id,),
    ).fetchone()
    assert ledger == ("done", 1, "test", True, True)
