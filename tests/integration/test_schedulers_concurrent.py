"""Three schedulers side by side over twenty concurrent jobs, with real workers: no job is planned twice, no
chunk released twice or applied twice, every job finalised exactly once, and a chunk whose delivery never
completes comes back through the stale-release path and is applied by another worker. On the table queue
that is a consumer that claims a chunk and then hangs (its connection stays open, so its claim never
lapses); on Kafka, a message the broker lost (a publish that never arrives).

The ledger itself is the witness: test-only triggers log every state or release-time change of a chunk and
every status change of a job, and each scheduler's publisher records what it published.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Self
from uuid import UUID

import psycopg
import pytest

from crm_bulk.actions.specs import BulkActionRequest, Target
from crm_bulk.dispatch import scheduler as scheduler_module
from crm_bulk.dispatch.scheduler import SchedulerCounters, run_scheduler
from crm_bulk.jobs.repository import TERMINAL_STATUSES, create_job, get_job
from crm_bulk.queue import ChunkPublisher, open_publisher
from crm_bulk.queue.kafka.admin import delete_topics
from crm_bulk.queue.messages import ChunkMessage
from crm_bulk.queue.postgres_queue import PostgresQueue
from crm_bulk.settings import Settings
from tests.integration.pipeline_support import (
    log_discarded,
    make_account,
    own_database,
    pipeline_settings,
    seed_contacts,
    tagged_contacts,
    worker_pool,
)

pytestmark = pytest.mark.postgres

JOBS = 20
SCHEDULED = 5  # of them submitted as scheduled a moment ahead, so promotion is shared too
SCHEDULERS = 3
CHUNK = 250
# A released chunk still open this long is published again (the platform's 900 s, shortened for the test).
STALE_AFTER = 8.0

AUDIT_SQL = """
CREATE TABLE chunk_audit (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id uuid, chunk_no int, old_state text, new_state text, old_released timestamptz,
    new_released timestamptz
);
CREATE FUNCTION chunk_audit_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO chunk_audit (job_id, chunk_no, old_state, new_state, old_released, new_released)
    VALUES (NEW.job_id, NEW.chunk_no, OLD.state, NEW.state, OLD.released_at, NEW.released_at);
    RETURN NEW;
END $$;
CREATE TRIGGER chunk_audit AFTER UPDATE ON bulk_action_chunks FOR EACH ROW
    WHEN (OLD.state IS DISTINCT FROM NEW.state OR OLD.released_at IS DISTINCT FROM NEW.released_at)
    EXECUTE FUNCTION chunk_audit_row();
CREATE TABLE job_audit (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, job_id uuid, old_status text, new_status text
);
CREATE FUNCTION job_audit_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_audit (job_id, old_status, new_status) VALUES (NEW.id, OLD.status, NEW.status);
    RETURN NEW;
END $$;
CREATE TRIGGER job_audit AFTER UPDATE ON bulk_actions FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status) EXECUTE FUNCTION job_audit_row();
"""


@pytest.fixture
def audited_db(pg_server_url: str) -> Iterator[str]:
    with own_database(pg_server_url) as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(AUDIT_SQL)
        yield url


@dataclass
class Publications:
    """What the schedulers' publishers handed to the queue, and the one message lost on the way (Kafka)."""

    lose_one: bool
    published: list[tuple[str, int]] = field(default_factory=list)
    lost: list[ChunkMessage] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class RecordingPublisher:
    """A scheduler's publisher that notes every (job, chunk) it published; with `lose_one`, the first message
    of all is dropped instead, as a broker that lost it after acknowledging it."""

    def __init__(self, inner: ChunkPublisher, record: Publications) -> None:
        self._inner = inner
        self._record = record

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def publish(self, messages: Sequence[ChunkMessage]) -> None:
        kept = list(messages)
        with self._record.lock:
            if self._record.lose_one and not self._record.lost and kept:
                self._record.lost.append(kept.pop(0))
        self._inner.publish(kept)
        with self._record.lock:
            self._record.published.extend((m.job_id, m.chunk_no) for m in kept)

    def close(self) -> None:
        self._inner.close()


def _submit(conn: psycopg.Connection[Any], account: int, tag: str, *, scheduled: bool) -> UUID:
    when = datetime.now(UTC) + timedelta(seconds=2) if scheduled else None
    request = BulkActionRequest(action="add_tags", target=Target(all=True), tags=[tag], scheduled_for=when)
    job = create_job(conn, account_id=account, created_by=None, request=request)
    conn.commit()
    return job.id


def _hang_on_one_claim(settings: Settings, timeout: float = 60.0) -> tuple[PostgresQueue, ChunkMessage]:
    """A consumer that claims one message and then never acknowledges nor closes (its connection stays up,
    so Postgres keeps the claim): a worker that hung without its group noticing."""
    hung = PostgresQueue(settings.postgres_dsn, topic_prefix=settings.namespace)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = hung.consume(max_messages=1, timeout=1.0)
        if batch:
            return hung, batch[0].message
    raise AssertionError("no chunk was released to hang on")


def _wait_all_terminal(
    conn: psycopg.Connection[Any], jobs: dict[UUID, int], *, timeout: float
) -> dict[UUID, Any]:
    deadline = time.monotonic() + timeout
    while True:
        found = {job_id: get_job(conn, account, job_id) for job_id, account in jobs.items()}
        conn.commit()
        if all(j.status in TERMINAL_STATUSES for j in found.values()):
            return found
        if time.monotonic() > deadline:
            open_jobs = {j.id: j.status for j in found.values() if j.status not in TERMINAL_STATUSES}
            raise AssertionError(f"jobs still open after {timeout} s: {open_jobs}")
        time.sleep(0.3)


@pytest.fixture(params=["postgres", pytest.param("kafka", marks=pytest.mark.kafka)])
def queue_url(request: pytest.FixtureRequest) -> str | None:
    if request.param == "postgres":
        return None
    return f"kafka://{request.getfixturevalue('kafka_bootstrap')}"


def test_three_schedulers_plan_release_and_finish_each_job_once(
    audited_db: str, queue_url: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = pipeline_settings(
        audited_db,
        queue_url=queue_url,
        chunk_size=CHUNK,
        dispatch_window_chunks=2,
        scheduler_interval_seconds=0.05,
        scheduler_health_port=0,
    )
    monkeypatch.setattr(scheduler_module, "STALE_AFTER_SECONDS", STALE_AFTER)
    monkeypatch.setattr(scheduler_module, "STALE_CHECK_EVERY_SECONDS", 1.0)
    record = Publications(lose_one=settings.queue_kind == "kafka")
    monkeypatch.setattr(
        scheduler_module, "open_publisher", lambda s: RecordingPublisher(open_publisher(s), record)
    )
    with psycopg.connect(audited_db) as conn:
        jobs: dict[UUID, int] = {}
        sizes: dict[UUID, int] = {}
        for n in range(JOBS):
            account = make_account(conn, entities_per_second=1_000_000)
            size = 500 + 250 * (n % 7)  # 2 to 8 chunks
            seed_contacts(conn, account, size)
            job_id = _submit(conn, account, f"job-{n}", scheduled=n < SCHEDULED)
            jobs[job_id], sizes[job_id] = account, size
        stop = threading.Event()
        results: list[SchedulerCounters] = []
        threads = [
            threading.Thread(target=lambda: results.append(run_scheduler(settings, stop)), daemon=True)
            for _ in range(SCHEDULERS)
        ]
        for thread in threads:
            thread.start()
        hung = _hang_on_one_claim(settings) if settings.queue_kind == "postgres" else None
        try:
            with log_discarded(settings), worker_pool(settings, 2, tmp_path):
                found = _wait_all_terminal(conn, jobs, timeout=240)
        finally:
            stop.set()
            for thread in threads:
                thread.join(60)
            if hung is not None:
                hung[0].close()
            if settings.queue_kind == "kafka":
                delete_topics(settings.kafka_bootstrap, prefix=settings.namespace)
        assert len(results) == SCHEDULERS, "a scheduler loop did not stop"
        _assert_jobs(conn, found, jobs, sizes)
        held = hung[1] if hung is not None else record.lost[0]
        _assert_ledger(conn, record, results, held)


def _assert_jobs(
    conn: psycopg.Connection[Any], found: dict[UUID, Any], jobs: dict[UUID, int], sizes: dict[UUID, int]
) -> None:
    """Each job completed with exact counts and data, planned, started and finished exactly once."""
    for n, (job_id, job) in enumerate(found.items()):
        assert (job.status, job.total, job.succeeded, job.failed, job.skipped) == (
            "completed",
            sizes[job_id],
            sizes[job_id],
            0,
            0,
        )
        assert job.finished_at is not None
        assert tagged_contacts(conn, jobs[job_id], f"job-{n}") == sizes[job_id]
    events = conn.execute(
        "SELECT job_id, event, count(*) FROM job_events_outbox "
        "WHERE event IN ('planned', 'started', 'finished') GROUP BY job_id, event"
    ).fetchall()
    transitions = conn.execute(
        "SELECT job_id, old_status || '>' || new_status, count(*) FROM job_audit GROUP BY 1, 2"
    ).fetchall()
    conn.commit()
    assert {(j, e): c for j, e, c in events} == {
        (j, e): 1 for j in found for e in ("planned", "started", "finished")
    }
    counted = Counter({(j, t): c for j, t, c in transitions})
    for n, job_id in enumerate(found):
        path = ["queued>running", "running>completed"]
        if n < SCHEDULED:
            path = ["scheduled>queued", *path]
        assert {t: c for (j, t), c in counted.items() if j == job_id} == dict.fromkeys(path, 1)


def _assert_ledger(
    conn: psycopg.Connection[Any],
    record: Publications,
    results: list[SchedulerCounters],
    held: ChunkMessage,
) -> None:
    """Every chunk released once and done once; every publish is a release or a stale republish; the hung
    chunk was republished and applied; the schedulers' counters add up to the ledger's."""
    rows = conn.execute(
        "SELECT job_id::text, chunk_no, old_state, new_state, old_released IS DISTINCT FROM new_released "
        "FROM chunk_audit ORDER BY id"
    ).fetchall()
    chunks = conn.execute("SELECT job_id::text, chunk_no, state FROM bulk_action_chunks").fetchall()
    conn.commit()
    assert {state for *_, state in chunks} == {"done"}
    releases = Counter((j, c) for j, c, old, new, _ in rows if (old, new) == ("pending", "released"))
    dones = Counter((j, c) for j, c, old, new, _ in rows if new == "done")
    republishes = Counter(
        (j, c) for j, c, old, new, moved in rows if (old, new) == ("released", "released") and moved
    )
    every = {(j, c) for j, c, _ in chunks}
    assert releases == Counter(every), "a chunk was released twice, or never"
    assert dones == Counter(every), "a chunk was applied twice, or never"
    lost = Counter((m.job_id, m.chunk_no) for m in record.lost)
    assert Counter(record.published) + lost == releases + republishes
    assert republishes[(held.job_id, held.chunk_no)] >= 1, "the hung chunk was never republished"
    assert sum(r.released for r in results) == len(every)
    assert sum(r.republished for r in results) == sum(republishes.values())
    assert sum(r.finished for r in results) == JOBS
    assert sum(r.planned for r in results) == JOBS
    print(
        f"{len(every)} chunks of {JOBS} jobs; released by scheduler {[r.released for r in results]}, "
        f"finished by {[r.finished for r in results]}; {sum(republishes.values())} stale releases republished"
    )
