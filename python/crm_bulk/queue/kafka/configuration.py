"""Client settings for the Kafka queue: producer, consumer and admin configurations and the group name.

Every client logs through `crm_bulk.queue.librdkafka` and reports broker errors as warnings.
"""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import KafkaError

from crm_bulk.queue.protocol import topic_name

log = logging.getLogger(__name__)
_librdkafka_log = logging.getLogger("crm_bulk.queue.librdkafka")

GROUP_SUFFIX = "workers"
# A killed worker's partitions move to the others after this long without heartbeats.
SESSION_TIMEOUT_MS = 10_000
# How long `publish` waits for the brokers to confirm; librdkafka keeps retrying in the background beyond it.
PUBLISH_TIMEOUT = 15.0


def group_name(prefix: str) -> str:
    """The worker group of a topic prefix: `crm-bulk.workers` for the default one."""
    return topic_name(prefix, GROUP_SUFFIX)


def _log_error(err: KafkaError) -> None:
    # Broker-down errors repeat every few seconds while an outage lasts; they are warnings, not failures.
    log.warning("kafka client: %s", err)


def _client_defaults() -> dict[str, Any]:
    return {
        # A broker outage logs one reconnect attempt per few seconds, not twenty per second.
        "reconnect.backoff.ms": 250,
        "reconnect.backoff.max.ms": 5_000,
        "log.connection.close": False,
        "logger": _librdkafka_log,
        "error_cb": _log_error,
    }


def admin_config(bootstrap: str) -> dict[str, Any]:
    """Topic administration; librdkafka logs only warnings and worse."""
    return {"bootstrap.servers": bootstrap, "log_level": 4}


def producer_config(bootstrap: str) -> dict[str, Any]:
    """Idempotent (no duplicates from producer retries), acks from all in-sync replicas, zstd batches."""
    return {
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "compression.type": "zstd",
        "linger.ms": 5,
        "message.timeout.ms": 300_000,
        **_client_defaults(),
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
        **_client_defaults(),
    }
