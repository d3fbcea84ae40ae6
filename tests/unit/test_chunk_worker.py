"""The worker's decisions, without services: the in-memory queue twin and a scripted ledger.

The same decisions run against real PostgreSQL in tests/integration/test_worker_retry.py; here each one is
isolated: what is applied, acknowledged, retried, dead-lettered or left for redelivery, and what the ledger
is told.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import psycopg
import pytest

from crm_bulk.apply.engine import ChunkResult
from crm_bulk.errors import PermanentError, RetryableError
from crm_bulk.ledger import ChunkLookup
from crm_bulk.queue.memory_queue import MemoryBroker, MemoryQueue
from crm_bulk.queue.messages import ChunkMessage
from crm_bulk.ratelimit import InProcessLimiter
from crm_bulk.retry import RetryPolicy
from crm_bulk.worker.chunk_worker import ChunkWorker
from crm_bulk.worker.pacing import EntityPacer

WAIT = 0.01
UNLIMITED = 1e9


@dataclass
class ScriptedLedger:
    """A `WorkerLedger` whose answers the test sets: chunk states, deliveries so far, errors each apply raises
    first, and database outages; it records every call the worker makes."""

    states: dict[tuple[UUID, int], str] = field(default_factory=dict)
    deliveries: dict[tuple[UUID, int], int] = field(default_factory=dict)
    apply_errors: dict[tuple[UUID, int], list[BaseException]] = field(default_factory=dict)
    outages: int = 0
    applied: list[tuple[UUID, int, int]] = field(default_factory=list)
    retries: list[tuple[UUID, int, int, str]] = field(default_factory=list)
    failed: list[tuple[UUID, int, str, int]] = field(default_factory=list)
    failed_codes: list[str] = field(default_factory=list)
    fail_error: BaseException | None = None
    connects: int = 0

    def connect(self) -> None:
        self.connects += 1
        if self.outages:
            self.outages -= 1
            raise psycopg.OperationalError("connection refused")

    def drop(self, *, force: bool = False) -> None:
        pass

    def close(self) -> None:
        pass

    def look_up(self, job_id: UUID, chunk_no: int) -> ChunkLookup | None:
        state = self.states.get((job_id, chunk_no))
        return (
            None
            if state is None
            else ChunkLookup(state, UNLIMITED, self.deliveries.get((job_id, chunk_no), 0))
        )

    def count_delivery(self, job_id: UUID, chunk_no: int) -> int | None:
        if self.states.get((job_id, chunk_no)) not in ("pending", "released"):
            return None
        count = self.deliveries.get((job_id, chunk_no), 0) + 1
        self.deliveries[(job_id, chunk_no)] = count
        return count

    def apply(self, job_id: UUID, chunk_no: int, *, worker: str, attempt: int) -> ChunkResult:
        queued = self.apply_errors.get((job_id, chunk_no), [])
        if queued:
            raise queued.pop(0)
        if self.states[(job_id, chunk_no)] != "released":
            return ChunkResult(job_id=job_id, chunk_no=chunk_no, state="already_done")
        self.states[(job_id, chunk_no)] = "done"
        self.applied.append((job_id, chunk_no, attempt))
        return ChunkResult(job_id=job_id, chunk_no=chunk_no, state="applied", entity_count=10, succeeded=10)

    def note_retry(self, job_id: UUID, chunk_no: int, *, attempt: int, reason: str) -> None:
        self.retries.append((job_id, chunk_no, attempt, reason))

    def fail(
        self, job_id: UUID, chunk_no: int, *, reason: str, worker: str, attempts: int, code: str = "internal"
    ) -> bool:
        if self.fail_error is not None:
            raise self.fail_error
        self.states[(job_id, chunk_no)] = "failed"
        self.failed.append((job_id, chunk_no, reason, attempts))
        self.failed_codes.append(code)
        return True

    def record_paced(self, job_id: UUID, account_id: int, chunk_no: int, *, detail: str) -> None:
        pass


@pytest.fixture
def broker() -> MemoryBroker:
    return MemoryBroker(topic_prefix=f"unit-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def consumer(broker: MemoryBroker) -> Iterator[MemoryQueue]:
    with broker.consumer(client_id="w-unit") as member:
        yield member


def _worker(
    ledger: ScriptedLedger,
    consumer: MemoryQueue,
    stop: threading.Event | None = None,
    *,
    poison_delivery_cap: int = 3,
) -> ChunkWorker:
    stop = stop or threading.Event()
    return ChunkWorker(
        name="w-unit",
        ledger=ledger,
        consumer=consumer,
        pacer=EntityPacer(InProcessLimiter(), namespace="unit", stop=stop),
        policy=RetryPolicy(attempts=3, wait_seconds=WAIT),
        stop=stop,
        poll_timeout=0.05,
        poison_delivery_cap=poison_delivery_cap,
    )


def _publish(broker: MemoryBroker, ledger: ScriptedLedger, *, state: str = "released") -> tuple[UUID, int]:
    job_id = uuid.uuid4()
    ledger.states[(job_id, 0)] = state
    with broker.publisher() as publisher:
        publisher.publish([ChunkMessage(job_id=str(job_id), chunk_no=0, account_id=1, entity_count=10)])
    return job_id, 0


def _run(worker: ChunkWorker) -> None:
    worker.run(burst=True, idle_exit_seconds=0.1)


def test_an_open_chunk_is_applied_once_and_acknowledged(broker: MemoryBroker, consumer: MemoryQueue) -> None:
    ledger = ScriptedLedger()
    chunk = _publish(broker, ledger)
    worker = _worker(ledger, consumer)
    _run(worker)
    assert ledger.applied == [(*chunk, 1)]
    assert (worker.counters.applied, worker.counters.deliveries) == (1, 1)
    assert broker.waiting() == 0
    assert broker.dead_letters() == []


@pytest.mark.parametrize("state", ["done", "failed", "cancelled"])
def test_a_final_chunk_is_acknowledged_without_applying(
    broker: MemoryBroker, consumer: MemoryQueue, state: str
) -> None:
    ledger = ScriptedLedger()
    _publish(broker, ledger, state=state)
    worker = _worker(ledger, consumer)
    _run(worker)
    assert ledger.applied == []
    assert worker.counters.already_done == 1
    assert broker.waiting() == 0


def test_a_chunk_missing_from_the_ledger_is_dead_lettered(
    broker: MemoryBroker, consumer: MemoryQueue
) -> None:
    ledger = ScriptedLedger()
    job_id, _ = _publish(broker, ledger)
    ledger.states.clear()
    worker = _worker(ledger, consumer)
    _run(worker)
    (letter,) = broker.dead_letters()
    assert "is not in the ledger" in letter.reason
    assert letter.message is not None and letter.message.job_id == str(job_id)
    assert ledger.failed == []
    assert worker.counters.failed == 1
    assert broker.waiting() == 0


def test_a_message_without_a_job_id_is_dead_lettered(broker: MemoryBroker, consumer: MemoryQueue) -> None:
    with broker.publisher() as publisher:
        publisher.publish([ChunkMessage(job_id="not-a-uuid", chunk_no=0, account_id=1, entity_count=1)])
    worker = _worker(ScriptedLedger(), consumer)
    _run(worker)
    (letter,) = broker.dead_letters()
    assert "names no job" in letter.reason
    assert worker.counters.failed == 1


def test_transient_failures_are_retried_and_each_attempt_noted(
    broker: MemoryBroker, consumer: MemoryQueue
) -> None:
    ledger = ScriptedLedger()
    chunk = _publish(broker, ledger)
    ledger.apply_errors[chunk] = [RetryableError("deadlock detected"), RetryableError("deadlock detected")]
    worker = _worker(ledger, consumer)
    _run(worker)
    assert ledger.applied == [(*chunk, 3)]
    assert [attempt for _, _, attempt, _ in ledger.retries] == [1, 2]
    assert all("deadlock detected" in reason for *_, reason in ledger.retries)
    assert worker.counters.retries == 2
    assert broker.dead_letters() == []


def test_exhausted_retries_dead_letter_the_chunk_and_fail_it(
    broker: MemoryBroker, consumer: MemoryQueue
) -> None:
    ledger = ScriptedLedger()
    chunk = _publish(broker, ledger)
    ledger.apply_errors[chunk] = [RetryableError("deadlock")] * 5
    worker = _worker(ledger, consumer)
    _run(worker)
    ((job_id, chunk_no, reason, attempts),) = ledger.failed
    assert (job_id, chunk_no, attempts) == (*chunk, 3)
    assert "gave up after 3 attempts" in reason
    (letter,) = broker.dead_letters()
    assert (letter.reason, letter.attempts) == (reason, 3)
    assert ledger.applied == []
    assert broker.waiting() == 0


def test_a_permanent_error_fails_the_chunk_without_retrying(
    broker: MemoryBroker, consumer: MemoryQueue
) -> None:
    ledger = ScriptedLedger()
    chunk = _publish(broker, ledger)
    ledger.apply_errors[chunk] = [PermanentError("outcome count mismatch")]
    worker = _worker(ledger, consumer)
    _run(worker)
    assert ledger.retries == []
    ((_, _, reason, attempts),) = ledger.failed
    assert attempts == 1
    assert "outcome count mismatch" in reason
    assert len(broker.dead_letters()) == 1


def test_a_lost_database_is_waited_for_and_is_not_an_attempt(
    broker: MemoryBroker, consumer: MemoryQueue
) -> None:
    ledger = ScriptedLedger(outages=3)
    chunk = _publish(broker, ledger)
    worker = _worker(ledger, consumer)
    _run(worker)
    assert ledger.applied == [(*chunk, 1)]
    assert ledger.retries == []
    assert worker.counters.retries == 0


def test_stopping_between_attempts_leaves_the_delivery_for_another_worker(broker: MemoryBroker) -> None:
    ledger = ScriptedLedger()
    chunk = _publish(broker, ledger)
    stop = threading.Event()

    class StoppingLedger(ScriptedLedger):
        def note_retry(self, job_id: UUID, chunk_no: int, *, attempt: int, reason: str) -> None:
            super().note_retry(job_id, chunk_no, attempt=attempt, reason=reason)
            stop.set()  # SIGTERM arrives while the worker waits to try again

    stopping = StoppingLedger(states=ledger.states)
    stopping.apply_errors[chunk] = [RetryableError("serialization failure")]
    with broker.consumer(client_id="w-stopping") as first:
        worker = _worker(stopping, first, stop)
        worker.run(burst=True, idle_exit_seconds=0.1)
        assert worker.counters.abandoned == 1
        assert stopping.applied == []
    with broker.consumer(client_id="w-next") as second:
        _run(_worker(ledger, second))
    assert ledger.applied == [(*chunk, 1)]
    assert broker.waiting() == 0


def test_a_failure_that_cannot_be_recorded_still_acknowledges_the_dead_letter(
    broker: MemoryBroker, consumer: MemoryQueue
) -> None:
    ledger = ScriptedLedger(fail_error=PermanentError("ledger row locked out"))
    chunk = _publish(broker, ledger)
    ledger.apply_errors[chunk] = [PermanentError("bad chunk")]
    worker = _worker(ledger, consumer)
    _run(worker)
    assert len(broker.dead_letters()) == 1
    assert ledger.states[chunk] == "released"  # left open: the scheduler republishes it later
    assert worker.counters.failed == 1
    assert broker.waiting() == 0


class WorkerCrashError(BaseException):
    """Stands in for the worker process dying inside an apply (a segfault, the OOM killer): nothing in the
    worker catches it, nothing is acknowledged or recorded after it."""


def test_a_chunk_that_kills_every_worker_is_failed_as_poison_after_the_cap(broker: MemoryBroker) -> None:
    ledger = ScriptedLedger()
    poison = _publish(broker, ledger)
    healthy = _publish(broker, ledger)
    ledger.apply_errors[poison] = [WorkerCrashError("killed")] * 10
    cap = 3
    for crash in range(cap):
        member = broker.consumer(client_id=f"w-doomed-{crash}")
        with pytest.raises(WorkerCrashError):
            _run(_worker(ledger, member, poison_delivery_cap=cap))
        member.kill()  # died without closing: its claims go back to the group
        assert ledger.deliveries[poison] == crash + 1
    with broker.consumer(client_id="w-survivor") as survivor:
        worker = _worker(ledger, survivor, poison_delivery_cap=cap)
        _run(worker)
    assert ledger.deliveries[poison] == cap + 1
    ((job_id, chunk_no, reason, attempts),) = ledger.failed
    assert ((job_id, chunk_no), attempts, ledger.failed_codes) == (poison, cap, ["poison"])
    assert "delivered 4 times" in reason and "cap 3" in reason
    (letter,) = broker.dead_letters()
    assert letter.message is not None and (UUID(letter.message.job_id), letter.message.chunk_no) == poison
    assert letter.reason == reason
    assert (worker.counters.poisoned, worker.counters.failed) == (1, 1)
    assert (*healthy, 1) in ledger.applied and all(a[:2] != poison for a in ledger.applied)
    assert broker.waiting() == 0


@pytest.mark.parametrize(("delivered_before", "cap"), [(0, 3), (2, 3), (0, 1), (4, 5)])
def test_a_chunk_within_the_cap_is_applied_and_its_delivery_counted(
    broker: MemoryBroker, consumer: MemoryQueue, delivered_before: int, cap: int
) -> None:
    ledger = ScriptedLedger()
    chunk = _publish(broker, ledger)
    ledger.deliveries[chunk] = delivered_before
    worker = _worker(ledger, consumer, poison_delivery_cap=cap)
    _run(worker)
    assert ledger.applied == [(*chunk, 1)]
    assert ledger.deliveries[chunk] == delivered_before + 1
    assert (ledger.failed, broker.dead_letters(), worker.counters.poisoned) == ([], [], 0)


@pytest.mark.parametrize(("delivered_before", "cap"), [(3, 3), (7, 3), (1, 1)])
def test_a_chunk_past_the_cap_is_not_paced_nor_applied(
    broker: MemoryBroker, consumer: MemoryQueue, delivered_before: int, cap: int
) -> None:
    ledger = ScriptedLedger()
    chunk = _publish(broker, ledger)
    ledger.deliveries[chunk] = delivered_before

    class NoPacing(InProcessLimiter):
        def acquire(self, key: str, *, cost: int, rate_per_second: float, burst: int) -> Any:
            raise AssertionError("a poison chunk was paced")

    stop = threading.Event()
    worker = ChunkWorker(
        name="w-unit",
        ledger=ledger,
        consumer=consumer,
        pacer=EntityPacer(NoPacing(), namespace="unit", stop=stop),
        policy=RetryPolicy(attempts=3, wait_seconds=WAIT),
        stop=stop,
        poll_timeout=0.05,
        poison_delivery_cap=cap,
    )
    _run(worker)
    assert ledger.applied == []
    assert ledger.failed_codes == ["poison"]
    assert ledger.deliveries[chunk] == delivered_before + 1
    assert len(broker.dead_letters()) == 1
    assert broker.waiting() == 0


def test_retries_within_one_delivery_are_not_deliveries(broker: MemoryBroker, consumer: MemoryQueue) -> None:
    ledger = ScriptedLedger()
    chunk = _publish(broker, ledger)
    ledger.apply_errors[chunk] = [RetryableError("deadlock detected")] * 2
    _run(_worker(ledger, consumer, poison_delivery_cap=1))
    assert ledger.applied == [(*chunk, 3)]
    assert ledger.deliveries[chunk] == 1


def test_a_chunk_final_by_the_time_its_delivery_is_counted_is_not_applied(
    broker: MemoryBroker, consumer: MemoryQueue
) -> None:
    class FinishedMeanwhile(ScriptedLedger):
        def count_delivery(self, job_id: UUID, chunk_no: int) -> int | None:
            self.states[(job_id, chunk_no)] = "done"  # another worker's apply committed first
            return super().count_delivery(job_id, chunk_no)

    ledger = FinishedMeanwhile()
    _publish(broker, ledger)
    worker = _worker(ledger, consumer)
    _run(worker)
    assert (ledger.applied, worker.counters.already_done) == ([], 1)
    assert broker.waiting() == 0
