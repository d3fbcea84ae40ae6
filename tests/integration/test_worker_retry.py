"""One worker's consume loop on the real table queue and ledger: retries with a fixed wait, dead letters,
failed chunks with outcome rows, redeliveries skipped without pacing, drain on stop."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import pytest

from crm_bulk.apply import engine
from crm_bulk.dispatch.release import release_chunks
from crm_bulk.entitylog.outbox import decode_outcomes
from crm_bulk.errors import PermanentError, RetryableError
from crm_bulk.jobs.lifecycle import finish_jobs, plan_next_job
from crm_bulk.jobs.repository import get_job
from crm_bulk.postgres import Conn
from crm_bulk.queue.postgres_queue import PostgresQueue
from crm_bulk.ratelimit import InProcessLimiter
from crm_bulk.retry import RetryPolicy
from crm_bulk.worker import ledger_access
from crm_bulk.worker.chunk_worker import ChunkWorker
from crm_bulk.worker.ledger_access import PostgresWorkerLedger
from crm_bulk.worker.pacing import EntityPacer
from tests.databases import quiet_connection
from tests.integration.pipeline_support import (
    make_account,
    own_database,
    seed_contacts,
    stamp_outboxes_shipped,
    submit_tagging,
)

pytestmark = pytest.mark.postgres

WAIT = 0.2


@pytest.fixture(scope="module")
def retry_db(pg_server_url: str) -> Iterator[str]:
    with own_database(pg_server_url) as url:
        yield url


@pytest.fixture
def conn(retry_db: str) -> Iterator[Conn]:
    with quiet_connection(retry_db) as c:
        yield c


@pytest.fixture
def queue(retry_db: str) -> Iterator[PostgresQueue]:
    with PostgresQueue(retry_db, topic_prefix=f"retry-{uuid.uuid4().hex[:8]}") as q:
        yield q


class CountingLimiter(InProcessLimiter):
    """Counts acquisitions, so a test can see whether a chunk was paced."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def acquire(self, key: str, *, cost: int, rate_per_second: float, burst: int) -> Any:
        self.calls += 1
        return super().acquire(key, cost=cost, rate_per_second=rate_per_second, burst=burst)


def _released_job(
    conn: Conn, queue: PostgresQueue, *, contacts: int = 20, chunk_size: int = 10
) -> tuple[int, UUID]:
    account = make_account(conn)
    seed_contacts(conn, account, contacts)
    job_id = submit_tagging(conn, account, "retry")
    assert plan_next_job(conn, chunk_size=chunk_size) == job_id
    release_chunks(conn, queue, window=100)
    return account, job_id


def _worker(
    url: str,
    queue: PostgresQueue,
    *,
    limiter: InProcessLimiter | None = None,
    stop: threading.Event | None = None,
) -> ChunkWorker:
    stop = stop or threading.Event()
    pacer = EntityPacer(
        InProcessLimiter() if limiter is None else limiter, namespace="retry-tests", stop=stop
    )
    return ChunkWorker(
        name="w-test",
        ledger=PostgresWorkerLedger(url),
        consumer=queue,
        pacer=pacer,
        policy=RetryPolicy(attempts=3, wait_seconds=WAIT),
        stop=stop,
    )


def _flaky(failures: dict[int, list[BaseException]]) -> Any:
    """apply_chunk that raises the queued errors for a chunk before applying it for real."""
    real = engine.apply_chunk

    def apply(conn: Conn, job_id: UUID, chunk_no: int, **kwargs: Any) -> Any:
        pending = failures.get(chunk_no, [])
        if pending:
            raise pending.pop(0)
        return real(conn, job_id, chunk_no, **kwargs)

    return apply


def test_transient_errors_are_retried_at_the_fixed_interval_then_applied(
    conn: Conn, queue: PostgresQueue, retry_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    account, job_id = _released_job(conn, queue)
    monkeypatch.setattr(ledger_access, "apply_chunk", _flaky({0: [RetryableError("deadlock detected")] * 2}))
    worker = _worker(retry_db, queue)
    started = time.monotonic()
    counters = worker.run(burst=True, idle_exit_seconds=0.5)
    elapsed = time.monotonic() - started
    assert (counters.applied, counters.retries, counters.failed) == (2, 2, 0)
    assert elapsed >= 2 * WAIT
    stamp_outboxes_shipped(conn, job_id)
    finish_jobs(conn)
    job = get_job(conn, account, job_id)
    assert (job.status, job.succeeded) == ("completed", 20)
    row = conn.execute(
        "SELECT attempts FROM bulk_action_chunks WHERE job_id = %s AND chunk_no = 0", (job_id,)
    ).fetchone()
    assert row is not None and row[0] == 3
    events = conn.execute(
        "SELECT event, detail FROM job_events_outbox "
        "WHERE job_id = %s AND event = 'chunk_retried' ORDER BY id",
        (job_id,),
    ).fetchall()
    assert [d for _, d in events] == [
        "attempt 1: RetryableError: deadlock detected",
        "attempt 2: RetryableError: deadlock detected",
    ]
    assert queue.lag() == 0


def test_a_chunk_that_exhausts_its_retries_is_dead_lettered_and_failed_with_outcome_rows(
    conn: Conn, queue: PostgresQueue, retry_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    account, job_id = _released_job(conn, queue)
    monkeypatch.setattr(
        ledger_access, "apply_chunk", _flaky({1: [RetryableError("serialization failure")] * 3})
    )
    counters = _worker(retry_db, queue).run(burst=True, idle_exit_seconds=0.5)
    assert (counters.applied, counters.retries, counters.failed) == (1, 2, 1)
    (letter,) = queue.read_dead_letters()
    assert letter.message is not None and (letter.message.job_id, letter.message.chunk_no) == (str(job_id), 1)
    assert letter.attempts == 3
    assert "serialization failure" in letter.reason and "gave up after 3 attempts" in letter.reason
    stamp_outboxes_shipped(conn, job_id)
    finish_jobs(conn)
    job = get_job(conn, account, job_id)
    assert (job.status, job.succeeded, job.failed, job.total) == ("completed_with_errors", 10, 10, 20)
    row = conn.execute(
        "SELECT state, error, outcomes FROM bulk_action_chunks WHERE job_id = %s AND chunk_no = 1", (job_id,)
    ).fetchone()
    assert row is not None
    state, error, blob = row
    assert state == "failed" and error == letter.reason
    outcomes = decode_outcomes(bytes(blob))
    assert outcomes.height == 10
    assert set(outcomes.get_column("code")) == {"internal"}
    assert queue.lag() == 0


def test_a_permanent_error_is_not_retried(
    conn: Conn, queue: PostgresQueue, retry_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    account, job_id = _released_job(conn, queue, contacts=10)
    monkeypatch.setattr(ledger_access, "apply_chunk", _flaky({0: [PermanentError("outcome count mismatch")]}))
    counters = _worker(retry_db, queue).run(burst=True, idle_exit_seconds=0.5)
    assert (counters.applied, counters.retries, counters.failed) == (0, 0, 1)
    stamp_outboxes_shipped(conn, job_id)
    finish_jobs(conn)
    job = get_job(conn, account, job_id)
    assert (job.status, job.failed) == ("failed", 10)
    assert [x.attempts for x in queue.read_dead_letters()] == [1]


def test_a_redelivered_done_chunk_is_acknowledged_without_pacing_or_applying(
    conn: Conn, queue: PostgresQueue, retry_db: str
) -> None:
    _, job_id = _released_job(conn, queue, contacts=10)
    limiter = CountingLimiter()
    first = _worker(retry_db, queue, limiter=limiter).run(burst=True, idle_exit_seconds=0.5)
    assert (first.applied, limiter.calls) == (1, 1)
    # The same chunk again, as a redelivery after a lost acknowledgement would bring it.
    queue.publish([m for m in _messages(conn, job_id)])
    again = _worker(retry_db, queue, limiter=limiter).run(burst=True, idle_exit_seconds=0.5)
    assert (again.applied, again.already_done, limiter.calls) == (0, 1, 1)
    assert queue.lag() == 0


def test_stopping_during_a_retry_wait_leaves_the_chunk_for_redelivery(
    conn: Conn, queue: PostgresQueue, retry_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    account, job_id = _released_job(conn, queue, contacts=10)
    monkeypatch.setattr(ledger_access, "apply_chunk", _flaky({0: [RetryableError("deadlock")] * 5}))
    stop = threading.Event()
    worker = _worker(retry_db, queue, stop=stop)
    threading.Timer(WAIT / 2, stop.set).start()
    counters = worker.run()
    assert (counters.applied, counters.failed, counters.abandoned) == (0, 0, 1)
    queue.close()
    # Nothing was acknowledged: the chunk is still queued, and the next worker applies it.
    assert queue.lag() == 1
    monkeypatch.setattr(ledger_access, "apply_chunk", engine.apply_chunk)
    assert _worker(retry_db, queue).run(burst=True, idle_exit_seconds=0.5).applied == 1
    stamp_outboxes_shipped(conn, job_id)
    finish_jobs(conn)
    assert get_job(conn, account, job_id).status == "completed"


def _messages(conn: Conn, job_id: UUID) -> list[Any]:
    from crm_bulk.queue.messages import ChunkMessage

    rows = conn.execute(
        "SELECT chunk_no, account_id, entity_count FROM bulk_action_chunks WHERE job_id = %s", (job_id,)
    ).fetchall()
    return [ChunkMessage(job_id=str(job_id), chunk_no=c, account_id=a, entity_count=n) for c, a, n in rows]
