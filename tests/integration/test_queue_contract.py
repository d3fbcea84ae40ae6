"""One contract, every queue backend: the Postgres table, Kafka and the in-memory twin behave the same to the
worker."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from multiprocessing.connection import Connection

import psycopg
import pytest
from confluent_kafka import Producer

from crm_bulk.queue.kafka import (
    KafkaConsumer,
    KafkaDeadLetterReader,
    KafkaPublisher,
    delete_topics,
    ensure_topics,
)
from crm_bulk.queue.memory_queue import MemoryBroker
from crm_bulk.queue.messages import ChunkMessage
from crm_bulk.queue.postgres_queue import PostgresQueue
from crm_bulk.queue.protocol import ChunkConsumer, ChunkPublisher, DeadLetterReader, Delivery

PARTITIONS = 4
DEADLINE = 40.0
# The in-memory broker lives in the test's process, out of reach of a consumer in a child process: a test
# that kills one runs on the real backends only (the twin's `MemoryQueue.kill()` is covered in
# tests/unit/test_memory_queue.py).
PROCESS_BACKENDS = ["postgres", pytest.param("kafka", marks=pytest.mark.kafka)]


@dataclass
class Backend:
    """How one backend is opened for a test, under a topic prefix of its own."""

    name: str
    publisher: Callable[[], ChunkPublisher]
    consumer: Callable[[str], ChunkConsumer]
    reader: Callable[[], DeadLetterReader]
    publish_raw: Callable[[bytes], None]
    spec: tuple[str, str, str]  # (kind, address, prefix) for a child process


def _open_consumer(kind: str, address: str, prefix: str, client_id: str) -> ChunkConsumer:
    if kind == "kafka":
        return KafkaConsumer(address, topic_prefix=prefix, client_id=client_id)
    return PostgresQueue(address, topic_prefix=prefix)


def _postgres_backend(database_url: str) -> Backend:
    prefix = f"test-{uuid.uuid4().hex[:8]}"

    def publish_raw(raw: bytes) -> None:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO queue_messages (topic, body) VALUES (%s, %s)", (f"{prefix}.chunks", raw)
            )

    return Backend(
        name="postgres",
        publisher=lambda: PostgresQueue(database_url, topic_prefix=prefix),
        consumer=lambda client_id: PostgresQueue(database_url, topic_prefix=prefix),
        reader=lambda: PostgresQueue(database_url, topic_prefix=prefix),
        publish_raw=publish_raw,
        spec=("postgres", database_url, prefix),
    )


def _kafka_backend(bootstrap: str, prefix: str) -> Backend:
    def publish_raw(raw: bytes) -> None:
        producer = Producer({"bootstrap.servers": bootstrap})
        producer.produce(f"{prefix}.chunks", value=raw, key=b"raw")
        assert producer.flush(15) == 0

    return Backend(
        name="kafka",
        publisher=lambda: KafkaPublisher(bootstrap, topic_prefix=prefix),
        consumer=lambda client_id: KafkaConsumer(bootstrap, topic_prefix=prefix, client_id=client_id),
        reader=lambda: KafkaDeadLetterReader(bootstrap, topic_prefix=prefix),
        publish_raw=publish_raw,
        spec=("kafka", bootstrap, prefix),
    )


def _memory_backend() -> Backend:
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    broker = MemoryBroker(topic_prefix=prefix)
    return Backend(
        name="memory",
        publisher=broker.publisher,
        consumer=lambda client_id: broker.consumer(client_id=client_id),
        reader=broker.dead_letter_reader,
        publish_raw=broker.publish_raw,
        spec=("memory", "", prefix),
    )


@pytest.fixture(params=["postgres", pytest.param("kafka", marks=pytest.mark.kafka), "memory"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """Each test runs once per backend, on fresh topics."""
    if request.param == "memory":
        yield _memory_backend()
        return
    if request.param == "postgres":
        yield _postgres_backend(request.getfixturevalue("database_url"))
        return
    bootstrap = request.getfixturevalue("kafka_bootstrap")
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    ensure_topics(bootstrap, prefix=prefix, partitions=PARTITIONS)
    yield _kafka_backend(bootstrap, prefix)
    delete_topics(bootstrap, prefix=prefix)


def _messages(count: int, *, job: str | None = None) -> list[ChunkMessage]:
    job_id = job or str(uuid.uuid4())
    return [ChunkMessage(job_id=job_id, chunk_no=n, account_id=7, entity_count=100 + n) for n in range(count)]


def _drain(
    consumer: ChunkConsumer, expected: int, *, commit: bool, deadline: float = DEADLINE
) -> list[Delivery]:
    """Consume until `expected` deliveries arrived (or the deadline passed)."""
    got: list[Delivery] = []
    end = time.monotonic() + deadline
    while len(got) < expected and time.monotonic() < end:
        batch = consumer.consume(max_messages=10, timeout=0.5)
        got.extend(batch)
        if commit and batch:
            consumer.commit(batch)
    return got


def _quiet(consumer: ChunkConsumer, seconds: float) -> list[Delivery]:
    """Whatever arrives within `seconds` (expected: nothing)."""
    got: list[Delivery] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        got.extend(consumer.consume(max_messages=10, timeout=0.5))
    return got


def _ids(deliveries: list[Delivery]) -> list[tuple[str, int]]:
    return sorted((d.message.job_id, d.message.chunk_no) for d in deliveries)


def test_published_messages_arrive_intact_once_and_stay_gone_after_commit(backend: Backend) -> None:
    sent = _messages(25)
    with backend.publisher() as publisher:
        publisher.publish(sent)
    with backend.consumer("c1") as consumer:
        got = _drain(consumer, len(sent), commit=True)
        assert sorted((d.message for d in got), key=lambda m: m.chunk_no) == sent
        assert consumer.lag() == 0
    with backend.consumer("c2") as consumer:
        assert _quiet(consumer, 3.0) == []


def test_uncommitted_deliveries_come_back_after_close(backend: Backend) -> None:
    sent = _messages(12)
    with backend.publisher() as publisher:
        publisher.publish(sent)
    with backend.consumer("c1") as consumer:
        first = _drain(consumer, len(sent), commit=False)
        assert len(first) == len(sent)
    with backend.consumer("c2") as consumer:
        again = _drain(consumer, len(sent), commit=True)
    assert _ids(again) == _ids(first)


@pytest.mark.parametrize("committed", [1, 5])
def test_only_the_uncommitted_rest_is_redelivered(backend: Backend, committed: int) -> None:
    sent = _messages(10)
    with backend.publisher() as publisher:
        publisher.publish(sent)
    with backend.consumer("c1") as consumer:
        got = _drain(consumer, len(sent), commit=False)
        assert len(got) == len(sent)
        consumer.commit(got[:committed])
    with backend.consumer("c2") as consumer:
        rest = _drain(consumer, len(sent) - committed, commit=True)
        assert _quiet(consumer, 2.0) == []
    assert _ids(rest) == _ids(got[committed:])


def test_a_consumer_does_not_see_its_own_unacknowledged_deliveries_again(backend: Backend) -> None:
    with backend.publisher() as publisher:
        publisher.publish(_messages(3))
    with backend.consumer("c1") as consumer:
        got = _drain(consumer, 3, commit=False)
        assert len(got) == 3
        assert _quiet(consumer, 2.0) == []
        consumer.commit(got)


def _wait_ready(consumers: list[ChunkConsumer]) -> None:
    """Kafka members own partitions only after the group has settled; the table queue is always ready."""
    end = time.monotonic() + DEADLINE
    while time.monotonic() < end:
        owned = [getattr(c, "assigned_partitions", None) for c in consumers]
        if all(o is None for o in owned):
            return
        if all(o for o in owned) and sum(len(o or ()) for o in owned) == PARTITIONS:
            return
        for c in consumers:
            assert c.consume(max_messages=1, timeout=0.2) == []
    raise AssertionError("consumer group did not settle")


def test_group_members_share_the_work_without_overlap(backend: Backend) -> None:
    sent = _messages(120)
    with backend.consumer("c1") as c1, backend.consumer("c2") as c2:
        _wait_ready([c1, c2])
        with backend.publisher() as publisher:
            publisher.publish(sent)
        seen: dict[str, list[Delivery]] = {"c1": [], "c2": []}
        end = time.monotonic() + DEADLINE
        while sum(map(len, seen.values())) < len(sent) and time.monotonic() < end:
            for name, consumer in (("c1", c1), ("c2", c2)):
                batch = consumer.consume(max_messages=3, timeout=0.1)
                consumer.commit(batch)
                seen[name].extend(batch)
    assert _ids(seen["c1"] + seen["c2"]) == sorted((m.job_id, m.chunk_no) for m in sent)
    assert seen["c1"] and seen["c2"]


def test_dead_letters_keep_the_message_and_the_reason(backend: Backend) -> None:
    sent = _messages(2)
    with backend.publisher() as publisher:
        publisher.publish(sent)
    with backend.consumer("c1") as consumer:
        got = _drain(consumer, 2, commit=False)
        target = next(d for d in got if d.message.chunk_no == 1)
        consumer.dead_letter(target, reason="deadlock detected (3 attempts)", worker="w-1", attempts=3)
        consumer.commit(got)
    with closing(backend.reader()) as reader:
        letters = reader.read_dead_letters(timeout=15)
    assert [(x.message, x.reason, x.worker, x.attempts) for x in letters] == [
        (sent[1], "deadlock detected (3 attempts)", "w-1", 3)
    ]


def test_an_undecodable_message_is_dead_lettered_and_not_delivered(backend: Backend) -> None:
    backend.publish_raw(b"\xc1 not msgpack")
    sent = _messages(1)
    with backend.publisher() as publisher:
        publisher.publish(sent)
    with backend.consumer("c1") as consumer:
        got = _drain(consumer, 1, commit=True)
        assert [d.message for d in got] == sent
        assert _quiet(consumer, 2.0) == []
    with closing(backend.reader()) as reader:
        letters = reader.read_dead_letters(timeout=15)
    assert len(letters) == 1
    assert letters[0].raw == b"\xc1 not msgpack"
    assert letters[0].message is None
    assert "undecodable" in letters[0].reason


def _hold_without_commit(spec: tuple[str, str, str], expected: int, ready: Connection) -> None:
    """Child: consume everything, never commit, report, then wait to be killed."""
    consumer = _open_consumer(*spec, client_id="doomed")
    got = _drain(consumer, expected, commit=False)
    ready.send(len(got))
    time.sleep(300)


@pytest.mark.parametrize("backend", PROCESS_BACKENDS, indirect=True)
def test_deliveries_of_a_killed_consumer_reach_another_member(backend: Backend) -> None:
    sent = _messages(8)
    with backend.publisher() as publisher:
        publisher.publish(sent)
    ctx = multiprocessing.get_context("spawn")
    parent_end, child_end = ctx.Pipe()
    child = ctx.Process(target=_hold_without_commit, args=(backend.spec, len(sent), child_end))
    child.start()
    try:
        assert parent_end.poll(DEADLINE), "child consumer got nothing"
        assert parent_end.recv() == len(sent)
    finally:
        assert child.pid is not None
        os.kill(child.pid, signal.SIGKILL)
        child.join(10)
    with backend.consumer("survivor") as consumer:
        # Kafka hands the partitions over after the dead member's session times out (10 s).
        got = _drain(consumer, len(sent), commit=True, deadline=DEADLINE)
    assert _ids(got) == sorted((m.job_id, m.chunk_no) for m in sent)
