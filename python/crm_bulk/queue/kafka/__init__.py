"""The scale-out queue: Kafka through confluent-kafka, split by role.

Topic `<prefix>.chunks` (partition count from settings, created by `admin.ensure_topics`), idempotent
compressed producer (`producer`), one consumer group of workers with manual offset commits and
cooperative-sticky rebalancing (`consumer`), and a dead-letter topic `<prefix>.dead` (`dead_letters`).
Clients are created lazily: constructing these objects is offline. Importing this package loads
confluent_kafka, so `crm_bulk.queue` imports it only when the Kafka queue is chosen.
"""

from __future__ import annotations

from crm_bulk.queue.kafka.admin import delete_topics, ensure_topics
from crm_bulk.queue.kafka.configuration import consumer_config, producer_config
from crm_bulk.queue.kafka.consumer import KafkaConsumer
from crm_bulk.queue.kafka.dead_letters import KafkaDeadLetterReader
from crm_bulk.queue.kafka.producer import KafkaPublisher

__all__ = [
    "KafkaConsumer",
    "KafkaDeadLetterReader",
    "KafkaPublisher",
    "consumer_config",
    "delete_topics",
    "ensure_topics",
    "producer_config",
]
