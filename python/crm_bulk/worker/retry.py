"""The retry policy as an object: given an error and the attempt it ended, retry (after how long) or give up.

Transient errors — a lost connection, a deadlock or serialization failure, a broker or ClickHouse timeout —
are retried `attempts` times in all at a fixed `wait`; anything else is permanent and fails the chunk at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from crm_bulk.errors import BackendUnavailableError, CrmBulkError, PermanentError, RetryableError
from crm_bulk.settings import Settings
from crm_bulk.store.pg_errors import classify as classify_postgres


@dataclass(frozen=True)
class RetryDecision:
    """After attempt `attempt` failed: `retry` after `wait` seconds, or record `reason` as final."""

    retry: bool
    transient: bool
    attempt: int
    wait: float
    reason: str


def is_transient(exc: BaseException) -> bool:
    """True for failures the same work may survive when tried again."""
    if isinstance(exc, RetryableError | BackendUnavailableError):
        return True
    if isinstance(exc, PermanentError | CrmBulkError):
        return False
    if isinstance(exc, psycopg.Error):
        return isinstance(classify_postgres(exc), RetryableError)
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    return _kafka_retriable(exc)


def _kafka_retriable(exc: BaseException) -> bool:
    from confluent_kafka import KafkaException

    if not isinstance(exc, KafkaException) or not exc.args:
        return False
    err = exc.args[0]
    return bool(getattr(err, "retriable", lambda: False)())


def describe(exc: BaseException) -> str:
    """A one-line reason for the ledger and the dead letter (the root cause's type and first line)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass(frozen=True)
class RetryPolicy:
    """`attempts` tries in all for transient errors, `wait_seconds` apart; permanent ones are not retried."""

    attempts: int = 3
    wait_seconds: float = 1.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if self.wait_seconds < 0:
            raise ValueError("wait_seconds must not be negative")

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        """The policy of `retry_attempts` and `retry_wait_seconds`."""
        return cls(attempts=settings.retry_attempts, wait_seconds=settings.retry_wait_seconds)

    def decide(self, exc: BaseException, attempt: int) -> RetryDecision:
        """The decision after `attempt` (1-based) ended with `exc`."""
        transient = is_transient(exc)
        reason = describe(exc)
        if transient and attempt < self.attempts:
            return RetryDecision(
                retry=True, transient=True, attempt=attempt, wait=self.wait_seconds, reason=reason
            )
        if transient:
            reason = f"{reason} (gave up after {attempt} attempts)"
        return RetryDecision(retry=False, transient=transient, attempt=attempt, wait=0.0, reason=reason)
