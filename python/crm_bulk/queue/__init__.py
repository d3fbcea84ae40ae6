"""The chunk queue: one protocol, two backends picked by `Settings.queue_url` (Postgres table or Kafka)."""

from __future__ import annotations

import logging
import threading

from crm_bulk.deployment import database_url as resolved_database_url
from crm_bulk.errors import CrmBulkError
from crm_bulk.queue.kafka_queue import KafkaConsumer, KafkaDeadLetterReader, KafkaPublisher, ensure_topics
from crm_bulk.queue.messages import ChunkMessage, DeadLetter
from crm_bulk.queue.postgres_queue import PostgresQueue
from crm_bulk.queue.protocol import ChunkConsumer, ChunkPublisher, DeadLetterReader, Delivery
from crm_bulk.settings import Settings

log = logging.getLogger(__name__)


def _db(settings: Settings, database_url: str | None) -> str:
    return database_url or resolved_database_url(settings)


def open_publisher(settings: Settings, *, database_url: str | None = None) -> ChunkPublisher:
    """The publisher for the configured backend (no network until the first publish)."""
    if settings.queue_kind == "kafka":
        return KafkaPublisher(settings.kafka_bootstrap, topic_prefix=settings.kafka_topic_prefix)
    return PostgresQueue(_db(settings, database_url), topic_prefix=settings.kafka_topic_prefix)


def open_consumer(settings: Settings, *, client_id: str, database_url: str | None = None) -> ChunkConsumer:
    """A consumer in the worker group of the configured backend."""
    if settings.queue_kind == "kafka":
        return KafkaConsumer(
            settings.kafka_bootstrap, topic_prefix=settings.kafka_topic_prefix, client_id=client_id
        )
    return PostgresQueue(_db(settings, database_url), topic_prefix=settings.kafka_topic_prefix)


def open_dead_letter_reader(settings: Settings, *, database_url: str | None = None) -> DeadLetterReader:
    """Reads the dead-letter topic of the configured backend."""
    if settings.queue_kind == "kafka":
        return KafkaDeadLetterReader(settings.kafka_bootstrap, topic_prefix=settings.kafka_topic_prefix)
    return PostgresQueue(_db(settings, database_url), topic_prefix=settings.kafka_topic_prefix)


def wait_for_queue(settings: Settings, stop_event: threading.Event, *, max_wait: float = 10.0) -> bool:
    """`ensure_queue`, retried with backoff while the broker is unreachable; False if stopped first."""
    delay = 1.0
    while not stop_event.is_set():
        try:
            ensure_queue(settings)
            return True
        except CrmBulkError as exc:
            log.warning("queue not ready (retrying in %.0f s): %s", delay, exc)
            stop_event.wait(delay)
            delay = min(delay * 2, max_wait)
    return False


def ensure_queue(settings: Settings) -> list[str]:
    """Create what the backend needs beyond migrations: the Kafka topics. Returns the topics created."""
    if settings.queue_kind != "kafka":
        return []
    return ensure_topics(
        settings.kafka_bootstrap, prefix=settings.kafka_topic_prefix, partitions=settings.kafka_partitions
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
    "open_dead_letter_reader",
    "open_publisher",
    "wait_for_queue",
]
