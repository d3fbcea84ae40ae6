"""The queue as the rest of crm-bulk sees it: publish chunk messages, consume them, acknowledge when applied.

Delivery is at-least-once. A consumer acknowledges (`commit`) a delivery only after the Postgres transaction
that applied its chunk committed; whatever was consumed but not committed when a consumer dies or closes is
delivered again, to it or to another consumer of the group. The backends (`postgres_queue`, `kafka`) and the
in-memory twin for tests (`memory_queue`) pass the same contract tests.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, Self

from crm_bulk.queue.messages import ChunkMessage, DeadLetter

CHUNKS_TOPIC = "chunks"
DEAD_TOPIC = "dead"


def topic_name(prefix: str, kind: str) -> str:
    """`crm-bulk.chunks` / `crm-bulk.dead` for the default prefix."""
    return f"{prefix}.{kind}"


@dataclass(frozen=True)
class Delivery:
    """One consumed message and where it came from (Kafka partition/offset, or the queue row id)."""

    message: ChunkMessage
    partition: int
    offset: int

    def describe(self) -> str:
        """`job/chunk @ partition:offset`, for logs."""
        return f"{self.message.job_id}/{self.message.chunk_no} @ {self.partition}:{self.offset}"


class ClosingContext(ABC):
    """`with` support shared by the queue clients: the block's end closes the client."""

    def __enter__(self) -> Self:
        """Use as a context manager; `close` on exit."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Close."""
        self.close()

    @abstractmethod
    def close(self) -> None:
        """Release what the client holds."""


class ChunkPublisher(Protocol):
    """Hands chunk messages to the queue."""

    def __enter__(self) -> Self:
        """Use as a context manager; `close` on exit."""
        ...

    def __exit__(self, *exc: object) -> None:
        """Close."""
        ...

    def publish(self, messages: Sequence[ChunkMessage]) -> None:
        """Return once every message is durably queued; raise `RetryableError` when that cannot be confirmed
        (some may still arrive later: consumers tolerate duplicates)."""
        ...

    def close(self) -> None:
        """Flush what is pending and release the connection."""
        ...


class ChunkConsumer(Protocol):
    """One member of the worker group."""

    def __enter__(self) -> Self:
        """Use as a context manager; `close` on exit."""
        ...

    def __exit__(self, *exc: object) -> None:
        """Close."""
        ...

    def consume(self, *, max_messages: int, timeout: float) -> list[Delivery]:
        """Up to `max_messages` deliveries, waiting at most `timeout` seconds for the first."""
        ...

    def commit(self, deliveries: Sequence[Delivery]) -> None:
        """Acknowledge handled deliveries (in the order they were consumed); they are not delivered again."""
        ...

    def dead_letter(self, delivery: Delivery, *, reason: str, worker: str, attempts: int) -> None:
        """Send a chunk that could not be applied to the dead-letter topic (does not acknowledge it)."""
        ...

    def lag(self) -> int | None:
        """Messages waiting for this consumer's group (None when the backend cannot tell right now)."""
        ...

    def close(self) -> None:
        """Leave the group; unacknowledged deliveries go back to the queue."""
        ...


class DeadLetterReader(Protocol):
    """Reads the dead-letter topic (operators, tests)."""

    def read_dead_letters(self, *, timeout: float) -> list[DeadLetter]:
        """Every dead letter currently stored."""
        ...

    def close(self) -> None:
        """Release the connection."""
        ...
