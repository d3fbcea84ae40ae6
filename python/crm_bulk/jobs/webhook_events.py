"""Completion webhooks of a job's start and end: each written to the webhook outbox in the transaction of
the change, with the job as `GET /bulk-actions/{id}` shows it at that moment."""

from __future__ import annotations

from uuid import UUID

from crm_bulk.jobs.repository import get_job
from crm_bulk.postgres import Conn
from crm_bulk.webhooks.outbox import enqueue_job_event, has_subscribers


def announce_job_event(conn: Conn, *, account_id: int, job_id: UUID, event: str) -> None:
    """Queue `event` (`job.started`, `job.<terminal status>`) for the account's subscribed endpoints; call it
    inside the transaction that made the change."""
    if not has_subscribers(conn, account_id=account_id, event=event):
        return
    job = get_job(conn, account_id, job_id)
    enqueue_job_event(conn, account_id=account_id, job_id=job_id, event=event, job=job)
