"""Helpers for the tests of jobs derived from jobs (dry runs, promotion, revert): run a job to its end with
the pipeline's own functions, derive a job from it, and checksum an account's contacts."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from crm_bulk.apply.engine import apply_chunk
from crm_bulk.jobs.derived import promote_dry_run, revert_job
from crm_bulk.jobs.lifecycle import finish_jobs, start_planned_jobs
from crm_bulk.jobs.repository import Job, get_job
from crm_bulk.postgres import Conn
from tests.integration.apply_support import submit
from tests.integration.pipeline_support import stamp_outboxes_shipped

RETENTION_DAYS = 30
# Every column but updated_at (a revert is a write, so it moves updated_at on) and the row version.
_CHECKSUM = """
SELECT count(*), md5(coalesce(string_agg(row_to_json(t)::text, '|' ORDER BY t.id), ''))
FROM (
    SELECT id, email, email_normalized, first_name, last_name, phone, phone_e164, company, job_title, tags,
           custom_fields, created_at, deleted_at, last_import_job
    FROM contacts
    WHERE account_id = %(account_id)s AND (NOT %(live_only)s OR deleted_at IS NULL)
) AS t
"""


def checksum(conn: Conn, account_id: int, *, live_only: bool = False) -> tuple[int, str]:
    """(rows, md5) over the account's contacts (`live_only`: the live ones), every column but updated_at."""
    row = conn.execute(_CHECKSUM, {"account_id": account_id, "live_only": live_only}).fetchone()
    assert row is not None
    return int(row[0]), str(row[1])


def run_planned(conn: Conn, account_id: int, job_id: UUID) -> Job:
    """Start a planned job, apply its chunks, and end it as the scheduler would (its outboxes stamped
    shipped: these tests read outboxes, not ClickHouse)."""
    start_planned_jobs(conn)
    chunks = conn.execute(
        "SELECT chunk_no FROM bulk_action_chunks WHERE job_id = %s ORDER BY chunk_no", (job_id,)
    ).fetchall()
    for (chunk_no,) in chunks:
        apply_chunk(conn, job_id, chunk_no, worker="test")
    stamp_outboxes_shipped(conn, job_id)
    finish_jobs(conn)
    return get_job(conn, account_id, job_id)


def run_to_end(conn: Conn, account_id: int, body: dict[str, Any], *, chunk_size: int = 1000) -> Job:
    """Create, plan, apply and finish a job from a request body."""
    job_id, _ = submit(conn, account_id, body, chunk_size=chunk_size)
    return run_planned(conn, account_id, job_id)


def revert_to_end(conn: Conn, account_id: int, job_id: UUID) -> Job:
    """Revert an ended job and run the revert to its end."""
    revert = revert_job(
        conn, account_id=account_id, created_by=None, job_id=job_id, retention_days=RETENTION_DAYS
    )
    return run_planned(conn, account_id, revert.id)


def promote_to_end(conn: Conn, account_id: int, job_id: UUID) -> Job:
    """Promote a finished dry run and run the real job to its end."""
    real = promote_dry_run(conn, account_id=account_id, created_by=None, job_id=job_id)
    return run_planned(conn, account_id, real.id)
