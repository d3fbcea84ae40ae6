"""Reading the dead-letter topic `<prefix>.dead` (operators, tests)."""

from __future__ import annotations

import logging
import time
import uuid

from confluent_kafka import Consumer, KafkaError, TopicPartition

from crm_bulk.queue.kafka.configuration import consumer_config
from crm_bulk.queue.messages import DeadLetter, decode_dead_letter
from crm_bulk.queue.protocol import DEAD_TOPIC, topic_name

log = logging.getLogger(__name__)


class KafkaDeadLetterReader:
    """Reads `<prefix>.dead` from the beginning with a throw-away group (operators, tests)."""

    def __init__(self, bootstrap: str, *, topic_prefix: str = "crm-bulk") -> None:
        self._bootstrap = bootstrap
        self.dead_topic = topic_name(topic_prefix, DEAD_TOPIC)

    def __repr__(self) -> str:
        return f"KafkaDeadLetterReader({self._bootstrap!r}, topic={self.dead_topic!r})"

    def read_dead_letters(self, *, timeout: float = 10.0) -> list[DeadLetter]:
        """Everything up to the current end of the topic; waits at most `timeout` for the broker."""
        consumer = Consumer(
            consumer_config(self._bootstrap, f"dead-reader-{uuid.uuid4().hex}", "dead-reader")
            | {"enable.partition.eof": True}
        )
        try:
            meta = consumer.list_topics(self.dead_topic, timeout=timeout).topics.get(self.dead_topic)
            if meta is None or meta.error is not None:
                return []
            partitions = [TopicPartition(self.dead_topic, p, 0) for p in meta.partitions]
            consumer.assign(partitions)
            return self._read_to_end(consumer, len(partitions), deadline=time.monotonic() + timeout)
        finally:
            consumer.close()

    def _read_to_end(self, consumer: Consumer, partitions: int, *, deadline: float) -> list[DeadLetter]:
        """Decode letters until every assigned partition reported its end, or the deadline passed."""
        letters: list[DeadLetter] = []
        at_end: set[int] = set()
        while len(at_end) < partitions and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=100, timeout=0.5):
                err = msg.error()
                if err is None:
                    letters.append(decode_dead_letter(msg.value() or b""))
                elif err.code() == KafkaError._PARTITION_EOF:
                    at_end.add(int(msg.partition() or 0))
                else:
                    log.warning("reading %s: %s", self.dead_topic, err)
        return letters

    def close(self) -> None:
        """Nothing to release: each read uses a consumer of its own."""
