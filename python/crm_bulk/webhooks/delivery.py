"""One webhook attempt: claim due deliveries, send each signed to the address its check approved, and
record the answer, with the next attempt after the retry schedule's wait.

A delivery succeeds on a 2xx answer only. Anything else (another status, a redirect, which is never
followed, a timeout, a refused connection, a target that now resolves to an internal address) is a failed
attempt, tried again after the schedule's next wait until the schedule is spent; 410 Gone disables the
endpoint, as the Standard Webhooks specification asks. A claim is a lease: a deliverer that dies mid-attempt
leaves the row to be claimed again once the lease lapses, so delivery is at least once, and the late
answer of a lapsed claim is dropped.
"""

from __future__ import annotations

import logging
import random
import ssl
import time
import uuid
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import httpx

from crm_bulk.errors import PermanentError
from crm_bulk.postgres import Conn
from crm_bulk.settings import Settings
from crm_bulk.sqlfiles import query
from crm_bulk.webhooks.sealing import SecretBox
from crm_bulk.webhooks.signing import signed_headers
from crm_bulk.webhooks.targets import AddressPolicy, parse_target

log = logging.getLogger(__name__)

USER_AGENT = "crm-bulk-webhooks/1"
# A lease outlives one attempt (DNS, connect, the answer) by this margin before another deliverer may retry.
LEASE_MARGIN_SECONDS = 60.0
# A Retry-After longer than this is not waited for: the schedule's own wait applies.
MAX_RETRY_AFTER_SECONDS = 3600.0
JITTER = 0.1
_MAX_ERROR = 500


@dataclass(frozen=True)
class ClaimedDelivery:
    """A delivery claimed for one attempt; `attempt` counts from 1 since its last redelivery."""

    id: int
    endpoint_id: UUID
    event_id: str
    payload: str
    attempt: int
    url: str
    secret_sealed: bytes
    claim: UUID


@dataclass(frozen=True)
class AttemptResult:
    """How one attempt went: `ok` for a 2xx; `gone` for 410; `retry_after` from the receiver."""

    ok: bool
    status_code: int | None = None
    error: str | None = None
    gone: bool = False
    retry_after: float | None = None


@dataclass(frozen=True)
class RetrySchedule:
    """Waits after each failed attempt (seconds); past the last the delivery has failed for good."""

    delays: tuple[float, ...]
    jitter: float = JITTER

    @classmethod
    def from_settings(cls, settings: Settings) -> RetrySchedule:
        """`webhook_retry_schedule`."""
        return cls(settings.webhook_retry_delays())

    def wait_after(self, attempt: int, *, retry_after: float | None = None) -> float | None:
        """Seconds until the next attempt after `attempt` (1-based) failed, or None when it was the last.
        A receiver's Retry-After, when longer than the wait and at most an hour, is honoured."""
        if attempt > len(self.delays):
            return None
        wait = self.delays[attempt - 1] * random.uniform(
            1 - self.jitter, 1 + self.jitter
        )  # jitter, not a secret
        if retry_after is not None and wait < retry_after <= MAX_RETRY_AFTER_SECONDS:
            wait = retry_after
        return wait


def claim_due(conn: Conn, *, limit: int, lease_seconds: float) -> list[ClaimedDelivery]:
    """Claim up to `limit` due deliveries of enabled endpoints (SKIP LOCKED), each counted as attempted."""
    claim = uuid.uuid4()
    rows = conn.execute(
        query("postgres", "webhooks", "claim_due_deliveries"),
        {"limit": limit, "lease_seconds": lease_seconds, "claim": claim},
    ).fetchall()
    return [
        ClaimedDelivery(
            id=row[0],
            endpoint_id=row[1],
            event_id=row[2],
            payload=row[3],
            attempt=row[4],
            url=row[5],
            secret_sealed=bytes(row[6]),
            claim=claim,
        )
        for row in rows
    ]


def record_attempt(
    conn: Conn, delivery: ClaimedDelivery, result: AttemptResult, schedule: RetrySchedule
) -> str:
    """Store how the attempt went; return the delivery's status now (`succeeded`, `pending`, `failed`)."""
    if result.ok:
        conn.execute(
            query("postgres", "webhooks", "record_delivered"),
            {"id": delivery.id, "claim": delivery.claim, "status_code": result.status_code},
        )
        log.info(
            "webhook %s delivered (delivery %s, attempt %d)", delivery.event_id, delivery.id, delivery.attempt
        )
        return "succeeded"
    wait = None if result.gone else schedule.wait_after(delivery.attempt, retry_after=result.retry_after)
    with conn.transaction():
        if result.gone:
            conn.execute(query("postgres", "webhooks", "disable_endpoint"), {"id": delivery.endpoint_id})
            log.warning("webhook endpoint %s answered 410 Gone: disabled", delivery.endpoint_id)
        conn.execute(
            query("postgres", "webhooks", "record_failed_attempt"),
            {
                "id": delivery.id,
                "claim": delivery.claim,
                "status_code": result.status_code,
                "error": (result.error or "")[:_MAX_ERROR],
                "retry_in_seconds": wait,
            },
        )
    status = "failed" if wait is None else "pending"
    log.warning(
        "webhook %s attempt %d failed (delivery %s): %s; %s",
        delivery.event_id,
        delivery.attempt,
        delivery.id,
        result.error,
        "giving up" if wait is None else f"next attempt in {wait:.1f} s",
    )
    return status


class WebhookSender:
    """Sends one claimed delivery: checks the target's resolved addresses, connects to the checked one
    (TLS still verified against the URL's host, with the system's CAs unless `verify` says otherwise),
    signs, and reports the answer. Thread-safe."""

    def __init__(
        self,
        *,
        policy: AddressPolicy,
        box: SecretBox,
        timeout_seconds: float,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self._policy = policy
        self._box = box
        self.timeout_seconds = timeout_seconds
        # No pooled connections: a connection is bound to the address checked for one attempt (and a TLS
        # session to one host name), so none may serve another. No proxies from the environment either.
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout_seconds),
            limits=httpx.Limits(max_keepalive_connections=0),
            follow_redirects=False,
            trust_env=False,
            verify=verify,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> WebhookSender:
        """The sender of resolved `settings`."""
        return cls(
            policy=AddressPolicy.from_settings(settings),
            box=SecretBox.from_settings(settings),
            timeout_seconds=settings.webhook_timeout_seconds,
        )

    def close(self) -> None:
        """Release the HTTP client."""
        self._client.close()

    def attempt(self, delivery: ClaimedDelivery) -> AttemptResult:
        """One attempt at `delivery`; never raises for what the receiver or the network does."""
        try:
            target = parse_target(delivery.url)
            address = self._policy.check(target)[0]
            secret = self._box.open(delivery.secret_sealed, endpoint_id=delivery.endpoint_id)
        except PermanentError as exc:
            return AttemptResult(ok=False, error=str(exc))
        body = delivery.payload.encode()
        headers = signed_headers(secret, msg_id=delivery.event_id, timestamp=int(time.time()), body=body)
        headers |= {"content-type": "application/json", "host": target.host_header, "user-agent": USER_AGENT}
        extensions: dict[str, Any] = {}
        if target.scheme == "https":
            extensions["sni_hostname"] = target.host
        request = self._client.build_request(
            "POST", target.url_for(address), content=body, headers=headers, extensions=extensions
        )
        try:
            response = self._client.send(request, stream=True)
        except httpx.TimeoutException:
            return AttemptResult(ok=False, error=f"timed out after {self.timeout_seconds:g} s ({address})")
        except httpx.HTTPError as exc:
            return AttemptResult(ok=False, error=f"{type(exc).__name__} ({address}): {exc}")
        # The answer's body is not read: only its status matters, and a large one must not cost memory.
        response.close()
        return _result_of(response)


def _result_of(response: httpx.Response) -> AttemptResult:
    status = response.status_code
    if 200 <= status < 300:
        return AttemptResult(ok=True, status_code=status)
    if 300 <= status < 400:
        error = f"HTTP {status}: redirects are not followed; register the final URL"
    else:
        error = f"HTTP {status}"
    return AttemptResult(
        ok=False,
        status_code=status,
        error=error,
        gone=status == 410,
        retry_after=_retry_after(response.headers.get("retry-after")),
    )


def _retry_after(value: str | None) -> float | None:
    if value is None or not value.strip().isdigit():
        return None
    return float(value.strip())


def prune_delivery_log(conn: Conn, *, older_than_days: int, batch: int = 10_000) -> int:
    """Delete finished deliveries older than `older_than_days`, in batches; return how many."""
    deleted = 0
    while True:
        cursor = conn.execute(
            query("postgres", "webhooks", "prune_deliveries"), {"days": older_than_days, "limit": batch}
        )
        deleted += cursor.rowcount
        if cursor.rowcount < batch:
            return deleted


def lease_seconds(sender: WebhookSender) -> float:
    """How long a claim holds: one attempt's timeout plus a margin for resolving and recording."""
    return sender.timeout_seconds + LEASE_MARGIN_SECONDS
