"""Consuming from Kafka: one worker's member of the `<prefix>.workers` group, with manual offset commits,
cooperative-sticky rebalancing and a producer of its own for dead letters."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from crm_bulk.errors import PermanentError, RetryableError
from crm_bulk.queue.kafka.configuration import PUBLISH_TIMEOUT, consumer_config, group_name, producer_config
from crm_bulk.queue.kafka.producer import flush_at_close, produce_all
from crm_bulk.queue.messages import (
    ChunkMessage,
    DeadLetter,
    encode_dead_letter,
    failed_chunk_letter,
    read_chunk,
)
from crm_bulk.queue.protocol import CHUNKS_TOPIC, DEAD_TOPIC, ClosingContext, Delivery, topic_name
from crm_bulk.retry import RetryPolicy, on_types

log = logging.getLogger(__name__)

# How long `commit` keeps retrying a retriable failure (a broker restart) before giving up on that commit.
COMMIT_TIMEOUT = 30.0
# Offset-commit errors that mean "this partition is no longer ours": the new owner redelivers, which is safe.
_LOST_OWNERSHIP = {
    KafkaError.ILLEGAL_GENERATION,
    KafkaError.UNKNOWN_MEMBER_ID,
    KafkaError.REBALANCE_IN_PROGRESS,
    KafkaError.FENCED_INSTANCE_ID,
}

# Commit failures seen while a broker restarts or the coordinator moves; retried until the commit timeout.
_TRANSIENT_COMMIT = {
    KafkaError._TRANSPORT,
    KafkaError._TIMED_OUT,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.NOT_COORDINATOR,
    KafkaError.REQUEST_TIMED_OUT,
}


class _CommitNotYetAcceptedError(RetryableError):
    """A transient commit failure while the commit timeout has not run out."""


# Every half second until the consumer's commit timeout, which the attempt itself checks: a give-up is a
# plain RetryableError, never retried.
COMMIT_RETRY = RetryPolicy(attempts=None, wait_seconds=0.5, retry_on=on_types(_CommitNotYetAcceptedError))


class KafkaConsumer(ClosingContext):
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
        self.group_id = group_name(topic_prefix)
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
            if not self._is_record(msg):
                continue
            partition, offset = int(msg.partition() or 0), int(msg.offset() or 0)
            if partition in deferred:
                continue
            read = read_chunk(msg.value() or b"", worker=self._client_id)
            if isinstance(read, ChunkMessage):
                deliveries.append(Delivery(message=read, partition=partition, offset=offset))
            elif any(d.partition == partition for d in deliveries):
                self._client().seek(TopicPartition(self.topic, partition, offset))
                deferred.add(partition)
            else:
                self._bury(msg, partition, offset, read)
        self.consumed += len(deliveries)
        return deliveries

    def _is_record(self, msg: Message) -> bool:
        """False for the client's events (end of partition, broker errors); fatal errors raise."""
        err = msg.error()
        if err is None:
            return True
        if err.fatal():
            raise PermanentError(f"kafka consumer {self._client_id} fatal error: {err}")
        if err.code() != KafkaError._PARTITION_EOF:
            log.warning("kafka consume %s [%s]: %s", self.topic, msg.partition(), err)
        return False

    def _bury(self, msg: Message, partition: int, offset: int, letter: DeadLetter) -> None:
        """Move an undecodable message to the dead-letter topic and commit past it."""
        log.error(
            "%s [%d] offset %d is not a chunk message (%s); moving it to %s",
            self.topic,
            partition,
            offset,
            letter.reason,
            self.dead_topic,
        )
        self._send_dead(msg.key() or b"", letter)
        self._commit_offsets({partition: offset + 1})

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
        COMMIT_RETRY.call(
            lambda: self._commit_once(tps, offsets, deadline),
            what=f"kafka commit {self.topic} {offsets}",
            logger=log,
        )

    def _commit_once(self, tps: list[TopicPartition], offsets: dict[int, int], deadline: float) -> None:
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
        raise _CommitNotYetAcceptedError(str(err))

    def dead_letter(self, delivery: Delivery, *, reason: str, worker: str, attempts: int) -> None:
        """Produce the dead letter to `<prefix>.dead` and wait for its acknowledgement."""
        letter = failed_chunk_letter(delivery.message, reason=reason, worker=worker, attempts=attempts)
        self._send_dead(delivery.message.key, letter)

    def _send_dead(self, key: bytes, letter: DeadLetter) -> None:
        if self._producer is None:
            self._producer = Producer(producer_config(self._bootstrap))
        produce_all(self._producer, self.dead_topic, [(key, encode_dead_letter(letter))], PUBLISH_TIMEOUT)

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
            flush_at_close(self._producer, timeout=PUBLISH_TIMEOUT, what=f"dead letters to {self.dead_topic}")
            self._producer = None
