"""Retrying, as one object: a `RetryPolicy` says how often, how long apart and which errors; each call site
names its policy and either asks it for a decision (`decide`, when the caller records every attempt, as the
chunk worker does) or lets it run the call (`call`, built on tenacity).

Transient errors — a lost connection, a deadlock or serialization failure, a broker or ClickHouse timeout —
are the ones worth another attempt; anything else fails the same way every time.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import psycopg
import tenacity

from crm_bulk.errors import BackendUnavailableError, CrmBulkError, PermanentError, RetryableError
from crm_bulk.postgres import classify as classify_postgres
from crm_bulk.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")


class RetryStopped(CrmBulkError):  # noqa: N818 - a state, not a failure of the call
    """The caller's stop event was set while waiting between attempts; `__cause__` is the last error."""


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
    # A KafkaException exists only where confluent_kafka is loaded already: the embedded deployment
    # never imports it.
    kafka = sys.modules.get("confluent_kafka")
    if kafka is None or not isinstance(exc, kafka.KafkaException) or not exc.args:
        return False
    return bool(getattr(exc.args[0], "retriable", lambda: False)())


def describe(exc: BaseException) -> str:
    """A one-line reason for the ledger and the dead letter (the root cause's type and first line)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass(frozen=True)
class RetryDecision:
    """After attempt `attempt` failed: `retry` after `wait` seconds, or record `reason` as final."""

    retry: bool
    transient: bool
    attempt: int
    wait: float
    reason: str


@dataclass(frozen=True)
class RetryPolicy:
    """`attempts` tries in all (None: until it succeeds or the caller stops), the first wait `wait_seconds`,
    doubling up to `max_wait_seconds` (None: every wait the same); `retry_on` picks the errors worth it."""

    attempts: int | None = 3
    wait_seconds: float = 1.0
    max_wait_seconds: float | None = None
    retry_on: Callable[[BaseException], bool] = field(default=is_transient, compare=False)

    def __post_init__(self) -> None:
        if self.attempts is not None and self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if self.wait_seconds < 0:
            raise ValueError("wait_seconds must not be negative")
        if self.max_wait_seconds is not None and self.max_wait_seconds < self.wait_seconds:
            raise ValueError("max_wait_seconds must not be below wait_seconds")

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        """The chunk apply policy: `retry_attempts` tries, `retry_wait_seconds` apart."""
        return cls(attempts=settings.retry_attempts, wait_seconds=settings.retry_wait_seconds)

    def wait_after(self, attempt: int) -> float:
        """Seconds to wait after attempt `attempt` (1-based) failed."""
        if self.max_wait_seconds is None:
            return self.wait_seconds
        return float(min(self.max_wait_seconds, self.wait_seconds * 2 ** (attempt - 1)))

    def decide(self, exc: BaseException, attempt: int) -> RetryDecision:
        """The decision after `attempt` (1-based) ended with `exc`."""
        transient = self.retry_on(exc)
        reason = describe(exc)
        if transient and (self.attempts is None or attempt < self.attempts):
            return RetryDecision(
                retry=True, transient=True, attempt=attempt, wait=self.wait_after(attempt), reason=reason
            )
        if transient:
            reason = f"{reason} (gave up after {attempt} attempts)"
        return RetryDecision(retry=False, transient=transient, attempt=attempt, wait=0.0, reason=reason)

    def call(
        self,
        fn: Callable[[], T],
        *,
        what: str,
        stop: threading.Event | None = None,
        on_retry: Callable[[BaseException], None] | None = None,
        logger: logging.Logger = log,
    ) -> T:
        """`fn()` until it returns. Errors `retry_on` accepts are retried as the policy says (each logged,
        then `on_retry(error)`); others, and the last one, propagate. A set `stop` ends the wait early with
        `RetryStopped`."""

        last: list[BaseException] = []

        def sleep(seconds: float) -> None:
            if stop is None:
                time.sleep(seconds)
            elif stop.wait(seconds):
                raise RetryStopped(f"stopped while retrying {what}") from (last[-1] if last else None)

        def before_sleep(state: tenacity.RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome is not None else None
            if error is not None:
                last[:] = [error]
            wait = state.next_action.sleep if state.next_action is not None else 0.0
            logger.warning(
                "%s failed (attempt %d), retrying in %.2f s: %s", what, state.attempt_number, wait, error
            )
            if on_retry is not None and error is not None:
                on_retry(error)

        retrying = tenacity.Retrying(
            stop=tenacity.stop_never if self.attempts is None else tenacity.stop_after_attempt(self.attempts),
            wait=(
                tenacity.wait_fixed(self.wait_seconds)
                if self.max_wait_seconds is None
                else tenacity.wait_exponential(multiplier=self.wait_seconds, max=self.max_wait_seconds)
            ),
            retry=tenacity.retry_if_exception(self.retry_on),
            sleep=sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        return retrying(fn)


def until_stopped(
    *, wait_seconds: float, max_wait_seconds: float, retry_on: Callable[[BaseException], bool] = is_transient
) -> RetryPolicy:
    """A policy that never gives up: the caller's stop event ends it (reconnect and redelivery loops)."""
    return RetryPolicy(
        attempts=None, wait_seconds=wait_seconds, max_wait_seconds=max_wait_seconds, retry_on=retry_on
    )


def on_types(*types: type[BaseException]) -> Callable[[BaseException], bool]:
    """A `retry_on` predicate accepting these exception types."""
    return lambda exc: isinstance(exc, types)
