"""The test Kafka broker serves topics, keyed produce, group consume with manual commits, topic deletion."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

# NewTopic is documented under confluent_kafka.admin but re-exported there without `__all__`.
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from crm_bulk.retry import RetryPolicy, on_types

pytestmark = pytest.mark.kafka

PARTITIONS = 3
KEYS = [f"account-{n}" for n in range(5)]
PER_KEY = 40
DEADLINE_SECONDS = 30.0
# The broker's metadata catches up with the controller's deletion asynchronously: look every 0.2 s, for 10 s.
DELETION_VISIBLE = RetryPolicy(attempts=50, wait_seconds=0.2, retry_on=on_types(AssertionError))


@pytest.fixture
def admin(kafka_bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": kafka_bootstrap})


@pytest.fixture
def topic(admin: AdminClient) -> Iterator[str]:
    """A fresh multi-partition topic, deleted (and checked deleted) at the end."""
    name = f"test-kafka-service-{uuid.uuid4().hex[:12]}"
    futures = admin.create_topics([NewTopic(name, num_partitions=PARTITIONS, replication_factor=1)])
    futures[name].result(timeout=30)
    yield name
    admin.delete_topics([name], operation_timeout=30)[name].result(timeout=31)

    def deleted() -> None:
        assert name not in admin.list_topics(timeout=10).topics

    DELETION_VISIBLE.call(deleted, what=f"deletion of topic {name}")


def _produce(bootstrap: str, topic: str, records: list[tuple[str, str]]) -> None:
    failures: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            failures.append(err)

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True})
    for key, value in records:
        producer.produce(topic, key=key.encode(), value=value.encode(), on_delivery=on_delivery)
        producer.poll(0)
    assert producer.flush(DEADLINE_SECONDS) == 0
    assert failures == []


def _consumer(bootstrap: str, group: str) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )


def _consume_committing(consumer: Consumer, count: int) -> list[Message]:
    """Read `count` messages, committing each batch synchronously once it is handled."""
    got: list[Message] = []
    deadline = time.monotonic() + DEADLINE_SECONDS
    while len(got) < count and time.monotonic() < deadline:
        batch = consumer.consume(num_messages=100, timeout=1.0)
        good = []
        for msg in batch:
            err = msg.error()
            assert err is None or err.code() == KafkaError._PARTITION_EOF, str(err)
            if err is None:
                good.append(msg)
        if good:
            got.extend(good)
            consumer.commit(asynchronous=False)
    return got


def test_keyed_messages_come_back_in_order_per_key_and_commits_stick(
    kafka_bootstrap: str, topic: str
) -> None:
    records = [(key, f"{key}:{seq}") for seq in range(PER_KEY) for key in KEYS]
    _produce(kafka_bootstrap, topic, records)

    group = f"{topic}-group"
    consumer = _consumer(kafka_bootstrap, group)
    try:
        consumer.subscribe([topic])
        got = _consume_committing(consumer, len(records))
        assert len(got) == len(records)

        by_key: dict[str, list[str]] = {key: [] for key in KEYS}
        partition_of: dict[str, set[int]] = {key: set() for key in KEYS}
        for msg in got:
            key_bytes, value_bytes = msg.key(), msg.value()
            assert key_bytes is not None and value_bytes is not None
            key = key_bytes.decode()
            by_key[key].append(value_bytes.decode())
            partition = msg.partition()
            assert partition is not None
            partition_of[key].add(partition)
        for key in KEYS:
            assert by_key[key] == [f"{key}:{seq}" for seq in range(PER_KEY)]
            assert len(partition_of[key]) == 1, "one key must stay on one partition"

        # The synchronous commits reached the broker: every partition is committed up to its end.
        committed = consumer.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=10)
        for tp in committed:
            _low, high = consumer.get_watermark_offsets(tp, timeout=10)
            assert tp.error is None
            assert tp.offset == high
    finally:
        consumer.close()

    # A new member of the same group resumes after the commits: it sees only what is produced later.
    _produce(kafka_bootstrap, topic, [("late", "late:0")])
    resumed = _consumer(kafka_bootstrap, group)
    try:
        resumed.subscribe([topic])
        again = _consume_committing(resumed, 1)
        assert [(m.key(), m.value()) for m in again] == [(b"late", b"late:0")]
        assert resumed.consume(num_messages=10, timeout=2.0) == []
    finally:
        resumed.close()


@pytest.mark.parametrize("partitions", [1, PARTITIONS])
def test_created_topic_has_the_requested_partitions(admin: AdminClient, partitions: int) -> None:
    name = f"test-kafka-partitions-{uuid.uuid4().hex[:12]}"
    admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])[name].result(30)
    try:
        metadata = admin.list_topics(topic=name, timeout=10).topics[name]
        assert metadata.error is None
        assert sorted(metadata.partitions) == list(range(partitions))
    finally:
        admin.delete_topics([name], operation_timeout=30)[name].result(timeout=31)
