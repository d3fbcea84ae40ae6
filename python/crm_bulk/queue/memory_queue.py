"""The in-memory queue: a twin of the real backends for fast tests, with the same consumer-group contract.

A `MemoryBroker` holds one chunks topic and its dead letters in this process; every `MemoryQueue` made
from it (`broker.publisher()`, `broker.consumer(client_id=...)`, `broker.dead_letter_reader()`) shares that
state, and worker threads may use them at once. Messages are stored as the encoded bytes the real backends
carry, so every delivery decodes the same bytes and a raw, undecodable one (`broker.publish_raw`) is
dead-lettered on consumption as it would be there.

Like the Postgres table: a consumed message is claimed by its consumer until `commit` removes it; `close`
hands the consumer's claims back at once, and `kill` does the same for a consumer that died without
closing, after which that consumer refuses every call.

    broker = MemoryBroker()
    with broker.publisher() as publisher:
        publisher.publish(messages)
    with broker.consumer(client_id="w-1") as consumer:
        batch = consumer.consume(max_messages=10, timeout=0.5)
        consumer.commit(batch)
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from crm_bulk.queue.claims import claimed_deliveries
from crm_bulk.queue.messages import (
    ChunkMessage,
    DeadLetter,
    decode_dead_letter,
    encode_chunk,
    encode_dead_letter,
    failed_chunk_letter,
)
from crm_bulk.queue.protocol import CHUNKS_TOPIC, DEAD_TOPIC, ClosingContext, Delivery, topic_name

log = logging.getLogger(__name__)


@dataclass
class _Stored:
    """One message of the chunks topic: its bytes, the consumer holding it (if any), deliveries so far."""

    body: bytes
    holder: int | None = None
    deliveries: int = 0


class MemoryBroker:
    """The shared, thread-safe state of one in-memory queue: the chunks topic and the dead letters."""

    def __init__(self, *, topic_prefix: str = "crm-bulk") -> None:
        self.topic = topic_name(topic_prefix, CHUNKS_TOPIC)
        self.dead_topic = topic_name(topic_prefix, DEAD_TOPIC)
        # One lock for all of it; consumers wait on it for new or released messages.
        self._changed = threading.Condition()
        self._messages: dict[int, _Stored] = {}
        self._dead: list[bytes] = []
        self._offsets = itertools.count()
        self._members = itertools.count(1)

    def __repr__(self) -> str:
        with self._changed:
            held = sum(1 for m in self._messages.values() if m.holder is not None)
            return (
                f"MemoryBroker(topic={self.topic!r}, waiting={len(self._messages)}, held={held}, "
                f"dead={len(self._dead)})"
            )

    def publisher(self) -> MemoryQueue:
        """A client for publishing chunk messages."""
        return MemoryQueue(self, client_id="publisher")

    def consumer(self, *, client_id: str = "") -> MemoryQueue:
        """A new member of the worker group; members share the messages without overlap."""
        return MemoryQueue(self, client_id=client_id)

    def dead_letter_reader(self) -> MemoryQueue:
        """A client for reading the dead letters."""
        return MemoryQueue(self, client_id="dead-reader")

    def publish_raw(self, raw: bytes) -> None:
        """Append bytes as they are, e.g. a message that does not decode as a chunk."""
        self._append([raw])

    def dead_letters(self) -> list[DeadLetter]:
        """Every dead letter stored so far, oldest first."""
        with self._changed:
            return [decode_dead_letter(body) for body in self._dead]

    def waiting(self) -> int:
        """Messages not acknowledged yet (held ones included: they are not done)."""
        with self._changed:
            return len(self._messages)

    def _new_member(self) -> int:
        with self._changed:
            return next(self._members)

    def _append(self, bodies: Sequence[bytes]) -> None:
        with self._changed:
            for body in bodies:
                self._messages[next(self._offsets)] = _Stored(body)
            self._changed.notify_all()

    def _claim(self, member: int, limit: int, timeout: float) -> list[tuple[int, bytes, int]]:
        """Up to `limit` free messages as (offset, body, deliveries so far), oldest first, now held by
        `member`; waits up to `timeout` for the first."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                free = list(
                    itertools.islice(((o, m) for o, m in self._messages.items() if m.holder is None), limit)
                )
                remaining = deadline - time.monotonic()
                if free or remaining <= 0:
                    break
                self._changed.wait(remaining)
            for _, stored in free:
                stored.holder = member
                stored.deliveries += 1
            return [(offset, stored.body, stored.deliveries) for offset, stored in free]

    def _acknowledge(self, offsets: Sequence[int]) -> None:
        with self._changed:
            for offset in offsets:
                self._messages.pop(offset, None)

    def _store_dead(self, letter: DeadLetter, *, acknowledge: int | None = None) -> None:
        with self._changed:
            self._dead.append(encode_dead_letter(letter))
            if acknowledge is not None:
                self._messages.pop(acknowledge, None)

    def _release(self, member: int) -> int:
        """Hand back what `member` holds; returns how many."""
        with self._changed:
            held = [m for m in self._messages.values() if m.holder == member]
            for stored in held:
                stored.holder = None
            if held:
                self._changed.notify_all()
            return len(held)


class MemoryQueue(ClosingContext):
    """Publisher, consumer and dead-letter reader over a `MemoryBroker`, like `PostgresQueue` over a
    database; each one is a separate member of the worker group."""

    def __init__(self, broker: MemoryBroker, *, client_id: str = "") -> None:
        self.broker = broker
        self._member = broker._new_member()
        self.client_id = client_id or f"memory-{self._member}"
        self.topic = broker.topic
        self.dead_topic = broker.dead_topic
        self.killed = False
        self.published = 0
        self.consumed = 0
        self.committed = 0

    def __repr__(self) -> str:
        return (
            f"MemoryQueue({self.client_id!r}, topic={self.topic!r}, published={self.published}, "
            f"consumed={self.consumed}, committed={self.committed}, killed={self.killed})"
        )

    def _alive(self) -> None:
        if self.killed:
            raise RuntimeError(f"memory queue client {self.client_id} was killed")

    def publish(self, messages: Sequence[ChunkMessage]) -> None:
        """Append the messages (on the broker on return)."""
        self._alive()
        if messages:
            self.broker._append([encode_chunk(m) for m in messages])
            self.published += len(messages)

    def consume(self, *, max_messages: int, timeout: float) -> list[Delivery]:
        """Claim up to `max_messages` free messages, waiting up to `timeout` for the first; undecodable
        ones are dead-lettered and acknowledged instead of delivered."""
        self._alive()
        deliveries = claimed_deliveries(
            self.broker._claim(self._member, max_messages, timeout),
            topic=self.topic,
            dead_topic=self.dead_topic,
            worker=self.client_id,
            bury=lambda offset, letter: self.broker._store_dead(letter, acknowledge=offset),
        )
        self.consumed += len(deliveries)
        return deliveries

    def commit(self, deliveries: Sequence[Delivery]) -> None:
        """Remove the acknowledged messages from the topic."""
        self._alive()
        self.broker._acknowledge([d.offset for d in deliveries])
        self.committed += len(deliveries)

    def dead_letter(self, delivery: Delivery, *, reason: str, worker: str, attempts: int) -> None:
        """Store the dead letter (the message itself is acknowledged by `commit`)."""
        self._alive()
        letter = failed_chunk_letter(delivery.message, reason=reason, worker=worker, attempts=attempts)
        self.broker._store_dead(letter)

    def read_dead_letters(self, *, timeout: float = 0.0) -> list[DeadLetter]:
        """Every stored dead letter, oldest first."""
        self._alive()
        return self.broker.dead_letters()

    def lag(self) -> int | None:
        """Messages waiting in the topic (held ones included: they are not done yet)."""
        self._alive()
        return self.broker.waiting()

    def close(self) -> None:
        """Hand unacknowledged deliveries back to the group at once."""
        if not self.killed:
            self.broker._release(self._member)

    def kill(self) -> None:
        """As if this consumer's process died: nothing is committed or flushed, its deliveries go back to
        the group, and every later call but `close` raises RuntimeError."""
        if not self.killed:
            self.killed = True
            released = self.broker._release(self._member)
            log.info("memory queue client %s killed holding %d deliveries", self.client_id, released)
