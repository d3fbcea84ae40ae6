"""One worker process's loop: consume → pace → `apply_chunk` → commit, with the retry policy around apply.

- A redelivered chunk whose ledger row is final is acknowledged without pacing or applying.
- Every delivery of an open chunk is counted on its ledger row, committed before the apply starts. A chunk
  delivered more than `poison_delivery_cap` times without being applied (it killed its workers: a crash,
  the OOM killer) is a poison chunk: dead-lettered and failed with code `poison`, never applied again, and
  acknowledged, so its partition moves on.
- Transient failures are retried per `RetryPolicy` (each attempt noted on the ledger row with a
  `chunk_retried` event); a chunk that exhausts them, or fails permanently, goes to the dead-letter topic and
  is marked failed with its outcome rows (`crm_bulk.ledger.terminal.fail_chunk`), then acknowledged.
- Losing Postgres is not an attempt: the worker waits for the database before trying (or recording) anything.
- On stop (SIGTERM) the chunk being applied finishes and is committed; a chunk still waiting for its pacing
  budget or a retry is left unacknowledged and goes to another worker.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar
from uuid import UUID

import psycopg

from crm_bulk.apply.engine import ChunkResult
from crm_bulk.errors import CrmBulkError, RetryableError
from crm_bulk.ledger import FINAL_CHUNK_STATES, POISON_CODE, ChunkLookup, is_poison, poison_reason
from crm_bulk.queue.protocol import ChunkConsumer, Delivery
from crm_bulk.retry import RetryPolicy, RetryStopped, on_types, until_stopped
from crm_bulk.worker import metrics
from crm_bulk.worker.ledger_access import WorkerLedger
from crm_bulk.worker.pacing import EntityPacer, PacingInterruptedError

log = logging.getLogger(__name__)
T = TypeVar("T")

LAG_EVERY_SECONDS = 5.0
# A worker-side pacing wait this long is worth a `paced` event on the job.
PACED_EVENT_SECONDS = 1.0
# Losing PostgreSQL or the broker is not the chunk's fault: those calls wait until the backend is back or the
# worker stops, never counting as a chunk attempt.
RECONNECT_RETRY = until_stopped(
    wait_seconds=0.25, max_wait_seconds=5.0, retry_on=on_types(psycopg.OperationalError)
)
DATABASE_CALL_RETRY = RetryPolicy(
    attempts=None, wait_seconds=0.5, retry_on=on_types(psycopg.OperationalError, psycopg.InterfaceError)
)
BROKER_CALL_RETRY = until_stopped(wait_seconds=0.5, max_wait_seconds=5.0, retry_on=on_types(RetryableError))


class WorkerStoppingError(Exception):
    """The worker was told to stop while a delivery was not finished; it stays unacknowledged."""


@dataclass
class WorkerCounters:
    """What one worker did (shown by `repr`)."""

    deliveries: int = 0
    applied: int = 0
    already_done: int = 0
    failed: int = 0
    poisoned: int = 0
    retries: int = 0
    abandoned: int = 0
    commit_failures: int = 0


class ChunkWorker:
    """The consume loop of one process; `stop` ends it after the chunk in hand."""

    def __init__(
        self,
        *,
        name: str,
        ledger: WorkerLedger,
        consumer: ChunkConsumer,
        pacer: EntityPacer,
        policy: RetryPolicy,
        stop: threading.Event,
        max_messages: int = 1,
        poll_timeout: float = 0.5,
        poison_delivery_cap: int = 3,
    ) -> None:
        self.name = name
        self._consumer = consumer
        self._pacer = pacer
        self._policy = policy
        self._stop = stop
        self._max_messages = max_messages
        self._poll_timeout = poll_timeout
        self._ledger = ledger
        self._poison_cap = poison_delivery_cap
        self.counters = WorkerCounters()

    def __repr__(self) -> str:
        return f"ChunkWorker({self.name!r}, {self.counters}, {self._consumer!r})"

    def run(self, *, burst: bool = False, idle_exit_seconds: float = 5.0) -> WorkerCounters:
        """Consume until stopped; with `burst`, also once the queue stayed empty for `idle_exit_seconds`."""
        idle_since = time.monotonic()
        last_lag = 0.0
        try:
            while not self._stop.is_set():
                if time.monotonic() - last_lag >= LAG_EVERY_SECONDS:
                    self._report_lag()
                    last_lag = time.monotonic()
                try:
                    batch = self._consumer.consume(
                        max_messages=self._max_messages, timeout=self._poll_timeout
                    )
                except RetryableError as exc:
                    log.warning("%s: queue unavailable: %s", self.name, exc)
                    self._stop.wait(1.0)
                    continue
                if not batch:
                    if burst and time.monotonic() - idle_since >= idle_exit_seconds:
                        log.info("%s: queue empty, burst run done", self.name)
                        break
                    continue
                self._handle_batch(batch)
                idle_since = time.monotonic()
        finally:
            self._ledger.close()
        log.info("%s stopped: %s", self.name, self.counters)
        return self.counters

    def _handle_batch(self, batch: list[Delivery]) -> None:
        handled: list[Delivery] = []
        try:
            for delivery in batch:
                self.counters.deliveries += 1
                self.handle(delivery)
                handled.append(delivery)
        except WorkerStoppingError as exc:
            abandoned = len(batch) - len(handled)
            self.counters.abandoned += abandoned
            metrics.CHUNKS.labels("abandoned").inc(abandoned)
            log.info("%s: %s; %d deliveries left for redelivery", self.name, exc, abandoned)
        finally:
            self._commit(handled)

    def _commit(self, handled: list[Delivery]) -> None:
        if not handled:
            return
        try:
            self._consumer.commit(handled)
        except RetryableError as exc:
            # Applied already: the redelivery that follows finds the ledger row final and is skipped.
            self.counters.commit_failures += 1
            log.warning(
                "%s: commit of %d deliveries failed, they will be redelivered and skipped: %s",
                self.name,
                len(handled),
                exc,
            )

    def handle(self, delivery: Delivery) -> str:
        """Bring one delivery's chunk to a final ledger state; return `applied`, `already_done` or `failed`.

        Raises `WorkerStoppingError` when told to stop before the chunk is final.
        """
        message = delivery.message
        try:
            job_id = UUID(message.job_id)
        except ValueError:
            return self._give_up(delivery, None, 1, f"message names no job: {message.job_id!r}")
        found = self._with_database(lambda: self._ledger.look_up(job_id, message.chunk_no))
        if found is None:
            return self._give_up(
                delivery, None, 1, f"chunk {message.chunk_no} of job {job_id} is not in the ledger"
            )
        if found.state in FINAL_CHUNK_STATES:
            return self._already_done()
        return self._handle_open(delivery, job_id, found)

    def _handle_open(self, delivery: Delivery, job_id: UUID, found: ChunkLookup) -> str:
        """`handle` of a chunk the ledger has open: count the delivery, then apply it (or fail it: poison)."""
        deliveries = self._start_delivery(delivery, job_id, found)
        if deliveries is None:
            return self._already_done()
        if is_poison(deliveries, cap=self._poison_cap):
            self.counters.poisoned += 1
            reason = poison_reason(deliveries, cap=self._poison_cap)
            return self._give_up(delivery, job_id, deliveries - 1, reason, code=POISON_CODE)
        result = self._apply_with_retries(delivery, job_id)
        if result is None:
            return "failed"
        if result.state == "already_done":
            return self._already_done()
        self.counters.applied += 1
        metrics.CHUNKS.labels("applied").inc()
        metrics.CHUNK_SECONDS.observe(result.duration_ms / 1000)
        for outcome in ("succeeded", "failed", "skipped"):
            metrics.ENTITIES.labels(outcome).inc(getattr(result, outcome))
        return "applied"

    def _already_done(self) -> str:
        self.counters.already_done += 1
        metrics.CHUNKS.labels("already_done").inc()
        return "already_done"

    def _start_delivery(self, delivery: Delivery, job_id: UUID, found: ChunkLookup) -> int | None:
        """Pace the chunk, then count this delivery on the ledger (committed before the apply); return the
        count, or None when the chunk turned final meanwhile. Pacing comes first so that a delivery handed
        back during its wait is not counted; a chunk past the cap already is not paced at all."""
        message = delivery.message
        if not is_poison(found.deliveries + 1, cap=self._poison_cap):
            self._pace(
                job_id, message.account_id, message.chunk_no, message.entity_count, found.entities_per_second
            )
        return self._with_database(lambda: self._ledger.count_delivery(job_id, message.chunk_no))

    def _apply_with_retries(self, delivery: Delivery, job_id: UUID) -> ChunkResult | None:
        """`apply_chunk` under the retry policy, each failed attempt noted on the ledger; None when the
        chunk was given up on (dead-lettered and failed). The policy decides per attempt (rather than
        running the loop itself) because every attempt is recorded with its number."""
        chunk_no = delivery.message.chunk_no
        attempt = 1
        while True:
            try:
                self._connect()
                return self._ledger.apply(job_id, chunk_no, worker=self.name, attempt=attempt)
            except WorkerStoppingError:
                raise
            except Exception as exc:
                self._ledger.drop()
                decision = self._policy.decide(exc, attempt)
                if not decision.retry:
                    self._give_up(delivery, job_id, attempt, decision.reason)
                    return None
                self.counters.retries += 1
                metrics.RETRIES.inc()
                log.warning(
                    "%s: job %s chunk %s attempt %d failed, retrying in %.1f s: %s",
                    self.name,
                    job_id,
                    chunk_no,
                    attempt,
                    decision.wait,
                    decision.reason,
                )
                self._note_retry(job_id, chunk_no, attempt, decision.reason)
                if self._stop.wait(decision.wait):
                    raise WorkerStoppingError(f"stopping between attempts of {delivery.describe()}") from exc
                attempt += 1

    def _pace(self, job_id: UUID, account_id: int, chunk_no: int, entities: int, rate: float) -> None:
        try:
            waited = self._pacer.wait_for(account_id, entities, rate)
        except PacingInterruptedError as exc:
            raise WorkerStoppingError(str(exc)) from exc
        metrics.PACING_WAIT.observe(waited)
        if waited >= PACED_EVENT_SECONDS:
            detail = f"waited {waited:.1f} s for {entities} entities at {rate:g}/s"
            self._with_database(
                lambda: self._ledger.record_paced(job_id, account_id, chunk_no, detail=detail)
            )

    def _give_up(
        self,
        delivery: Delivery,
        job_id: UUID | None,
        attempts: int,
        reason: str,
        *,
        code: str = "internal",
    ) -> str:
        """Dead-letter the delivery, then record the chunk failed with its outcome rows (each one `code`)."""
        log.error(
            "%s: giving up on %s after %d attempts: %s", self.name, delivery.describe(), attempts, reason
        )
        self._until_done(
            "dead-letter",
            lambda: self._consumer.dead_letter(delivery, reason=reason, worker=self.name, attempts=attempts),
        )
        metrics.DEAD_LETTERS.inc()
        if job_id is not None:
            try:
                self._with_database(
                    lambda: self._ledger.fail(
                        job_id,
                        delivery.message.chunk_no,
                        reason=reason,
                        worker=self.name,
                        attempts=attempts,
                        code=code,
                    )
                )
            except (psycopg.Error, CrmBulkError):
                # The chunk stays open; the scheduler publishes it again later (stale release).
                log.exception(
                    "%s: could not record job %s chunk %s as failed",
                    self.name,
                    job_id,
                    delivery.message.chunk_no,
                )
        self.counters.failed += 1
        metrics.CHUNKS.labels("failed").inc()
        return "failed"

    def _note_retry(self, job_id: UUID, chunk_no: int, attempt: int, reason: str) -> None:
        """Best effort: the retry goes ahead even if the note cannot be written (the database may be down)."""
        try:
            self._ledger.note_retry(job_id, chunk_no, attempt=attempt, reason=reason)
        except (psycopg.Error, CrmBulkError) as exc:
            self._ledger.drop()
            log.warning("%s: could not note retry of job %s chunk %s: %s", self.name, job_id, chunk_no, exc)

    def _with_database(self, action: Callable[[], T]) -> T:
        """Run `action()` on a connected ledger, waiting out connection failures (they are not the chunk's
        fault)."""

        def attempt() -> T:
            self._connect()
            return action()

        try:
            return DATABASE_CALL_RETRY.call(
                attempt,
                what=f"{self.name}: database call",
                stop=self._stop,
                on_retry=lambda _exc: self._ledger.drop(force=True),
                logger=log,
            )
        except RetryStopped as exc:
            raise WorkerStoppingError("stopping while waiting for the database") from exc

    def _until_done(self, what: str, action: Callable[[], None]) -> None:
        """Repeat `action` until it succeeds (a broker outage delays it), or the worker stops."""
        try:
            BROKER_CALL_RETRY.call(action, what=f"{self.name}: {what}", stop=self._stop, logger=log)
        except RetryStopped as exc:
            raise WorkerStoppingError(f"stopping before {what} succeeded") from exc

    def _connect(self) -> None:
        """Reconnect with backoff until the database answers (or the worker stops)."""
        try:
            RECONNECT_RETRY.call(
                self._ledger.connect, what=f"{self.name}: connect", stop=self._stop, logger=log
            )
        except RetryStopped as exc:
            raise WorkerStoppingError("stopping while the database is unavailable") from exc

    def _report_lag(self) -> None:
        lag = self._consumer.lag()
        if lag is not None:
            metrics.QUEUE_LAG.set(lag)
