"""The queue's retry call sites, without services: waiting for the queue at start-up and the Kafka offset
commit; and the Postgres queue never loading the Kafka client."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import threading
from collections.abc import Callable

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from crm_bulk import queue
from crm_bulk.errors import RetryableError
from crm_bulk.queue.kafka import consumer as kafka_consumer
from crm_bulk.queue.kafka.consumer import KafkaConsumer
from crm_bulk.settings import Settings

SETTINGS = Settings(database_url="postgresql://localhost:1/none")


class _RecordingStop(threading.Event):
    """A stop event that records each wait and returns at once, never stopping."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float | None] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout)
        return False


def _failing(times: int, error: Exception) -> Callable[[Settings], list[str]]:
    calls = {"n": 0}

    def ensure(_settings: Settings) -> list[str]:
        calls["n"] += 1
        if calls["n"] <= times:
            raise error
        return []

    return ensure


def test_waiting_for_the_queue_backs_off_as_before_and_succeeds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(queue, "ensure_queue", _failing(6, RetryableError("broker starting")))
    stop = _RecordingStop()
    assert queue.wait_for_queue(SETTINGS, stop) is True
    assert stop.waits == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_waiting_for_the_queue_is_false_when_stopped_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(queue, "ensure_queue", _failing(1, AssertionError("must not be called")))
    stop = threading.Event()
    stop.set()
    assert queue.wait_for_queue(SETTINGS, stop) is False


def test_waiting_for_the_queue_ends_false_when_stopped_during_a_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(queue, "ensure_queue", _failing(10**9, RetryableError("broker down")))
    stop = threading.Event()
    timer = threading.Timer(0.2, stop.set)
    timer.start()
    assert queue.wait_for_queue(SETTINGS, stop) is False
    timer.join()


def test_waiting_for_the_queue_does_not_retry_other_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(queue, "ensure_queue", _failing(1, ValueError("bad settings")))
    with pytest.raises(ValueError, match="bad settings"):
        queue.wait_for_queue(SETTINGS, threading.Event())


class _FakeClient:
    """Answers `commit` with the queued outcomes: an error code to raise, or None for success."""

    def __init__(self, outcomes: list[KafkaError | None]) -> None:
        self.outcomes = outcomes
        self.calls = 0

    def commit(self, *, offsets: list[TopicPartition], asynchronous: bool) -> list[TopicPartition]:
        self.calls += 1
        outcome = self.outcomes[min(self.calls, len(self.outcomes)) - 1]
        if outcome is not None:
            raise KafkaException(outcome)
        return offsets


def _consumer(
    monkeypatch: pytest.MonkeyPatch, outcomes: list[KafkaError | None], *, commit_timeout: float = 30.0
) -> tuple[KafkaConsumer, _FakeClient]:
    fast = dataclasses.replace(kafka_consumer.COMMIT_RETRY, wait_seconds=0.01)
    monkeypatch.setattr(kafka_consumer, "COMMIT_RETRY", fast)
    consumer = KafkaConsumer("localhost:1", topic_prefix="t", commit_timeout=commit_timeout)
    client = _FakeClient(outcomes)
    monkeypatch.setattr(consumer, "_client", lambda: client)
    return consumer, client


def _deliveries() -> list[queue.Delivery]:
    message = queue.ChunkMessage(job_id="j", chunk_no=1, account_id=1, entity_count=1)
    return [queue.Delivery(message=message, partition=2, offset=41)]


@pytest.mark.parametrize(
    "error",
    [
        KafkaError(KafkaError._TRANSPORT, "broker down"),
        KafkaError(KafkaError.COORDINATOR_NOT_AVAILABLE, "moving"),
        KafkaError(KafkaError.OFFSET_OUT_OF_RANGE, "flagged retriable", retriable=True),
    ],
)
def test_a_transient_commit_failure_is_retried_until_it_sticks(
    monkeypatch: pytest.MonkeyPatch, error: KafkaError
) -> None:
    consumer, client = _consumer(monkeypatch, [error, error, None])
    consumer.commit(_deliveries())
    assert (client.calls, consumer.committed) == (3, 1)


def test_a_commit_after_ownership_moved_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    consumer, client = _consumer(monkeypatch, [KafkaError(KafkaError.UNKNOWN_MEMBER_ID, "gone")])
    consumer.commit(_deliveries())
    assert client.calls == 1


def test_a_permanent_commit_failure_is_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    consumer, client = _consumer(monkeypatch, [KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED, "denied")])
    with pytest.raises(RetryableError, match=r"kafka commit t\.chunks \{2: 42\}: ") as caught:
        consumer.commit(_deliveries())
    assert "still failing" not in str(caught.value)
    assert (client.calls, consumer.committed) == (1, 0)


def test_a_commit_still_failing_at_the_commit_timeout_gives_up(monkeypatch: pytest.MonkeyPatch) -> None:
    consumer, client = _consumer(
        monkeypatch, [KafkaError(KafkaError._TRANSPORT, "broker down")], commit_timeout=0.1
    )
    with pytest.raises(RetryableError, match="still failing"):
        consumer.commit(_deliveries())
    assert client.calls >= 2


def test_the_postgres_queue_never_loads_the_kafka_client() -> None:
    script = (
        "import sys\n"
        "from crm_bulk.queue import ensure_queue, open_consumer, open_publisher\n"
        "from crm_bulk.settings import Settings\n"
        "settings = Settings(database_url='postgresql://localhost:1/none')\n"
        "open_publisher(settings).close()\n"
        "open_consumer(settings, client_id='w').close()\n"
        "assert ensure_queue(settings) == []\n"
        "assert 'confluent_kafka' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True)
