"""Job lifecycle steps the scheduler runs: due scheduled jobs join the queue, queued jobs are planned and
started, jobs whose chunks are all terminal are finished, and cancelled jobs lose chunks planned after the
cancel. Every step locks with SKIP LOCKED (or needs no lock), so several schedulers can run side by side,
and records its lifecycle events in the transaction of the change.

A job turns terminal only once its outcomes are queryable: `finish_jobs` waits until the shipper has moved
every chunk's outbox to ClickHouse, so stats, logs and errors read the moment a job reads `completed`,
`completed_with_errors` or `failed` are complete. The price is honest: while ClickHouse is down, a job whose
chunks are all applied stays `running` (progress 1.0) until the shipper catches up; applying never waits.
The alternative, reads that merge the outboxes not yet shipped from PostgreSQL, would need a second
implementation of every read (aggregates, keyset pages, CSV) over the Arrow outboxes. A cancel answers
`cancelled` at once, as its contract says; the outcomes of the chunks it cancelled (outboxes written by the
ledger in the cancel's transaction) and of a chunk still being applied reach the log as the shipper ships
them, shortly after. An outbox the shipper cannot decode (it logs an error and leaves it in place) holds its
job `running`: that job's log cannot be complete.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from uuid import UUID

from crm_bulk.entitylog.events import record_event
from crm_bulk.errors import PermanentError
from crm_bulk.jobs.webhook_events import announce_job_event
from crm_bulk.ledger import cancel_open_chunks
from crm_bulk.ledger import discard_abandoned_uploads as _discard_abandoned
from crm_bulk.planner import plan_job
from crm_bulk.postgres import Conn, classify
from crm_bulk.sqlfiles import query

log = logging.getLogger(__name__)

BATCH = 100


@dataclass(frozen=True)
class FinishedJob:
    """A job the finaliser ended, with its final counts."""

    job_id: UUID
    account_id: int
    status: str
    total: int
    succeeded: int
    failed: int
    skipped: int
    cancelled: int


def promote_due_jobs(conn: Conn) -> int:
    """Scheduled jobs whose `scheduled_for` has passed become `queued`; return how many."""
    with conn.transaction():
        rows = conn.execute(query("postgres", "lifecycle", "promote_due_jobs"), {"limit": BATCH}).fetchall()
    for job_id, _account_id in rows:
        log.info("scheduled job %s is due", job_id)
    return len(rows)


def plan_next_job(conn: Conn, *, chunk_size: int) -> UUID | None:
    """Plan and start the oldest queued unplanned job no other scheduler holds; None when there is none.

    A job whose plan fails permanently (a filter that cannot run, say) ends `failed` with the reason.
    Transient failures propagate and roll back: the job is planned on a later pass.
    """
    with conn.transaction():
        row = conn.execute(query("postgres", "lifecycle", "lock_job_to_plan")).fetchone()
        if row is None:
            return None
        job_id: UUID = row[0]
        try:
            with conn.transaction():
                chunks = plan_job(conn, job_id, chunk_size=chunk_size)
        except Exception as exc:
            error = classify(exc)
            if not isinstance(error, PermanentError):
                if error is exc:
                    raise
                raise error from exc
            _fail_job(conn, job_id, f"planning failed: {error}")
            return job_id
        _start(conn, job_id, planned_detail=f"{chunks} chunks")
    return job_id


def start_planned_jobs(conn: Conn) -> int:
    """Start queued jobs that are planned already (finished streamed imports); return how many."""
    with conn.transaction():
        rows = conn.execute(query("postgres", "lifecycle", "lock_planned_jobs"), {"limit": BATCH}).fetchall()
        for (job_id,) in rows:
            _start(conn, job_id, planned_detail="chunks written by the upload")
    return len(rows)


def _start(conn: Conn, job_id: UUID, *, planned_detail: str) -> None:
    started = conn.execute(query("postgres", "lifecycle", "start_job"), {"job_id": job_id}).fetchone()
    if started is None:
        return
    account_id, total, chunk_count = started
    record_event(
        conn,
        job_id=job_id,
        account_id=account_id,
        event="planned",
        detail=f"{total} entities in {chunk_count} chunks ({planned_detail})",
    )
    record_event(conn, job_id=job_id, account_id=account_id, event="started")
    announce_job_event(conn, account_id=account_id, job_id=job_id, event="job.started")
    log.info("job %s started: %d entities in %d chunks", job_id, total, chunk_count)


def _fail_job(conn: Conn, job_id: UUID, reason: str) -> None:
    row = conn.execute(
        query("postgres", "lifecycle", "fail_job"), {"job_id": job_id, "error": reason}
    ).fetchone()
    if row is not None:
        record_event(conn, job_id=job_id, account_id=row[0], event="finished", detail=f"failed: {reason}")
        announce_job_event(conn, account_id=row[0], job_id=job_id, event="job.failed")
        log.error("job %s failed: %s", job_id, reason)


def finish_jobs(conn: Conn) -> list[FinishedJob]:
    """End running jobs whose chunks are all terminal and whose outboxes are all shipped (so their log is
    complete), status from the counts; record `finished` events."""
    with conn.transaction():
        rows = conn.execute(query("postgres", "lifecycle", "finish_jobs")).fetchall()
        finished = [FinishedJob(*row) for row in rows]
        for job in finished:
            record_event(
                conn,
                job_id=job.job_id,
                account_id=job.account_id,
                event="finished",
                detail=(
                    f"{job.status}: {job.succeeded} succeeded, {job.failed} failed, {job.skipped} skipped "
                    f"of {job.total}"
                ),
            )
            announce_job_event(conn, account_id=job.account_id, job_id=job.job_id, event=f"job.{job.status}")
    for job in finished:
        log.info(
            "job %s %s: %d succeeded, %d failed, %d skipped of %d",
            job.job_id,
            job.status,
            job.succeeded,
            job.failed,
            job.skipped,
            job.total,
        )
    return finished


def sweep_cancelled_jobs(conn: Conn) -> int:
    """Cancel still-open chunks of cancelled jobs (planned after the cancel); return chunks cancelled."""
    with conn.transaction():
        jobs = conn.execute(query("postgres", "lifecycle", "cancelled_jobs_with_open_chunks")).fetchall()
    total = 0
    for job_id, _account_id in jobs:
        total += cancel_open_chunks(conn, job_id).chunks
    return total


# An upload refreshes its job's `upload_seen_at` at least every minute while its body arrives
# (`crm_bulk.api.import_session.HEARTBEAT_SECONDS`); ten minutes of silence means its API process is gone.
ABANDONED_UPLOAD_SECONDS = 600.0


def discard_abandoned_uploads(conn: Conn, *, older_than_seconds: float = ABANDONED_UPLOAD_SECONDS) -> int:
    """Delete `uploading` jobs (with their chunks) whose API process stopped giving signs of life; they were
    never visible nor runnable. Return how many."""
    with conn.transaction():
        gone = _discard_abandoned(conn, older_than_seconds=older_than_seconds, limit=BATCH)
    for job_id, account_id in gone:
        log.warning("upload %s of account %s abandoned mid-body: discarded", job_id, account_id)
    return len(gone)
