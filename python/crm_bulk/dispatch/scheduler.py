"""`crm-bulk scheduler`: two loops over the ledger, each with its own connection.

- planning (a thread): due scheduled jobs join the queue; queued jobs are planned (`plan_job`) and started.
  Planning a million-entity job takes seconds, so it never holds up releasing.
- dispatching (the calling thread): fair release of chunks, finishing jobs whose chunks are all terminal,
  cancelling chunks planned after a cancel, and re-publishing chunks released long ago and still open.

Several schedulers may run at once: every step locks with SKIP LOCKED or advisory locks.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from uuid import UUID

import psycopg

from crm_bulk.dispatch.release import release_chunks, release_stale_chunks
from crm_bulk.errors import CrmBulkError
from crm_bulk.jobs.derived import purge_before_images
from crm_bulk.jobs.lifecycle import (
    discard_abandoned_uploads,
    finish_jobs,
    plan_next_job,
    promote_due_jobs,
    start_planned_jobs,
    sweep_cancelled_jobs,
)
from crm_bulk.postgres import OnDemandConnection
from crm_bulk.process_health import Heartbeat, serve_process_health
from crm_bulk.queue import ChunkPublisher, open_publisher, wait_for_queue
from crm_bulk.retry import RetryStopped, on_types, until_stopped
from crm_bulk.settings import Settings

log = logging.getLogger(__name__)

SWEEP_EVERY_SECONDS = 2.0
STALE_CHECK_EVERY_SECONDS = 60.0
# A released chunk still open after this long is published again (its message may be gone).
STALE_AFTER_SECONDS = 900.0
# The dispatch loop ticks every pass and every failed try (backing off at most 10 s); one silent this long is
# stuck, and `/healthz` answers 503.
LOOP_MAX_AGE_SECONDS = 60.0
# A failed pass is tried again after 1 s, doubling to 10 s while failures last.
PASS_RETRY = until_stopped(
    wait_seconds=1.0, max_wait_seconds=10.0, retry_on=on_types(CrmBulkError, psycopg.Error, OSError)
)


@dataclass
class SchedulerCounters:
    """What one scheduler did since it started."""

    promoted: int = 0
    planned: int = 0
    started: int = 0
    released: int = 0
    finished: int = 0
    cancelled_chunks: int = 0
    republished: int = 0
    failures: int = 0


def _guarded(
    name: str,
    step: Callable[[], None],
    *,
    db: OnDemandConnection,
    counters: SchedulerCounters,
    stop_event: threading.Event,
    heartbeat: Heartbeat | None = None,
) -> bool:
    """Run one pass under `PASS_RETRY` (never let the loop die of a backend failure): each failure is
    counted and a broken connection dropped before the next try. False when stopped while backing off.
    `heartbeat` beats on every failure too: a loop waiting out an outage is alive, only not ready."""

    def after_failure(exc: BaseException) -> None:
        counters.failures += 1
        if heartbeat is not None:
            heartbeat.beat()
        if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
            db.close()

    try:
        PASS_RETRY.call(
            step, what=f"scheduler {name} pass", stop=stop_event, on_retry=after_failure, logger=log
        )
    except RetryStopped:
        return False
    return True


def _plan_loop(
    settings: Settings, url: str, stop_event: threading.Event, counters: SchedulerCounters
) -> None:
    db = OnDemandConnection(url)

    def step() -> None:
        conn = db.get()
        counters.promoted += promote_due_jobs(conn)
        counters.started += start_planned_jobs(conn)
        while not stop_event.is_set() and plan_next_job(conn, chunk_size=settings.chunk_size) is not None:
            counters.planned += 1

    try:
        while not stop_event.is_set():
            if not _guarded("planning", step, db=db, counters=counters, stop_event=stop_event):
                break
            stop_event.wait(settings.scheduler_interval_seconds)
    finally:
        db.close()


class _DispatchPass:
    """One dispatch pass (fair release, finishing), with the sweeps that run every few seconds; called
    repeatedly by the dispatch loop."""

    def __init__(
        self,
        settings: Settings,
        db: OnDemandConnection,
        publisher: ChunkPublisher,
        counters: SchedulerCounters,
    ) -> None:
        self._settings = settings
        self._db = db
        self._publisher = publisher
        self._counters = counters
        self._reported: set[UUID] = set()
        self.tick = 0
        self._last_sweep = self._last_stale = time.monotonic()

    def __call__(self) -> None:
        conn = self._db.get()
        self._counters.released += release_chunks(
            conn,
            self._publisher,
            window=self._settings.dispatch_window_chunks,
            rotation=self.tick,
            reported=self._reported,
        ).released
        self._counters.finished += len(finish_jobs(conn))
        now = time.monotonic()
        if now - self._last_sweep >= SWEEP_EVERY_SECONDS:
            self._counters.cancelled_chunks += sweep_cancelled_jobs(conn)
            discard_abandoned_uploads(conn)
            self._last_sweep = now
        if now - self._last_stale >= STALE_CHECK_EVERY_SECONDS:
            self._counters.republished += release_stale_chunks(
                conn, self._publisher, older_than_seconds=STALE_AFTER_SECONDS
            )
            purge_before_images(conn, retention_days=self._settings.before_image_retention_days)
            self._last_stale = now
            if len(self._reported) > 10_000:
                self._reported.clear()


def run_scheduler(settings: Settings, stop_event: threading.Event) -> SchedulerCounters:
    """Run the scheduler of resolved `settings` (`crm_bulk.deployment.running_database`) until `stop_event`
    is set; return what it did."""
    url = settings.postgres_dsn
    counters = SchedulerCounters()
    heartbeat = Heartbeat(max_age_seconds=LOOP_MAX_AGE_SECONDS)
    endpoint = (
        serve_process_health(
            settings, heartbeat, port=settings.scheduler_health_port, name="scheduler endpoint"
        )
        if settings.scheduler_health_port
        else None
    )
    if not wait_for_queue(settings, stop_event):
        if endpoint is not None:
            endpoint.stop()
        return counters
    planner = threading.Thread(
        target=_plan_loop, args=(settings, url, stop_event, counters), name="crm-bulk-planner", daemon=True
    )
    planner.start()
    db = OnDemandConnection(url)
    publisher = open_publisher(settings)
    step = _DispatchPass(settings, db, publisher, counters)
    log.info(
        "scheduler started (queue %s, window %d chunks/job)",
        settings.queue_kind,
        settings.dispatch_window_chunks,
    )
    try:
        while not stop_event.is_set():
            if not _guarded(
                "dispatch", step, db=db, counters=counters, stop_event=stop_event, heartbeat=heartbeat
            ):
                break
            step.tick += 1
            heartbeat.beat()
            stop_event.wait(settings.scheduler_interval_seconds)
    finally:
        planner.join(timeout=30)
        publisher.close()
        db.close()
        if endpoint is not None:
            endpoint.stop()
    log.info("scheduler stopped: %s", counters)
    return counters
