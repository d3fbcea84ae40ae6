"""Job lifecycle events: recorded in the caller's Postgres transaction, shipped to ClickHouse `job_events`."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import psycopg

from crm_bulk.sqlfiles import query

EVENTS = frozenset({"planned", "started", "chunk_retried", "dead_lettered", "paced", "cancelled", "finished"})


def record_event(
    conn: psycopg.Connection[Any],
    *,
    job_id: UUID,
    account_id: int,
    event: str,
    chunk_no: int | None = None,
    detail: str = "",
) -> None:
    """Add one event to `job_events_outbox` inside the caller's transaction, so it exists iff that commits."""
    if event not in EVENTS:
        raise ValueError(f"unknown job event {event!r}; expected one of {sorted(EVENTS)}")
    conn.execute(
        query("postgres", "events", "record_event"),
        {"job_id": job_id, "account_id": account_id, "event": event, "chunk_no": chunk_no, "detail": detail},
    )
