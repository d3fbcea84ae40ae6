"""Prove a Kafka broker serves: create a throw-away topic, produce, consume in a group, commit, delete.

Used by scripts/kafka.sh after `start`; exits 0 on success and 1 (with the reason) when the round trip does
not complete within --timeout seconds. Retries while the broker is still coming up.

    python scripts/kafka_roundtrip.py --bootstrap 127.0.0.1:59092 --timeout 60
"""

from __future__ import annotations

import argparse
import collections
import logging
import sys
import time
import uuid

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer

# NewTopic is documented under confluent_kafka.admin but re-exported there without `__all__`.
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

# Each attempt gets at most this long, so a broker that is still electing itself gets retried.
ATTEMPT_SECONDS = 15.0


class RoundTripError(Exception):
    """The broker did not complete one step of the round trip."""


class RecentLines(logging.Handler):
    """Keeps the last client log lines, shown only when the round trip fails (retries are noisy)."""

    def __init__(self, size: int = 15) -> None:
        super().__init__()
        self.lines: collections.deque[str] = collections.deque(maxlen=size)

    def emit(self, record: logging.LogRecord) -> None:
        line = record.getMessage()
        if not self.lines or self.lines[-1] != line:
            self.lines.append(line)


RECENT = RecentLines()
CLIENT_LOG = logging.getLogger("kafka_roundtrip.librdkafka")
CLIENT_LOG.addHandler(RECENT)
CLIENT_LOG.propagate = False
CLIENT_LOG.setLevel(logging.WARNING)


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise RoundTripError("timed out")
    return left


def create_topic(admin: AdminClient, topic: str, deadline: float) -> None:
    """Create a one-partition topic, retrying while the controller is not ready yet."""
    last = "no attempt"
    while time.monotonic() < deadline:
        wait = min(ATTEMPT_SECONDS, _remaining(deadline))
        futures = admin.create_topics(
            [NewTopic(topic, num_partitions=1, replication_factor=1)],
            operation_timeout=wait,
            request_timeout=wait,
        )
        try:
            futures[topic].result(timeout=wait + 1)
            return
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            if error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                return
            last = str(error)
        admin.poll(0)  # serves the client's queued log lines to CLIENT_LOG
        time.sleep(0.5)
    raise RoundTripError(f"could not create topic {topic}: {last}")


def produce(bootstrap: str, topic: str, key: bytes, value: bytes, deadline: float) -> None:
    """Produce one message with acks=all and wait for its delivery report."""
    errors: list[str] = []

    def on_delivery(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            errors.append(str(err))

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "logger": CLIENT_LOG,
            "acks": "all",
            "enable.idempotence": True,
            "message.timeout.ms": int(_remaining(deadline) * 1000),
        }
    )
    producer.produce(topic, key=key, value=value, on_delivery=on_delivery)
    undelivered = producer.flush(_remaining(deadline))
    if undelivered:
        raise RoundTripError(f"{undelivered} message(s) not delivered to {topic}")
    if errors:
        raise RoundTripError(f"delivery to {topic} failed: {errors[0]}")


def consume(bootstrap: str, topic: str, key: bytes, value: bytes, deadline: float) -> None:
    """Read the message back through a fresh consumer group and commit its offset synchronously."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "logger": CLIENT_LOG,
            "group.id": f"{topic}-group",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    try:
        consumer.subscribe([topic])
        while True:
            msg = consumer.poll(min(1.0, _remaining(deadline)))
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                if err.retriable() or err.code() == KafkaError._PARTITION_EOF:
                    continue
                raise RoundTripError(f"consume from {topic} failed: {err}")
            if msg.key() != key or msg.value() != value:
                raise RoundTripError(f"read back {msg.key()!r}={msg.value()!r}, expected {key!r}={value!r}")
            consumer.commit(message=msg, asynchronous=False)
            return
    finally:
        consumer.close()


def delete_topic(admin: AdminClient, topic: str) -> None:
    """Remove the throw-away topic; a failure is reported but does not fail the round trip."""
    futures = admin.delete_topics([topic], operation_timeout=10, request_timeout=10)
    try:
        futures[topic].result(timeout=11)
    except KafkaException as exc:
        print(f"kafka_roundtrip: could not delete {topic}: {exc.args[0]}", file=sys.stderr)


def round_trip(bootstrap: str, timeout: float) -> float:
    """Run the whole round trip; return the seconds it took or raise RoundTripError."""
    started = time.monotonic()
    deadline = started + timeout
    topic = f"_crm_bulk_roundtrip_{uuid.uuid4().hex[:12]}"
    key, value = b"roundtrip", uuid.uuid4().bytes
    admin = AdminClient({"bootstrap.servers": bootstrap}, logger=CLIENT_LOG)
    create_topic(admin, topic, deadline)
    try:
        produce(bootstrap, topic, key, value, deadline)
        consume(bootstrap, topic, key, value, deadline)
    finally:
        delete_topic(admin, topic)
    return time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: exit status 0 when the broker completed the round trip."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--bootstrap", required=True, help="host:port of the broker")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds for the whole round trip")
    args = parser.parse_args(argv)
    try:
        took = round_trip(args.bootstrap, args.timeout)
    except (RoundTripError, KafkaException) as exc:
        for line in RECENT.lines:
            print(f"kafka_roundtrip: client log: {line}", file=sys.stderr)
        print(f"kafka_roundtrip: {args.bootstrap}: {exc}", file=sys.stderr)
        return 1
    print(f"kafka_roundtrip: {args.bootstrap} ok in {took:.2f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
