"""Topic administration: create the chunks and dead-letter topics of a prefix, or delete them."""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import KafkaError, KafkaException

# NewTopic is documented under confluent_kafka.admin but re-exported there without `__all__`.
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from crm_bulk.errors import RetryableError
from crm_bulk.queue.kafka.configuration import admin_config
from crm_bulk.queue.protocol import CHUNKS_TOPIC, DEAD_TOPIC, topic_name

log = logging.getLogger(__name__)


def ensure_topics(bootstrap: str, *, prefix: str, partitions: int, timeout: float = 30.0) -> list[str]:
    """Create `<prefix>.chunks` (`partitions` partitions) and `<prefix>.dead` if missing; return new ones."""
    admin = AdminClient(admin_config(bootstrap))
    wanted = {topic_name(prefix, CHUNKS_TOPIC): partitions, topic_name(prefix, DEAD_TOPIC): 1}
    try:
        existing = admin.list_topics(timeout=timeout).topics
    except KafkaException as exc:
        raise RetryableError(f"kafka {bootstrap}: cannot list topics: {exc}") from exc
    _warn_of_other_partition_counts(existing, wanted)
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


def _warn_of_other_partition_counts(existing: dict[str, Any], wanted: dict[str, int]) -> None:
    # Kafka cannot take partitions away, and adding some moves keys: an operator decides, not start-up.
    for name, count in wanted.items():
        if name in existing and len(existing[name].partitions) != count and name.endswith(CHUNKS_TOPIC):
            log.warning(
                "topic %s has %d partitions, settings ask for %d; leaving it as it is",
                name,
                len(existing[name].partitions),
                count,
            )


def delete_topics(bootstrap: str, *, prefix: str, timeout: float = 30.0) -> None:
    """Delete both topics of `prefix` (test and benchmark clean-up)."""
    admin = AdminClient(admin_config(bootstrap))
    names = [topic_name(prefix, CHUNKS_TOPIC), topic_name(prefix, DEAD_TOPIC)]
    for name, future in admin.delete_topics(names, operation_timeout=timeout).items():
        try:
            future.result()
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise
            log.debug("topic %s did not exist", name)
