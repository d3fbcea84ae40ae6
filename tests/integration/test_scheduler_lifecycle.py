"""Scheduler steps on a real ledger: due jobs, planning, the release window and its round-robin, pacing at
release, finishing with the right status, cancelling with exact counts and outcome rows."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest

from crm_bulk.actions.specs import BulkActionRequest, Target
from crm_bulk.apply.engine import apply_chunk
from crm_bulk.dispatch.release import release_chunks
from crm_bulk.entitylog.outbox import decode_outcomes
from crm_bulk.errors import ConflictError, NotFoundError
from crm_bulk.jobs.control import cancel_job
from crm_bulk.jobs.lifecycle import (
    finish_jobs,
    plan_next_job,
    promote_due_jobs,
    sweep_cancelled_jobs,
)
from crm_bulk.jobs.repository import create_job, get_job
from crm_bulk.ledger.terminal import fail_chunk
from crm_bulk.postgres import Conn
from crm_bulk.queue.messages import ChunkMessage
from tests.databases import quiet_connection
from tests.integration.pipeline_support import (
    make_account,
    own_database,
    seed_contacts,
    stamp_outboxes_shipped,
)

pytestmark = pytest.mark.postgres


class RecordingPublisher:
    """A publisher twin that keeps what it was given (or fails, to test the rollback)."""

    def __init__(self, *, fail: bool = False) -> None:
        self.batches: list[list[ChunkMessage]] = []
        self.fail = fail

    def publish(self, messages: Sequence[ChunkMessage]) -> None:
        if self.fail:
            from crm_bulk.errors import RetryableError

            raise RetryableError("broker down")
        self.batches.append(list(messages))

    def close(self) -> None:
        """Nothing to release."""

    def __enter__(self) -> RecordingPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def messages(self) -> list[ChunkMessage]:
        return [m for batch in self.batches for m in batch]


@pytest.fixture(scope="module")
def life_db(pg_server_url: str) -> Iterator[str]:
    with own_database(pg_server_url) as url:
        yield url


@pytest.fixture
def conn(life_db: str) -> Iterator[Conn]:
    """An autocommit connection, as the scheduler uses; running jobs of earlier tests are set aside."""
    with quiet_connection(life_db) as c:
        yield c


def _job(conn: Conn, account: int, *, tag: str = "t", scheduled_for: datetime | None = None) -> UUID:
    request = BulkActionRequest(
        action="add_tags", target=Target(all=True), tags=[tag], scheduled_for=scheduled_for
    )
    return create_job(conn, account_id=account, created_by=None, request=request).id


def _planned(conn: Conn, *, contacts: int, chunk_size: int, rate: int = 50_000) -> tuple[int, UUID]:
    account = make_account(conn, entities_per_second=rate)
    seed_contacts(conn, account, contacts)
    job_id = _job(conn, account)
    assert plan_next_job(conn, chunk_size=chunk_size) == job_id
    return account, job_id


def _states(conn: Conn, job_id: UUID) -> dict[str, int]:
    rows = conn.execute(
        "SELECT state, count(*) FROM bulk_action_chunks WHERE job_id = %s GROUP BY state", (job_id,)
    ).fetchall()
    return {str(state): int(n) for state, n in rows}


def _events(conn: Conn, job_id: UUID) -> list[str]:
    rows = conn.execute(
        "SELECT event FROM job_events_outbox WHERE job_id = %s ORDER BY id", (job_id,)
    ).fetchall()
    return [str(r[0]) for r in rows]


def test_planning_starts_the_job_and_records_its_events(conn: Conn) -> None:
    account, job_id = _planned(conn, contacts=25, chunk_size=10)
    job = get_job(conn, account, job_id)
    assert (job.status, job.total) == ("running", 25)
    assert job.started_at is not None
    assert _states(conn, job_id) == {"pending": 3}
    assert _events(conn, job_id) == ["planned", "started"]
    assert plan_next_job(conn, chunk_size=10) is None


def test_a_scheduled_job_waits_until_it_is_due(conn: Conn) -> None:
    account = make_account(conn)
    later = _job(conn, account, scheduled_for=datetime.now(UTC) + timedelta(hours=1))
    soon = _job(conn, account, scheduled_for=datetime.now(UTC) + timedelta(seconds=1))
    assert get_job(conn, account, soon).status == "scheduled"
    conn.execute("UPDATE bulk_actions SET scheduled_for = now() - interval '1 second' WHERE id = %s", (soon,))
    assert promote_due_jobs(conn) == 1
    assert get_job(conn, account, soon).status == "queued"
    assert get_job(conn, account, later).status == "scheduled"


@pytest.mark.parametrize("window", [1, 3])
def test_release_keeps_each_job_within_its_window_and_alternates_jobs(conn: Conn, window: int) -> None:
    _, first = _planned(conn, contacts=100, chunk_size=10)
    _, second = _planned(conn, contacts=100, chunk_size=10)
    publisher = RecordingPublisher()
    result = release_chunks(conn, publisher, window=window)
    assert result.released == 2 * window
    jobs = [m.job_id for m in publisher.messages]
    assert jobs == [str(first), str(second)] * window
    assert [m.chunk_no for m in publisher.messages if m.job_id == str(first)] == list(range(window))
    assert release_chunks(conn, publisher, window=window).released == 0
    assert _states(conn, first) == {"released": window, "pending": 10 - window}
    # One chunk done frees one slot.
    apply_chunk(conn, first, 0)
    assert release_chunks(conn, publisher, window=window).released == 1
    assert publisher.messages[-1].chunk_no == window


def test_a_failed_publish_releases_nothing(conn: Conn) -> None:
    _, job_id = _planned(conn, contacts=30, chunk_size=10)
    with pytest.raises(Exception, match="broker down"):
        release_chunks(conn, RecordingPublisher(fail=True), window=8)
    assert _states(conn, job_id) == {"pending": 3}


def test_release_paces_a_rate_limited_account(conn: Conn) -> None:
    # 10 entities/s and chunks of 10: one chunk now, plus half a second of slack, then one per second.
    _, paced = _planned(conn, contacts=100, chunk_size=10, rate=10)
    _, free = _planned(conn, contacts=100, chunk_size=10)
    publisher = RecordingPublisher()
    reported: set[UUID] = set()
    result = release_chunks(conn, publisher, window=8, reported=reported)
    released = [m.job_id for m in publisher.messages]
    assert released.count(str(paced)) == 1
    assert released.count(str(free)) == 8
    assert result.paced_jobs == [paced]
    assert _events(conn, paced)[-1] == "paced"
    release_chunks(conn, publisher, window=8, reported=reported)
    assert _events(conn, paced).count("paced") == 1


@pytest.mark.parametrize(
    ("fail_chunks", "status"),
    [(0, "completed"), (1, "completed_with_errors"), (3, "failed")],
)
def test_a_job_finishes_when_every_chunk_is_terminal_with_the_status_its_counts_give(
    conn: Conn, fail_chunks: int, status: str
) -> None:
    account, job_id = _planned(conn, contacts=30, chunk_size=10)
    release_chunks(conn, RecordingPublisher(), window=8)
    for chunk_no in range(3):
        if chunk_no < fail_chunks:
            assert fail_chunk(conn, job_id, chunk_no, reason="deadlock detected", worker="w", attempts=3)
        else:
            apply_chunk(conn, job_id, chunk_no)
        if chunk_no < 2:
            assert finish_jobs(conn) == []
    stamp_outboxes_shipped(conn, job_id)
    (finished,) = finish_jobs(conn)
    assert (finished.job_id, finished.status) == (job_id, status)
    job = get_job(conn, account, job_id)
    assert (job.status, job.failed, job.succeeded) == (status, 10 * fail_chunks, 30 - 10 * fail_chunks)
    assert job.total == job.succeeded + job.failed + job.skipped + job.cancelled
    assert job.finished_at is not None
    assert _events(conn, job_id).count("finished") == 1
    assert _events(conn, job_id).count("dead_lettered") == fail_chunks


def test_a_failed_chunk_gets_one_failed_outcome_row_per_entity(conn: Conn) -> None:
    _, job_id = _planned(conn, contacts=10, chunk_size=10)
    assert fail_chunk(
        conn,
        job_id,
        0,
        reason="RetryableError: deadlock (gave up after 3 attempts)",
        worker="w-1",
        attempts=3,
    )
    assert not fail_chunk(conn, job_id, 0, reason="again", worker="w-1", attempts=3)
    row = conn.execute(
        "SELECT state, error, attempts, failed, outcomes FROM bulk_action_chunks WHERE job_id = %s", (job_id,)
    ).fetchone()
    assert row is not None
    state, error, attempts, failed, blob = row
    assert (state, attempts, failed) == ("failed", 3, 10)
    assert "gave up" in error
    outcomes = decode_outcomes(bytes(blob))
    assert outcomes.height == 10
    assert set(outcomes.get_column("outcome")) == {"failed"}
    assert set(outcomes.get_column("code")) == {"internal"}
    assert set(outcomes.get_column("message")) == {error}
    assert outcomes.get_column("entity_id").n_unique() == 10


def test_cancel_marks_what_was_not_applied_and_the_counts_add_up(conn: Conn) -> None:
    account, job_id = _planned(conn, contacts=50, chunk_size=10)
    release_chunks(conn, RecordingPublisher(), window=2)
    apply_chunk(conn, job_id, 0)
    job = cancel_job(conn, account, job_id)
    assert (job.status, job.total, job.succeeded, job.cancelled) == ("cancelled", 50, 10, 40)
    assert job.finished_at is not None
    assert _states(conn, job_id) == {"done": 1, "cancelled": 4}
    # A redelivered cancelled chunk is left alone, and nothing is released any more.
    assert apply_chunk(conn, job_id, 1).state == "already_done"
    assert release_chunks(conn, RecordingPublisher(), window=8).released == 0
    blobs = conn.execute(
        "SELECT outcomes FROM bulk_action_chunks WHERE job_id = %s AND state = 'cancelled'", (job_id,)
    ).fetchall()
    rows = [decode_outcomes(bytes(b)) for (b,) in blobs]
    assert sum(r.height for r in rows) == 40
    assert all(
        set(r.get_column("code")) == {"cancelled"} and set(r.get_column("outcome")) == {"skipped"}
        for r in rows
    )
    assert "cancelled" in _events(conn, job_id)
    with pytest.raises(ConflictError):
        cancel_job(conn, account, job_id)


def test_cancel_is_scoped_to_the_account(conn: Conn) -> None:
    _, job_id = _planned(conn, contacts=5, chunk_size=10)
    other = make_account(conn)
    with pytest.raises(NotFoundError):
        cancel_job(conn, other, job_id)


def test_cancelling_a_queued_job_before_planning_ends_it_empty(conn: Conn) -> None:
    account = make_account(conn)
    seed_contacts(conn, account, 5)
    job_id = _job(conn, account)
    job = cancel_job(conn, account, job_id)
    assert (job.status, job.total, job.cancelled) == ("cancelled", 0, 0)
    assert plan_next_job(conn, chunk_size=10) is None


def test_chunks_planned_after_a_cancel_are_swept(conn: Conn) -> None:
    account, job_id = _planned(conn, contacts=30, chunk_size=10)
    # As if a planner committed its chunks just after the cancel flipped the status.
    conn.execute("UPDATE bulk_actions SET status = 'cancelled' WHERE id = %s", (job_id,))
    assert sweep_cancelled_jobs(conn) == 3
    job = get_job(conn, account, job_id)
    assert (job.cancelled, job.total) == (30, 30)
    assert _states(conn, job_id) == {"cancelled": 3}
    assert sweep_cancelled_jobs(conn) == 0


def test_a_job_whose_plan_cannot_work_fails_with_the_reason(conn: Conn) -> None:
    account = make_account(conn)
    job_id = _job(conn, account)
    # A filter the planner cannot compile (stored by hand: the API would have refused it).
    conn.execute(
        'UPDATE bulk_actions SET spec = jsonb_set(spec, \'{target}\', \'{"filter": {"nope": {"eq": 1}}}\') '
        "WHERE id = %s",
        (job_id,),
    )
    assert plan_next_job(conn, chunk_size=10) == job_id
    job = get_job(conn, account, job_id)
    assert job.status == "failed"
    row = conn.execute("SELECT error FROM bulk_actions WHERE id = %s", (job_id,)).fetchone()
    assert row is not None and "planning failed" in row[0]
    assert _events(conn, job_id) == ["finished"]
