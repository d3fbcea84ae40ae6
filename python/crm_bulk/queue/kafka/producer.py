"""Producing to Kafka: the chunk publisher (the scheduler's side) and the confirmed burst it and the
dead-letter path share."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from confluent_kafka import KafkaError, Message, Producer

from crm_bulk.errors import RetryableError
from crm_bulk.queue.kafka.configuration import PUBLISH_TIMEOUT, producer_config
from crm_bulk.queue.messages import ChunkMessage, encode_chunk
from crm_bulk.queue.protocol import CHUNKS_TOPIC, ClosingContext, topic_name

log = logging.getLogger(__name__)


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


def produce_all(producer: Producer, topic: str, items: Sequence[tuple[bytes, bytes]], timeout: float) -> None:
    """Produce (key, value) pairs and wait for every delivery report; RetryableError unless all confirmed."""
    report = _DeliveryReport()
    for key, value in items:
        while True:
            try:
                producer.produce(topic, value=value, key=key, on_delivery=report)
                break
            except BufferError:
                # Local queue full (broker slow or down): serving delivery reports is what frees it.
                producer.poll(0.1)
    remaining = producer.flush(timeout)
    if remaining or report.errors or report.delivered < len(items):
        detail = "; ".join(report.errors[:3]) or f"{remaining} messages unconfirmed after {timeout:.0f}s"
        raise RetryableError(f"kafka publish to {topic}: {report.delivered}/{len(items)} confirmed: {detail}")


def flush_at_close(producer: Producer, *, timeout: float, what: str) -> None:
    """Wait up to `timeout` for what `producer` still holds; warn how many `what` stayed unconfirmed."""
    remaining = producer.flush(timeout)
    if remaining:
        log.warning("%d %s were still unconfirmed at close", remaining, what)


class KafkaPublisher(ClosingContext):
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

    def publish(self, messages: Sequence[ChunkMessage]) -> None:
        """Produce every message keyed by job/chunk and wait for the brokers' acknowledgements."""
        if not messages:
            return
        if self._producer is None:
            self._producer = Producer(producer_config(self._bootstrap))
        produce_all(self._producer, self.topic, [(m.key, encode_chunk(m)) for m in messages], self._timeout)
        self.published += len(messages)

    def close(self) -> None:
        """Flush what is still queued locally."""
        if self._producer is not None:
            flush_at_close(self._producer, timeout=self._timeout, what=f"messages to {self.topic}")
            self._producer = None
