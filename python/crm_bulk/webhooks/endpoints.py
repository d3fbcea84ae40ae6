"""An account's webhook endpoints: register (the secret is returned this once), list, change, remove.

Every read and change is scoped by the caller's account: another account's endpoint id is not found.
The URL is checked (`crm_bulk.webhooks.targets`) before anything is stored; a malformed or internal target
and an unknown event are `ValidationError`s (422).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec

from crm_bulk.errors import ConflictError, NotFoundError, ValidationError
from crm_bulk.postgres import Conn
from crm_bulk.sqlfiles import query
from crm_bulk.webhooks.sealing import SecretBox
from crm_bulk.webhooks.signing import new_secret

log = logging.getLogger(__name__)

EVENTS: tuple[str, ...] = (
    "job.started",
    "job.completed",
    "job.completed_with_errors",
    "job.failed",
    "job.cancelled",
)
# Enough for every system an account would notify; a bound keeps one job's end from fanning out unbounded.
MAX_ENDPOINTS_PER_ACCOUNT = 20


class Endpoint(msgspec.Struct, kw_only=True):
    """A webhook endpoint as the API shows it (never with its secret)."""

    id: UUID
    url: str
    description: str
    events: list[str]
    enabled: bool
    created_at: datetime
    updated_at: datetime


def checked_events(events: Sequence[str]) -> list[str]:
    """The events, each once, in the catalogue's order; `ValidationError` for none or an unknown one."""
    unknown = sorted(set(events) - set(EVENTS))
    if unknown:
        raise ValidationError(
            f"unknown event {unknown[0]!r}; events are {', '.join(EVENTS)}",
            field="events",
            code="invalid_value",
        )
    if not events:
        raise ValidationError("subscribe to at least one event", field="events", code="blank")
    return [event for event in EVENTS if event in events]


def create_endpoint(
    conn: Conn, account_id: int, *, url: str, events: Sequence[str], description: str, box: SecretBox
) -> tuple[Endpoint, str]:
    """Store an endpoint whose `url` the caller checked already; return it with its new signing secret."""
    subscribed = checked_events(events)
    endpoint_id = uuid.uuid4()
    secret = new_secret()
    with conn.transaction():
        # The account row lock serialises concurrent registrations, so the bound holds.
        conn.execute(query("postgres", "webhooks", "lock_account"), {"account_id": account_id})
        count = conn.execute(query("postgres", "webhooks", "count_endpoints"), {"account_id": account_id})
        row = count.fetchone()
        if row is not None and int(row[0]) >= MAX_ENDPOINTS_PER_ACCOUNT:
            raise ConflictError(f"an account has at most {MAX_ENDPOINTS_PER_ACCOUNT} webhook endpoints")
        created = conn.execute(
            query("postgres", "webhooks", "insert_endpoint"),
            {
                "id": endpoint_id,
                "account_id": account_id,
                "url": url,
                "description": description,
                "events": subscribed,
                "secret_sealed": box.seal(secret, endpoint_id=endpoint_id),
            },
        ).fetchone()
    assert created is not None
    log.info("account %s registered webhook endpoint %s for %s", account_id, endpoint_id, subscribed)
    return _endpoint(created), secret


def list_endpoints(conn: Conn, account_id: int) -> list[Endpoint]:
    """The account's endpoints, oldest first."""
    rows = conn.execute(query("postgres", "webhooks", "list_endpoints"), {"account_id": account_id})
    return [_endpoint(row) for row in rows.fetchall()]


def get_endpoint(conn: Conn, account_id: int, endpoint_id: UUID | str) -> Endpoint:
    """The account's endpoint; `NotFoundError` for unknown ids and other accounts' alike."""
    row = conn.execute(
        query("postgres", "webhooks", "get_endpoint"),
        {"account_id": account_id, "id": endpoint_uuid(endpoint_id)},
    ).fetchone()
    if row is None:
        raise NotFoundError(f"webhook endpoint {endpoint_id} not found")
    return _endpoint(row)


def update_endpoint(
    conn: Conn,
    account_id: int,
    endpoint_id: UUID | str,
    *,
    url: str | None = None,
    events: Sequence[str] | None = None,
    enabled: bool | None = None,
    description: str | None = None,
) -> Endpoint:
    """Change what is given (a new `url` the caller checked already); the secret stays."""
    row = conn.execute(
        query("postgres", "webhooks", "update_endpoint"),
        {
            "account_id": account_id,
            "id": endpoint_uuid(endpoint_id),
            "url": url,
            "events": None if events is None else checked_events(events),
            "enabled": enabled,
            "description": description,
        },
    ).fetchone()
    if row is None:
        raise NotFoundError(f"webhook endpoint {endpoint_id} not found")
    return _endpoint(row)


def delete_endpoint(conn: Conn, account_id: int, endpoint_id: UUID | str) -> None:
    """Remove the endpoint and its delivery log; pending deliveries to it are dropped."""
    row = conn.execute(
        query("postgres", "webhooks", "delete_endpoint"),
        {"account_id": account_id, "id": endpoint_uuid(endpoint_id)},
    ).fetchone()
    if row is None:
        raise NotFoundError(f"webhook endpoint {endpoint_id} not found")
    log.info("account %s removed webhook endpoint %s", account_id, endpoint_id)


def endpoint_uuid(value: UUID | str) -> UUID:
    """`value` as an endpoint id; a malformed one is simply not found."""
    if isinstance(value, UUID):
        return value
    try:
        return UUID(value)
    except ValueError:
        raise NotFoundError(f"webhook endpoint {value} not found") from None


def _endpoint(row: Sequence[Any]) -> Endpoint:
    endpoint_id, url, description, events, enabled, created_at, updated_at = row
    return Endpoint(
        id=endpoint_id,
        url=url,
        description=description,
        events=list(events),
        enabled=enabled,
        created_at=created_at,
        updated_at=updated_at,
    )
