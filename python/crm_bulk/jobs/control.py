"""Changing a job's course from outside: cancelling it."""

from __future__ import annotations

import logging
from uuid import UUID

from crm_bulk.entitylog.events import record_event
from crm_bulk.errors import ConflictError, NotFoundError
from crm_bulk.jobs.repository import Job, get_job
from crm_bulk.jobs.webhook_events import announce_job_event
from crm_bulk.ledger import cancel_open_chunks
from crm_bulk.postgres import Conn
from crm_bulk.sqlfiles import query

log = logging.getLogger(__name__)


def cancel_job(conn: Conn, account_id: int, job_id: UUID | str) -> Job:
    """Cancel the account's job: it stops being released, and what was not applied is marked `cancelled`.

    Two transactions, so the job row is never held while waiting for chunk rows (workers lock chunk, then
    job): first the status flips to `cancelled` with its event (the dispatcher and planner stop at once),
    then the open chunks are cancelled, waiting for any chunk being applied right now, which keeps its result.
    Chunks a concurrent planner writes later are cancelled by the scheduler. Call it outside a transaction.

    Raises `NotFoundError` for unknown or other accounts' jobs and `ConflictError` when the job already ended.
    """
    job = get_job(conn, account_id, job_id)
    with conn.transaction():
        flipped = conn.execute(
            query("postgres", "lifecycle", "cancel_job_status"), {"job_id": job.id, "account_id": account_id}
        ).fetchone()
        if flipped is None:
            row = conn.execute(
                query("postgres", "lifecycle", "job_status"), {"job_id": job.id, "account_id": account_id}
            ).fetchone()
            if row is None:
                raise NotFoundError(f"bulk action {job_id} not found")
            raise ConflictError(f"bulk action {job.id} has already ended ({row[0]})")
        record_event(
            conn, job_id=job.id, account_id=account_id, event="cancelled", detail=f"was {job.status}"
        )
        announce_job_event(conn, account_id=account_id, job_id=job.id, event="job.cancelled")
    cancelled = cancel_open_chunks(conn, job.id)
    log.info(
        "job %s cancelled: %d chunks (%d entities) not applied", job.id, cancelled.chunks, cancelled.entities
    )
    return get_job(conn, account_id, job.id)
