"""The chunk queue: one protocol, two backends picked by `Settings.queue_url` (Postgres table or Kafka).

The Kafka modules are imported only where the Kafka backend is picked, so the embedded deployment never
loads confluent_kafka.
"""

from __future__ import annotations

import logging
import threading

from crm_bulk.errors import CrmBulkError
from crm_bulk.queue.messages import ChunkMessage, DeadLetter
from crm_bulk.queue.postgres_queue import PostgresQueue
from crm_bulk.queue.protocol import ChunkConsumer, ChunkPublisher, DeadLetterReader, Delivery
from crm_bulk.retry import RetryStopped, on_types, until_stopped
from crm_bulk.settings import Settings

log = logging.getLogger(__name__)

# The broker may still be starting: try again after 1, 2, 4, 8, then every 10 seconds until stopped.
QUEUE_READY_RETRY = until_stopped(wait_seconds=1.0, max_wait_seconds=10.0, retry_on=on_types(CrmBulkError))


def open_publisher(settings: Settings) -> ChunkPublisher:
    """The publisher for the configured backend (no network until the first publish)."""
    if settings.queue_kind == "kafka":
        from crm_bulk.queue.kafka.producer import KafkaPublisher

        return KafkaPublisher(settings.kafka_bootstrap, topic_prefix=settings.namespace)
    return PostgresQueue(settings.postgres_dsn, topic_prefix=settings.namespace)


def open_consumer(settings: Settings, *, client_id: str) -> ChunkConsumer:
    """A consumer in the worker group of the configured backend."""
    if settings.queue_kind == "kafka":
        from crm_bulk.queue.kafka.consumer import KafkaConsumer

        return KafkaConsumer(settings.kafka_bootstrap, topic_prefix=settings.namespace, client_id=client_id)
    return PostgresQueue(settings.postgres_dsn, topic_prefix=settings.namespace)


def wait_for_queue(settings: Settings, stop_event: threading.Event) -> bool:
    """`ensure_queue`, retried with backoff (`QUEUE_READY_RETRY`) while it fails with a CrmBulkError; True
    once ensured, False if stopped first."""
    if stop_event.is_set():
        return False
    try:
        QUEUE_READY_RETRY.call(
            lambda: ensure_queue(settings), what="queue set-up", stop=stop_event, logger=log
        )
    except RetryStopped:
        return False
    return True


def ensure_queue(settings: Settings) -> list[str]:
    """Create what the backend needs beyond migrations: the Kafka topics. Returns the topics created."""
    if settings.queue_kind != "kafka":
        return []
    from crm_bulk.queue.kafka.admin import ensure_topics

    return ensure_topics(
        settings.kafka_bootstrap, prefix=settings.namespace, partitions=settings.kafka_partitions
    )


__all__ = [
    "ChunkConsumer",
    "ChunkMessage",
    "ChunkPublisher",
    "DeadLetter",
    "DeadLetterReader",
    "Delivery",
    "ensure_queue",
    "open_consumer",
    "open_publisher",
    "wait_for_queue",
]
