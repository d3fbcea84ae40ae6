"""The webhook outbox: one delivery row per (event, subscribed endpoint), written in the transaction that
starts or ends the job, so an event is announced if and only if its change committed. The rows are also the
delivery log the API pages through, and what a redelivery sends again.

The `webhook-id` of an event is derived from the job and the event (`event_id_for`), never drawn at random:
writing an event again (a retried transaction, a second scheduler) finds the rows already there, so an
event reaches an endpoint under one id only, however often it is attempted.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

import msgspec

from crm_bulk.cursors import CursorCodec
from crm_bulk.errors import ConflictError, NotFoundError, ValidationError
from crm_bulk.postgres import Conn
from crm_bulk.sqlfiles import query
from crm_bulk.webhooks.endpoints import EVENTS, endpoint_uuid, get_endpoint

log = logging.getLogger(__name__)

# Fixed forever: event ids already sent are derived from it.
_EVENT_ID_NAMESPACE = UUID("5b0c7f0e-3c1e-4e57-9a3c-2f8e7c0d9b41")
MAX_PAGE = 200
DELIVERY_CURSOR: CursorCodec[tuple[Annotated[int, msgspec.Meta(ge=1)]]] = CursorCodec(
    "webhook-deliveries", [Annotated[int, msgspec.Meta(ge=1)]]
)


class Delivery(msgspec.Struct, kw_only=True):
    """One event's delivery to one endpoint, as the delivery log shows it."""

    id: int
    event_id: str
    event: str
    job_id: UUID
    status: str
    attempts: int
    last_status_code: int | None
    last_error: str | None
    last_attempt_at: datetime | None
    next_attempt_at: datetime | None
    created_at: datetime
    delivered_at: datetime | None


class DeliveryPage(msgspec.Struct, kw_only=True):
    """One page of an endpoint's deliveries, newest first; `next_cursor` is None on the last page."""

    items: list[Delivery]
    next_cursor: str | None


class _Body(msgspec.Struct):
    type: str
    timestamp: datetime
    data: msgspec.Raw


def event_id_for(job_id: UUID, event: str) -> str:
    """The `webhook-id` of `event` for `job_id`: the same on every endpoint, attempt and redelivery."""
    return "msg_" + uuid.uuid5(_EVENT_ID_NAMESPACE, f"{job_id}/{event}").hex


def has_subscribers(conn: Conn, *, account_id: int, event: str) -> bool:
    """Whether an enabled endpoint of the account subscribes to `event`."""
    row = conn.execute(
        query("postgres", "webhooks", "has_subscribers"), {"account_id": account_id, "event": event}
    ).fetchone()
    return bool(row and row[0])


def enqueue_job_event(conn: Conn, *, account_id: int, job_id: UUID, event: str, job: object) -> int:
    """Write `event` with `job` (its API view) for every endpoint of the account subscribed to it, in the
    caller's transaction; return how many deliveries were added (0 when none subscribes, or when the event
    was written before)."""
    if event not in EVENTS:
        raise ValueError(f"unknown webhook event {event!r}")
    body = _Body(type=event, timestamp=datetime.now(UTC), data=msgspec.Raw(msgspec.json.encode(job)))
    rows = conn.execute(
        query("postgres", "webhooks", "enqueue_event"),
        {
            "account_id": account_id,
            "job_id": job_id,
            "event": event,
            "event_id": event_id_for(job_id, event),
            "payload": msgspec.json.encode(body).decode(),
        },
    ).fetchall()
    if rows:
        log.info("job %s: %s queued for %d webhook endpoint(s)", job_id, event, len(rows))
    return len(rows)


def list_deliveries(
    conn: Conn, account_id: int, endpoint_id: UUID | str, *, limit: int = 50, cursor: str | None = None
) -> DeliveryPage:
    """The endpoint's deliveries, newest first; `NotFoundError` for another account's endpoint."""
    if not 1 <= limit <= MAX_PAGE:
        raise ValidationError(f"limit is 1-{MAX_PAGE}", field="limit", code="invalid_value")
    endpoint = get_endpoint(conn, account_id, endpoint_id)
    scope = f"{account_id}/{endpoint.id}"
    before_id = DELIVERY_CURSOR.decode(cursor, scope)[0] if cursor else None
    rows = conn.execute(
        query("postgres", "webhooks", "list_deliveries"),
        {"account_id": account_id, "endpoint_id": endpoint.id, "before_id": before_id, "limit": limit + 1},
    ).fetchall()
    items = [_delivery(row) for row in rows[:limit]]
    next_cursor = DELIVERY_CURSOR.encode(scope, (items[-1].id,)) if len(rows) > limit else None
    return DeliveryPage(items=items, next_cursor=next_cursor)


def redeliver(conn: Conn, account_id: int, endpoint_id: UUID | str, delivery_id: int) -> Delivery:
    """Send a delivery again at once (the same body and `webhook-id`), its retry schedule started over.
    `NotFoundError` for another account's endpoint or another endpoint's delivery; `ConflictError` while
    the endpoint is disabled."""
    endpoint = get_endpoint(conn, account_id, endpoint_uuid(endpoint_id))
    if not endpoint.enabled:
        raise ConflictError(f"webhook endpoint {endpoint.id} is disabled; enable it first")
    row = conn.execute(
        query("postgres", "webhooks", "redeliver"),
        {"account_id": account_id, "endpoint_id": endpoint.id, "id": delivery_id},
    ).fetchone()
    if row is None:
        raise NotFoundError(f"delivery {delivery_id} of webhook endpoint {endpoint.id} not found")
    log.info("webhook delivery %s to endpoint %s queued again", delivery_id, endpoint.id)
    return _delivery(row)


def _delivery(row: Sequence[Any]) -> Delivery:
    (
        delivery_id,
        event_id,
        event,
        job_id,
        status,
        attempts,
        last_status_code,
        last_error,
        last_attempt_at,
        next_attempt_at,
        created_at,
        delivered_at,
    ) = row
    return Delivery(
        id=delivery_id,
        event_id=event_id,
        event=event,
        job_id=job_id,
        status=status,
        attempts=attempts,
        last_status_code=last_status_code,
        last_error=last_error,
        last_attempt_at=last_attempt_at,
        next_attempt_at=next_attempt_at,
        created_at=created_at,
        delivered_at=delivered_at,
    )
