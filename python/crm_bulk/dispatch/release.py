"""Fair release: planned chunks go to the queue a bounded window at a time per job, round-robin over jobs,
and no faster than each account's entity rate.

- The window (`dispatch_window_chunks`) caps how many chunks of one job sit in the queue or in workers, so a
  small job submitted while a huge one runs waits behind at most one window per other job, not behind the
  huge job's whole remainder. A job also keeps at most two seconds of its account's rate in flight.
- Within one pass the released chunks interleave job by job, so a partition's queue alternates jobs too.
- Pacing at release: an account limited to E entities/s gets chunks released on a schedule of E (with half
  a second of slack), kept in `dispatch_pacing` so every scheduler instance shares it. Chunks that must wait
  stay `pending` in the ledger instead of holding worker processes; the workers' token bucket then rarely
  waits, and other accounts' chunks keep flowing.

The ledger's state changes (pending → released, republished) are `crm_bulk.ledger.released`'s.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from uuid import UUID

from crm_bulk import ledger
from crm_bulk.entitylog.events import record_event
from crm_bulk.postgres import Conn
from crm_bulk.queue.messages import ChunkMessage
from crm_bulk.queue.protocol import ChunkPublisher
from crm_bulk.ratelimit.pacing import IN_FLIGHT_SECONDS, PACING_SLACK
from crm_bulk.sqlfiles import query

log = logging.getLogger(__name__)

# Advisory lock class of "dispatching job X" ("crmd"); the job id hash is the second key.
DISPATCH_LOCK_CLASS = 0x63726D64


@dataclass
class ReleaseResult:
    """One release pass: chunks published, and jobs that had chunks waiting only because of pacing."""

    released: int = 0
    jobs: int = 0
    paced_jobs: list[UUID] = field(default_factory=list)


@dataclass
class _Job:
    job_id: UUID
    account_id: int
    rate: float
    pending: deque[tuple[int, int]]


def release_chunks(
    conn: Conn,
    publisher: ChunkPublisher,
    *,
    window: int,
    rotation: int = 0,
    reported: set[UUID] | None = None,
) -> ReleaseResult:
    """Top every running job up to `window` chunks in flight, within its account's pacing; one transaction.

    `rotation` shifts which job goes first (callers pass a counter, so no job is always first); `reported`
    remembers jobs whose `paced` event was recorded already (one per job and scheduler process).
    """
    result = ReleaseResult()
    with conn.transaction():
        jobs = _fillable_jobs(conn, window, rotation)
        if not jobs:
            return result
        accounts = sorted({j.account_id for j in jobs})
        conn.execute(query("postgres", "dispatch", "ensure_pacing_rows"), {"account_ids": accounts})
        rows = conn.execute(
            query("postgres", "dispatch", "lock_pacing_rows"), {"account_ids": accounts}
        ).fetchall()
        now: datetime = rows[0][2]
        budget = {account: max(next_at, now - PACING_SLACK) for account, next_at, _ in rows}
        messages = _interleave(jobs, budget, now, result)
        if messages:
            publisher.publish(messages)
            ledger.mark_released(conn, [(UUID(m.job_id), m.chunk_no) for m in messages])
            conn.execute(
                query("postgres", "dispatch", "store_pacing"),
                {"account_ids": accounts, "next_release_at": [budget[a] for a in accounts]},
            )
        for job in jobs:
            if job.job_id in result.paced_jobs and (reported is None or job.job_id not in reported):
                record_event(
                    conn,
                    job_id=job.job_id,
                    account_id=job.account_id,
                    event="paced",
                    detail=f"account limited to {job.rate:g} entities/s",
                )
                if reported is not None:
                    reported.add(job.job_id)
    result.released = len(messages)
    result.jobs = len({m.job_id for m in messages})
    if messages:
        log.debug("released %d chunks of %d jobs", result.released, result.jobs)
    return result


def _fillable_jobs(conn: Conn, window: int, rotation: int) -> list[_Job]:
    """Running jobs with room in their window, each locked for this dispatcher, with their next chunks."""
    running = conn.execute(query("postgres", "dispatch", "running_jobs")).fetchall()
    if not running:
        return []
    start = rotation % len(running)
    jobs: list[_Job] = []
    for job_id, account_id, rate in running[start:] + running[:start]:
        locked = conn.execute(
            query("postgres", "dispatch", "try_lock_job_dispatch"),
            {"lock_class": DISPATCH_LOCK_CLASS, "job_id": job_id},
        ).fetchone()
        if locked is None or not locked[0]:
            continue
        flight = ledger.in_flight(conn, job_id)
        room = window - flight.chunks
        if room <= 0:
            continue
        picked = _within_rate_horizon(
            ledger.lock_pending(conn, job_id, limit=room),
            float(rate),
            in_flight=flight.chunks,
            in_flight_entities=flight.entities,
        )
        if picked:
            jobs.append(_Job(job_id, int(account_id), float(rate), deque(picked)))
    return jobs


def _within_rate_horizon(
    pending: list[tuple[int, int]], rate: float, *, in_flight: int, in_flight_entities: int
) -> list[tuple[int, int]]:
    """The pending chunks that keep at most `IN_FLIGHT_SECONDS` of the account's rate in flight (at least one
    chunk when none is), so a rate-limited job never piles up a backlog that workers would apply in a burst,
    while queueing delays up to that long do not slow it below its rate."""
    allowance = rate * IN_FLIGHT_SECONDS - in_flight_entities
    picked: list[tuple[int, int]] = []
    for chunk_no, entities in pending:
        if entities > allowance and (picked or in_flight):
            break
        picked.append((chunk_no, entities))
        allowance -= entities
    return picked


def _interleave(
    jobs: list[_Job], budget: dict[int, datetime], now: datetime, result: ReleaseResult
) -> list[ChunkMessage]:
    """Round-robin one chunk per job per round while the job's account has pacing budget left."""
    messages: list[ChunkMessage] = []
    active = list(jobs)
    while active:
        still: list[_Job] = []
        for job in active:
            if budget[job.account_id] > now:
                result.paced_jobs.append(job.job_id)
                continue
            chunk_no, entities = job.pending.popleft()
            budget[job.account_id] += timedelta(seconds=entities / job.rate)
            messages.append(
                ChunkMessage(
                    job_id=str(job.job_id),
                    chunk_no=chunk_no,
                    account_id=job.account_id,
                    entity_count=entities,
                )
            )
            if job.pending:
                still.append(job)
        active = still
    return messages


def release_stale_chunks(conn: Conn, publisher: ChunkPublisher, *, older_than_seconds: float) -> int:
    """Publish again chunks released more than `older_than_seconds` ago and still open; return how many."""
    with conn.transaction():
        rows = ledger.republish_stale(conn, older_than_seconds=older_than_seconds)
        if rows:
            publisher.publish(rows)
    if rows:
        log.warning(
            "published %d chunks again that were released over %.0f s ago", len(rows), older_than_seconds
        )
    return len(rows)
