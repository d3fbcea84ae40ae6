"""The scale-out queue: Kafka through confluent-kafka.

Topic `<prefix>.chunks` (partition count from settings, created by `ensure_topics`), idempotent compressed
producer, one consumer group of workers with manual offset commits and cooperative-sticky rebalancing, and a
dead-letter topic `<prefix>.dead`. Clients are created lazily: constructing these objects is offline.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from typing import Any

import msgspec
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

# NewTopic is documented under confluent_kafka.admin but re-exported there without `__all__`.
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from crm_bulk.errors import PermanentError, RetryableError
from crm_bulk.queue.messages import (
    ChunkMessage,
    DeadLetter,
    decode_chunk,
    decode_dead_letter,
    encode_chunk,
    encode_dead_letter,
)
from crm_bulk.queue.protocol import CHUNKS_TOPIC, DEAD_TOPIC, Delivery, topic_name

log = logging.getLogger(__name__)
_librdkafka_log = logging.getLogger("crm_bulk.queue.librdkafka")

GROUP_SUFFIX = "workers"
# A killed worker's partitions move to the others after this long without heartbeats.
SESSION_TIMEOUT_MS = 10_000
# How long `publish` waits for the brokers to confirm; librdkafka keeps retrying in the background beyond it.
PUBLISH_TIMEOUT = 15.0
# How long `commit` keeps retrying a retriable failure (a broker restart) before giving up on that commit.
COMMIT_TIMEOUT = 30.0
# Offset-commit errors that mean "this partition is no longer ours": the new owner redelivers, which is safe.
_LOST_OWNERSHIP = {
    KafkaError.ILLEGAL_GENERATION,
    KafkaError.UNKNOWN_MEMBER_ID,
    KafkaError.REBALANCE_IN_PROGRESS,
    KafkaError.FENCED_INSTANCE_ID,
}

# Commit failures seen while a broker restarts or the coordinator moves; retried until COMMIT_TIMEOUT.
_TRANSIENT_COMMIT = {
    KafkaError._TRANSPORT,
    KafkaError._TIMED_OUT,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.NOT_COORDINATOR,
    KafkaError.REQUEST_TIMED_OUT,
}


def _log_error(err: KafkaError) -> None:
    # Broker-down errors repeat every few seconds while an outage lasts; they are warnings, not failures.
    log.warning("kafka client: %s", err)


def producer_config(bootstrap: str) -> dict[str, Any]:
    """Idempotent (no duplicates from producer retries), acks from all in-sync replicas, zstd batches."""
    return {
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "compression.type": "zstd",
        "linger.ms": 5,
        "message.timeout.ms": 300_000,
        # A broker outage logs one reconnect attempt per few seconds, not twenty per second.
        "reconnect.backoff.ms": 250,
        "reconnect.backoff.max.ms": 5_000,
        "log.connection.close": False,
        "logger": _librdkafka_log,
        "error_cb": _log_error,
    }


def consumer_config(bootstrap: str, group_id: str, client_id: str) -> dict[str, Any]:
    """Manual commits only, cooperative-sticky assignment, short session timeout for fast takeover."""
    return {
        "bootstrap.servers": bootstrap,
        "group.id": group_id,
        "client.id": client_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": "cooperative-sticky",
        "session.timeout.ms": SESSION_TIMEOUT_MS,
        "heartbeat.interval.ms": 1_000,
        # Pacing waits and retries hold a message for seconds; stay well clear of the poll deadline.
        "max.poll.interval.ms": 900_000,
        "fetch.wait.max.ms": 100,
        "topic.metadata.refresh.interval.ms": 5_000,
        # A broker outage logs one reconnect attempt per few seconds, not twenty per second.
        "reconnect.backoff.ms": 250,
        "reconnect.backoff.max.ms": 5_000,
        "log.connection.close": False,
        "logger": _librdkafka_log,
        "error_cb": _log_error,
    }


def ensure_topics(bootstrap: str, *, prefix: str, partitions: int, timeout: float = 30.0) -> list[str]:
    """Create `<prefix>.chunks` (`partitions` partitions) and `<prefix>.dead` if missing; return new ones."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 4})
    wanted = {topic_name(prefix, CHUNKS_TOPIC): partitions, topic_name(prefix, DEAD_TOPIC): 1}
    try:
        existing = admin.list_topics(timeout=timeout).topics
    except KafkaException as exc:
        raise RetryableError(f"kafka {bootstrap}: cannot list topics: {exc}") from exc
    for name, count in wanted.items():
        if name in existing and len(existing[name].partitions) != count and name.endswith(CHUNKS_TOPIC):
            log.warning(
                "topic %s has %d partitions, settings ask for %d; leaving it as it is",
                name,
                len(existing[name].partitions),
                count,
            )
    missing = [
        NewTopic(name, num_partitions=n, replication_factor=-1)
        for name, n in wanted.items()
        if name not in existing
    ]
    if not missing:
        return []
    created: list[str] = []
    for name, future in admin.create_topics(
        missing, operation_timeout=timeout, request_timeout=timeout
    ).items():
        try:
            future.result()
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise RetryableError(f"kafka {bootstrap}: cannot create topic {name}: {exc}") from exc
            continue
        log.info("created topic %s", name)
        created.append(name)
    return created


def delete_topics(bootstrap: str, *, prefix: str, timeout: float = 30.0) -> None:
    """Delete both topics of `prefix` (test and benchmark clean-up)."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 4})
    names = [topic_name(prefix, CHUNKS_TOPIC), topic_name(prefix, DEAD_TOPIC)]
    for name, future in admin.delete_topics(names, operation_timeout=timeout).items():
        try:
            future.result()
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise
            log.debug("topic %s did not exist", name)


class _DeliveryReport:
    """Collects per-message delivery results of one `produce` burst."""

    def __init__(self) -> None:
        self.delivered = 0
        self.errors: list[str] = []

    def __call__(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self.delivered += 1
        else:
            self.errors.append(f"{msg.topic()}: {err}")


def _produce_all(
    producer: Producer, topic: str, items: Sequence[tuple[bytes, bytes]], timeout: float
) -> None:
    """Produce (key, value) pairs and wait for every delivery report; RetryableError unless all confirmed."""
    report = _DeliveryReport()
    for key, value in items:
        while True:
            try:
                producer.produce(topic, value=value, key=key, on_delivery=report)
                break
            except BufferError:
                # Local queue full (broker slow or down): serve delivery reports, then try again.
                producer.poll(0.1)
    remaining = producer.flush(timeout)
    if remaining or report.errors or report.delivered < len(items):
        detail = "; ".join(report.errors[:3]) or f"{remaining} messages unconfirmed after {timeout:.0f}s"
        raise RetryableError(f"kafka publish to {topic}: {report.delivered}/{len(items)} confirmed: {detail}")


class KafkaPublisher:
    """Publishes chunk messages (the scheduler's side)."""

    def __init__(
        self, bootstrap: str, *, topic_prefix: str = "crm-bulk", timeout: float = PUBLISH_TIMEOUT
    ) -> None:
        self._bootstrap = bootstrap
        self.topic = topic_name(topic_prefix, CHUNKS_TOPIC)
        self._timeout = timeout
        self._producer: Producer | None = None
        self.published = 0

    def __repr__(self) -> str:
        return f"KafkaPublisher({self._bootstrap!r}, topic={self.topic!r}, published={self.published})"

    def __enter__(self) -> KafkaPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def publish(self, messages: Sequence[ChunkMessage]) -> None:
        """Produce every message keyed by job/chunk and wait for the brokers' acknowledgements."""
        if not messages:
            return
        if self._producer is None:
            self._producer = Producer(producer_config(self._bootstrap))
        _produce_all(self._producer, self.topic, [(m.key, encode_chunk(m)) for m in messages], self._timeout)
        self.published += len(messages)

    def close(self) -> None:
        """Flush what is still queued locally."""
        if self._producer is not None:
            remaining = self._producer.flush(self._timeout)
            if remaining:
                log.warning("%d messages to %s were still unconfirmed at close", remaining, self.topic)
            self._producer = None


class KafkaConsumer:
    """One worker's consumer in the `<prefix>.workers` group, with a producer for dead letters."""

    def __init__(
        self,
        bootstrap: str,
        *,
        topic_prefix: str = "crm-bulk",
        client_id: str = "",
        commit_timeout: float = COMMIT_TIMEOUT,
    ) -> None:
        self._bootstrap = bootstrap
        self.topic = topic_name(topic_prefix, CHUNKS_TOPIC)
        self.dead_topic = topic_name(topic_prefix, DEAD_TOPIC)
        self.group_id = topic_name(topic_prefix, GROUP_SUFFIX)
        self._client_id = client_id or f"crm-bulk-{uuid.uuid4().hex[:8]}"
        self._commit_timeout = commit_timeout
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._assigned: set[int] = set()
        self.consumed = 0
        self.committed = 0
        self.rebalances = 0

    def __repr__(self) -> str:
        return (
            f"KafkaConsumer({self._client_id!r}, topic={self.topic!r}, partitions={sorted(self._assigned)}, "
            f"consumed={self.consumed}, committed={self.committed}, rebalances={self.rebalances})"
        )

    def __enter__(self) -> KafkaConsumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def assigned_partitions(self) -> frozenset[int]:
        """Partitions of the chunks topic this member owns right now."""
        return frozenset(self._assigned)

    def _client(self) -> Consumer:
        if self._consumer is None:
            consumer = Consumer(consumer_config(self._bootstrap, self.group_id, self._client_id))
            consumer.subscribe(
                [self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
            )
            self._consumer = consumer
        return self._consumer

    # Rebalance callbacks: with the cooperative protocol the client applies the incremental change itself.
    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.rebalances += 1
        self._assigned.update(p.partition for p in partitions)
        log.info("%s assigned %s: %s", self._client_id, self.topic, sorted(p.partition for p in partitions))

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.rebalances += 1
        self._assigned.difference_update(p.partition for p in partitions)
        log.info("%s revoked %s: %s", self._client_id, self.topic, sorted(p.partition for p in partitions))

    def _on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.rebalances += 1
        self._assigned.difference_update(p.partition for p in partitions)
        log.warning("%s lost %s: %s", self._client_id, self.topic, sorted(p.partition for p in partitions))

    def consume(self, *, max_messages: int, timeout: float) -> list[Delivery]:
        """Fetch up to `max_messages`; undecodable messages go to the dead-letter topic and are committed."""
        try:
            messages = self._client().consume(num_messages=max_messages, timeout=timeout)
        except KafkaException as exc:
            raise RetryableError(f"kafka consume from {self.topic}: {exc}") from exc
        deliveries: list[Delivery] = []
        # Partitions whose rest of the batch is dropped: a poison message behind deliveries of this batch is
        # handled on the next call, so committing past it never covers an unhandled delivery.
        deferred: set[int] = set()
        for msg in messages:
            err = msg.error()
            if err is not None:
                if err.fatal():
                    raise PermanentError(f"kafka consumer {self._client_id} fatal error: {err}")
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("kafka consume %s [%s]: %s", self.topic, msg.partition(), err)
                continue
            partition, offset = int(msg.partition() or 0), int(msg.offset() or 0)
            if partition in deferred:
                continue
            raw = msg.value() or b""
            try:
                message = decode_chunk(raw)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                if any(d.partition == partition for d in deliveries):
                    self._client().seek(TopicPartition(self.topic, partition, offset))
                    deferred.add(partition)
                    continue
                log.error(
                    "%s [%d] offset %d is not a chunk message (%s); moving it to %s",
                    self.topic,
                    partition,
                    offset,
                    exc,
                    self.dead_topic,
                )
                letter = DeadLetter(
                    reason=f"undecodable message: {exc}",
                    worker=self._client_id,
                    failed_at=time.time(),
                    attempts=0,
                    raw=raw,
                )
                self._send_dead(msg.key() or b"", letter)
                self._commit_offsets({partition: offset + 1})
                continue
            deliveries.append(Delivery(message=message, partition=partition, offset=offset))
        self.consumed += len(deliveries)
        return deliveries

    def commit(self, deliveries: Sequence[Delivery]) -> None:
        """Commit offset+1 of the last delivery per partition, synchronously."""
        offsets: dict[int, int] = {}
        for d in deliveries:
            offsets[d.partition] = max(offsets.get(d.partition, 0), d.offset + 1)
        if offsets:
            self._commit_offsets(offsets)
            self.committed += len(deliveries)

    def _commit_offsets(self, offsets: dict[int, int]) -> None:
        tps = [TopicPartition(self.topic, p, o) for p, o in sorted(offsets.items())]
        deadline = time.monotonic() + self._commit_timeout
        while True:
            err: KafkaError | None = None
            try:
                result = self._client().commit(offsets=tps, asynchronous=False)
                err = next((tp.error for tp in (result or []) if tp.error is not None), None)
            except KafkaException as exc:
                err = exc.args[0]
            if err is None:
                return
            if err.code() in _LOST_OWNERSHIP:
                # The partition moved on: its new owner redelivers, and the ledger turns that into a no-op.
                log.info("commit of %s %s skipped, partition ownership changed: %s", self.topic, offsets, err)
                return
            if not err.retriable() and err.code() not in _TRANSIENT_COMMIT:
                raise RetryableError(f"kafka commit {self.topic} {offsets}: {err}")
            if time.monotonic() >= deadline:
                raise RetryableError(f"kafka commit {self.topic} {offsets} still failing: {err}")
            log.warning("kafka commit %s %s failed (%s); retrying", self.topic, offsets, err)
            time.sleep(0.5)

    def dead_letter(self, delivery: Delivery, *, reason: str, worker: str, attempts: int) -> None:
        """Produce the dead letter to `<prefix>.dead` and wait for its acknowledgement."""
        letter = DeadLetter(
            reason=reason, worker=worker, failed_at=time.time(), attempts=attempts, message=delivery.message
        )
        self._send_dead(delivery.message.key, letter)

    def _send_dead(self, key: bytes, letter: DeadLetter) -> None:
        if self._producer is None:
            self._producer = Producer(producer_config(self._bootstrap))
        _produce_all(self._producer, self.dead_topic, [(key, encode_dead_letter(letter))], PUBLISH_TIMEOUT)

    def lag(self) -> int | None:
        """Messages behind the high watermark on this consumer's partitions (cached watermarks)."""
        if self._consumer is None:
            return None
        try:
            assignment = self._consumer.assignment()
            if not assignment:
                return 0
            total = 0
            for tp in self._consumer.position(assignment):
                low, high = self._consumer.get_watermark_offsets(tp, cached=True)
                if high < 0:
                    return None
                position = tp.offset if tp.offset >= 0 else low
                total += max(0, high - max(position, 0))
        except KafkaException as exc:
            log.warning("kafka lag of %s unknown: %s", self.topic, exc)
            return None
        return total

    def close(self) -> None:
        """Leave the group (uncommitted messages go to the remaining members) and flush dead letters."""
        if self._consumer is not None:
            try:
                self._consumer.close()
            except KafkaException as exc:
                log.warning("kafka consumer %s did not close cleanly: %s", self._client_id, exc)
            self._consumer = None
        if self._producer is not None:
            remaining = self._producer.flush(PUBLISH_TIMEOUT)
            if remaining:
                log.warning(
                    "%d dead letters to %s were still unconfirmed at close", remaining, self.dead_topic
                )
            self._producer = None


class KafkaDeadLetterReader:
    """Reads `<prefix>.dead` from the beginning with a throw-away group (operators, tests)."""

    def __init__(self, bootstrap: str, *, topic_prefix: str = "crm-bulk") -> None:
        self._bootstrap = bootstrap
        self.dead_topic = topic_name(topic_prefix, DEAD_TOPIC)

    def read_dead_letters(self, *, timeout: float = 10.0) -> list[DeadLetter]:
        """Everything up to the current end of the topic; waits at most `timeout` for the broker."""
        consumer = Consumer(
            consumer_config(self._bootstrap, f"dead-reader-{uuid.uuid4().hex}", "dead-reader")
            | {"enable.partition.eof": True}
        )
        letters: list[DeadLetter] = []
        try:
            meta = consumer.list_topics(self.dead_topic, timeout=timeout).topics.get(self.dead_topic)
            if meta is None or meta.error is not None:
                return letters
            partitions = [TopicPartition(self.dead_topic, p, 0) for p in meta.partitions]
            consumer.assign(partitions)
            at_end: set[int] = set()
            deadline = time.monotonic() + timeout
            while len(at_end) < len(partitions) and time.monotonic() < deadline:
                for msg in consumer.consume(num_messages=100, timeout=0.5):
                    err = msg.error()
                    if err is None:
                        letters.append(decode_dead_letter(msg.value() or b""))
                    elif err.code() == KafkaError._PARTITION_EOF:
                        at_end.add(int(msg.partition() or 0))
                    else:
                        log.warning("reading %s: %s", self.dead_topic, err)
        finally:
            consumer.close()
        return letters

    def close(self) -> None:
        """Nothing to release: each read uses a consumer of its own."""
