"""`crm-bulk webhooks` (and a thread of `crm-bulk up`): the loop that delivers due webhooks.

Attempts run on a thread pool (`webhook_concurrency` at once), so one slow receiver holds one slot, not the
loop; the calling thread alone talks to PostgreSQL: it claims due deliveries into free slots and records
each answer as it comes. Several deliverers may run side by side: claims are taken with SKIP LOCKED and
leased. It runs apart from the scheduler on purpose: webhook receivers are other people's servers, and a
slow or unreachable one must never hold up releasing chunks or finishing jobs.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

import psycopg

from crm_bulk.errors import CrmBulkError
from crm_bulk.postgres import Conn, OnDemandConnection
from crm_bulk.process_health import Heartbeat, HttpEndpoint, postgres_probe, serve_process_health
from crm_bulk.retry import RetryStopped, describe, on_types, until_stopped
from crm_bulk.settings import Settings
from crm_bulk.webhooks.delivery import (
    AttemptResult,
    ClaimedDelivery,
    RetrySchedule,
    WebhookSender,
    claim_due,
    lease_seconds,
    prune_delivery_log,
    record_attempt,
)

log = logging.getLogger(__name__)

# Finished deliveries past `webhook_log_retention_days` are deleted this often (several deliverers share it).
PRUNE_EVERY_SECONDS = 3600.0
# A failed pass (the database away) is tried again after 1 s, doubling to 10 s while failures last.
# The loop ticks every pass (at most a poll or an attempt's timeout apart) and every retry; one silent this
# long is stuck, and its `/healthz` answers 503.
LOOP_MAX_AGE_SECONDS = 60.0
PASS_RETRY = until_stopped(
    wait_seconds=1.0, max_wait_seconds=10.0, retry_on=on_types(CrmBulkError, psycopg.Error, OSError)
)


@dataclass
class DelivererCounters:
    """What one deliverer did since it started."""

    attempts: int = 0
    delivered: int = 0
    retried: int = 0
    failed: int = 0
    pass_failures: int = 0


class _DeliveryLoop:
    """The deliverer's state between passes: attempts in flight and answers not recorded yet."""

    def __init__(
        self, settings: Settings, sender: WebhookSender, pool: ThreadPoolExecutor, counters: DelivererCounters
    ) -> None:
        self._db = OnDemandConnection(settings.postgres_dsn)
        self._sender = sender
        self._pool = pool
        self._slots = settings.webhook_concurrency
        self._schedule = RetrySchedule.from_settings(settings)
        self._counters = counters
        self._inflight: dict[Future[AttemptResult], ClaimedDelivery] = {}
        self._answered: list[tuple[ClaimedDelivery, AttemptResult]] = []
        self._retention_days = settings.webhook_log_retention_days
        self._next_prune = time.monotonic()

    def step(self) -> int:
        """Record the answers that came in, then fill free slots with due deliveries; return how many were
        claimed. Answers whose recording failed are kept for the next pass."""
        for future in [f for f in self._inflight if f.done()]:
            self._answered.append((self._inflight.pop(future), _answer_of(future)))
        conn = self._db.get()
        while self._answered:
            delivery, result = self._answered[0]
            self._count(record_attempt(conn, delivery, result, self._schedule))
            self._answered.pop(0)
        self._prune_when_due(conn)
        free = self._slots - len(self._inflight)
        if free <= 0:
            return 0
        claimed = claim_due(conn, limit=free, lease_seconds=lease_seconds(self._sender))
        for delivery in claimed:
            self._inflight[self._pool.submit(self._sender.attempt, delivery)] = delivery
        self._counters.attempts += len(claimed)
        return len(claimed)

    def wait(self, stop_event: threading.Event, idle_seconds: float) -> None:
        """Until an attempt ends, or `idle_seconds` when none is in flight (or stopped)."""
        if self._inflight:
            wait(list(self._inflight), timeout=idle_seconds, return_when=FIRST_COMPLETED)
        else:
            stop_event.wait(idle_seconds)

    def drain(self) -> None:
        """Let attempts in flight end and record them once (a lapsed lease covers what is not recorded)."""
        wait(list(self._inflight), timeout=self._sender.timeout_seconds + 5)
        self._slots = 0
        try:
            self.step()
        except (CrmBulkError, psycopg.Error, OSError) as exc:
            log.warning("webhook answers not recorded at stop (they will be sent again): %s", exc)
        finally:
            self._db.close()

    def after_failure(self, exc: BaseException) -> None:
        """A failed pass: counted, and a broken connection dropped."""
        self._counters.pass_failures += 1
        if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
            self._db.close()

    def _prune_when_due(self, conn: Conn) -> None:
        now = time.monotonic()
        if now < self._next_prune:
            return
        pruned = prune_delivery_log(conn, older_than_days=self._retention_days)
        self._next_prune = now + PRUNE_EVERY_SECONDS
        if pruned:
            log.info("webhook delivery log: %d finished deliveries past retention deleted", pruned)

    def _count(self, status: str) -> None:
        if status == "succeeded":
            self._counters.delivered += 1
        elif status == "pending":
            self._counters.retried += 1
        else:
            self._counters.failed += 1


def _serve_probes(settings: Settings, heartbeat: Heartbeat) -> HttpEndpoint | None:
    if not settings.webhooks_health_port:
        return None
    return serve_process_health(
        settings,
        heartbeat,
        port=settings.webhooks_health_port,
        name="webhook deliverer endpoint",
        probe=postgres_probe(settings),
    )


def _answer_of(future: Future[AttemptResult]) -> AttemptResult:
    """The attempt's result; an error the sender did not foresee is a failed attempt, not a dead loop."""
    error = future.exception()
    if error is None:
        return future.result()
    log.error("webhook attempt raised", exc_info=error)
    return AttemptResult(ok=False, error=f"internal error: {describe(error)}")


def run_deliverer(settings: Settings, stop_event: threading.Event) -> DelivererCounters:
    """Deliver due webhooks of resolved `settings` until `stop_event` is set; return what was done."""
    counters = DelivererCounters()
    sender = WebhookSender.from_settings(settings)
    pool = ThreadPoolExecutor(settings.webhook_concurrency, thread_name_prefix="crm-bulk-webhook")
    loop = _DeliveryLoop(settings, sender, pool, counters)
    heartbeat = Heartbeat(max_age_seconds=LOOP_MAX_AGE_SECONDS)
    endpoint = _serve_probes(settings, heartbeat)

    def after_failure(exc: BaseException) -> None:
        heartbeat.beat()  # waiting out an outage: alive, only not ready
        loop.after_failure(exc)

    log.info("webhook deliverer started (%d at once)", settings.webhook_concurrency)
    try:
        while not stop_event.is_set():
            try:
                claimed = PASS_RETRY.call(
                    loop.step,
                    what="webhook delivery pass",
                    stop=stop_event,
                    on_retry=after_failure,
                    logger=log,
                )
            except RetryStopped:
                break
            heartbeat.beat()
            if not claimed:
                loop.wait(stop_event, settings.webhook_poll_seconds)
    finally:
        loop.drain()
        pool.shutdown(wait=True)
        sender.close()
        if endpoint is not None:
            endpoint.stop()
    log.info("webhook deliverer stopped: %s", counters)
    return counters
