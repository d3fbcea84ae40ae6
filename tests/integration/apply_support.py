"""Helpers for the planner and apply-engine tests: accounts, contacts, jobs run chunk by chunk, outboxes."""

from __future__ import annotations

import threading
import uuid
from typing import Any
from uuid import UUID

import msgspec
import polars as pl
import psycopg

from crm_bulk.actions.specs import decode_request
from crm_bulk.apply.engine import apply_chunk
from crm_bulk.apply.staging import IMPORT_STAGE_COLUMNS
from crm_bulk.entitylog.outbox import decode_outcomes
from crm_bulk.jobs.repository import Job, create_job, get_job
from crm_bulk.planner import plan_job
from crm_bulk.postgres import Conn

# The contact columns an import stages (all but the chunk row number).
CONTACT_COLUMNS = tuple(c for c in IMPORT_STAGE_COLUMNS if c != "row_no")


def new_account(conn: Conn) -> int:
    """A fresh account (every test works in its own)."""
    row = conn.execute("INSERT INTO accounts (name) VALUES (%s) RETURNING id", (f"t-{uuid.uuid4().hex[:8]}",))
    found = row.fetchone()
    assert found is not None
    return int(found[0])


def insert_contacts(conn: Conn, account_id: int, contacts: list[dict[str, Any]]) -> list[int]:
    """Insert contacts directly (email_normalized defaults to the lower-cased email); return their ids."""
    ids = []
    for contact in contacts:
        values = {
            "email_normalized": contact["email"].strip().lower(),
            "tags": [],
            "custom_fields": {},
            **contact,
        }
        values["custom_fields"] = psycopg.types.json.Jsonb(values["custom_fields"])
        names = [name for name in CONTACT_COLUMNS if name in values]
        row = conn.execute(
            psycopg.sql.SQL("INSERT INTO contacts (account_id, {}) VALUES (%s, {}) RETURNING id").format(
                psycopg.sql.SQL(", ").join(map(psycopg.sql.Identifier, names)),
                psycopg.sql.SQL(", ").join(psycopg.sql.Placeholder() * len(names)),
            ),
            [account_id, *[values[n] for n in names]],
        ).fetchone()
        assert row is not None
        ids.append(int(row[0]))
    return ids


def submit(conn: Conn, account_id: int, body: dict[str, Any], *, chunk_size: int = 1000) -> tuple[UUID, int]:
    """Create and plan a job from a request body; return (job id, chunk count)."""
    job = create_job(
        conn, account_id=account_id, created_by=None, request=decode_request(msgspec.json.encode(body))
    )
    return job.id, plan_job(conn, job.id, chunk_size=chunk_size)


def run_job(conn: Conn, account_id: int, body: dict[str, Any], *, chunk_size: int = 1000) -> Job:
    """Submit, plan and apply every chunk; return the job as the API would show it."""
    job_id, chunks = submit(conn, account_id, body, chunk_size=chunk_size)
    for chunk_no in range(chunks):
        apply_chunk(conn, job_id, chunk_no, worker="test")
    return get_job(conn, account_id, job_id)


def outcomes(conn: Conn, job_id: UUID) -> pl.DataFrame:
    """Every outbox row of the job, with its chunk number, in input order."""
    frames = [
        decode_outcomes(bytes(blob)).with_columns(chunk_no=pl.lit(chunk_no, dtype=pl.Int32))
        for chunk_no, blob in conn.execute(
            "SELECT chunk_no, outcomes FROM bulk_action_chunks WHERE job_id = %s AND outcomes IS NOT NULL "
            "ORDER BY chunk_no",
            (job_id,),
        )
    ]
    return pl.concat(frames).sort("chunk_no", "row_no")


def codes(conn: Conn, job_id: UUID) -> list[str]:
    """The outcome codes of a job in input order."""
    return outcomes(conn, job_id).get_column("code").to_list()


def contact(conn: Conn, contact_id: int) -> dict[str, Any]:
    """One contact row as a dict (with xmin, to tell whether it was rewritten)."""
    cur = conn.execute(
        "SELECT *, xmin::text::bigint AS row_version FROM contacts WHERE id = %s", (contact_id,)
    )
    row = cur.fetchone()
    assert row is not None and cur.description is not None
    return dict(zip([d.name for d in cur.description], row, strict=True))


def counts_add_up(job: Job) -> bool:
    """The invariant every job keeps: total = succeeded + failed + skipped (+ cancelled)."""
    return job.total == job.succeeded + job.failed + job.skipped + job.cancelled


def apply_on_own_connection(database_url: str, job_id: UUID, chunk_no: int) -> str:
    """Apply one chunk on a connection of its own (a second worker); return the result's state."""
    with psycopg.connect(database_url, autocommit=True) as own:
        return apply_chunk(own, job_id, chunk_no).state


def wait_for_a_lock_waiter(conn: Conn) -> None:
    """Return once some session of this database waits on a lock (the racing chunk met the held row)."""
    for _ in range(400):
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE wait_event_type = 'Lock' AND datname = current_database()"
        ).fetchone()
        if row is not None and row[0] >= 1:
            return
        threading.Event().wait(0.05)
    raise AssertionError("the second chunk never waited on the first")
