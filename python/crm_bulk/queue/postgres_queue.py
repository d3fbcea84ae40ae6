"""The embedded queue: chunk messages in the `queue_messages` table, claimed with FOR UPDATE SKIP LOCKED.

A claim is the claiming connection's backend pid; it lapses when that backend is gone, so a crashed worker's
messages are free again as soon as Postgres notices the dropped connection. Acknowledging deletes the row.
The connection is autocommit and reopened after a failure; failures surface as `RetryableError`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg

from crm_bulk.errors import RetryableError
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
from crm_bulk.sqlfiles import query

log = logging.getLogger(__name__)

# How often an idle consumer looks for new rows; chunk work is seconds long, so 0.1 s is not felt.
_POLL_INTERVAL = 0.1


class PostgresQueue(ClosingContext):
    """Publisher, consumer and dead-letter reader over one database (one connection, opened lazily)."""

    def __init__(
        self, database_url: str, *, topic_prefix: str = "crm-bulk", connect_timeout: int = 5
    ) -> None:
        self._url = database_url
        self._connect_timeout = connect_timeout
        self.topic = topic_name(topic_prefix, CHUNKS_TOPIC)
        self.dead_topic = topic_name(topic_prefix, DEAD_TOPIC)
        self._conn: psycopg.Connection[Any] | None = None
        self._outstanding: set[int] = set()
        self.published = 0
        self.consumed = 0
        self.committed = 0

    def __repr__(self) -> str:
        return (
            f"PostgresQueue(topic={self.topic!r}, published={self.published}, consumed={self.consumed}, "
            f"committed={self.committed}, outstanding={len(self._outstanding)})"
        )

    @contextmanager
    def _connection(self, action: str) -> Iterator[psycopg.Connection[Any]]:
        """The live connection; a database error drops it and is raised as RetryableError."""
        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(
                    self._url, autocommit=True, connect_timeout=self._connect_timeout
                )
                # Claims belonged to the old backend and have lapsed with it.
                self._outstanding.clear()
            yield self._conn
        except psycopg.OperationalError as exc:
            self._drop()
            raise RetryableError(f"postgres queue {action} on {self.topic}: {exc}") from exc

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None
                self._outstanding.clear()

    def publish(self, messages: Sequence[ChunkMessage]) -> None:
        """Insert the messages in one statement (durable on return)."""
        if not messages:
            return
        bodies = [encode_chunk(m) for m in messages]
        with self._connection("publish") as conn:
            conn.execute(query("postgres", "queue", "publish"), {"topic": self.topic, "bodies": bodies})
        self.published += len(messages)

    def consume(self, *, max_messages: int, timeout: float) -> list[Delivery]:
        """Claim up to `max_messages` free rows, polling until `timeout` when there are none."""
        deadline = time.monotonic() + timeout
        while True:
            deliveries = self._claim(max_messages)
            if deliveries or time.monotonic() >= deadline:
                return deliveries
            time.sleep(min(_POLL_INTERVAL, max(0.0, deadline - time.monotonic())))

    def _claim(self, limit: int) -> list[Delivery]:
        with self._connection("consume") as conn:
            rows = conn.execute(
                query("postgres", "queue", "claim"), {"topic": self.topic, "limit": limit}
            ).fetchall()
        deliveries = claimed_deliveries(
            ((row_id, bytes(body), count) for row_id, body, count in rows),
            topic=self.topic,
            dead_topic=self.dead_topic,
            worker="",
            bury=self._bury_raw,
        )
        self._outstanding.update(d.offset for d in deliveries)
        self.consumed += len(deliveries)
        return deliveries

    def _bury_raw(self, row_id: int, letter: DeadLetter) -> None:
        with self._connection("dead-letter") as conn, conn.transaction():
            self._store_dead_letter(conn, letter)
            conn.execute(query("postgres", "queue", "ack"), {"ids": [row_id]})

    def commit(self, deliveries: Sequence[Delivery]) -> None:
        """Delete the acknowledged rows."""
        if not deliveries:
            return
        ids = [d.offset for d in deliveries]
        with self._connection("commit") as conn:
            conn.execute(query("postgres", "queue", "ack"), {"ids": ids})
        self._outstanding.difference_update(ids)
        self.committed += len(ids)

    def dead_letter(self, delivery: Delivery, *, reason: str, worker: str, attempts: int) -> None:
        """Store the dead letter (the message itself is acknowledged by `commit`)."""
        letter = failed_chunk_letter(delivery.message, reason=reason, worker=worker, attempts=attempts)
        with self._connection("dead-letter") as conn:
            self._store_dead_letter(conn, letter)

    def _store_dead_letter(self, conn: psycopg.Connection[Any], letter: DeadLetter) -> None:
        conn.execute(
            query("postgres", "queue", "dead_letter"),
            {"topic": self.dead_topic, "body": encode_dead_letter(letter), "reason": letter.reason},
        )

    def read_dead_letters(self, *, timeout: float = 0.0) -> list[DeadLetter]:
        """Every stored dead letter of this topic prefix, oldest first."""
        with self._connection("read dead letters") as conn:
            rows = conn.execute(
                query("postgres", "queue", "read_dead_letters"), {"topic": self.dead_topic}
            ).fetchall()
        return [decode_dead_letter(bytes(body)) for (body,) in rows]

    def lag(self) -> int | None:
        """Rows waiting in the topic (claimed ones included: they are not done yet)."""
        try:
            with self._connection("lag") as conn:
                row = conn.execute(query("postgres", "queue", "lag"), {"topic": self.topic}).fetchone()
        except RetryableError as exc:
            log.warning("queue lag unknown: %s", exc)
            return None
        return None if row is None else int(row[0])

    def close(self) -> None:
        """Hand unacknowledged claims back at once (they would lapse with the connection anyway)."""
        if self._conn is not None and not self._conn.closed and self._outstanding:
            try:
                self._conn.execute(query("postgres", "queue", "release"), {"ids": sorted(self._outstanding)})
            except psycopg.OperationalError as exc:
                log.warning(
                    "could not release %d claims on close (they lapse with the connection): %s",
                    len(self._outstanding),
                    exc,
                )
        self._drop()
