"""The retry policy: transient errors retried a fixed number of times at a fixed interval, others never."""

from __future__ import annotations

import psycopg
import pytest
from confluent_kafka import KafkaError, KafkaException
from psycopg import errors as pg

from crm_bulk.errors import (
    BackendUnavailableError,
    ConflictError,
    NotFoundError,
    PermanentError,
    RetryableError,
    ValidationError,
)
from crm_bulk.retry import RetryPolicy, describe, is_transient
from crm_bulk.settings import Settings


@pytest.mark.parametrize(
    "exc",
    [
        RetryableError("lost connection"),
        BackendUnavailableError("clickhouse", "CRM_BULK_CLICKHOUSE_URL", "timed out"),
        psycopg.OperationalError("server closed the connection unexpectedly"),
        pg.DeadlockDetected("deadlock detected"),
        pg.SerializationFailure("could not serialize access"),
        ConnectionResetError("reset by peer"),
        TimeoutError("read timed out"),
        KafkaException(KafkaError(KafkaError._TRANSPORT, "broker down", retriable=True)),
    ],
)
def test_transient_errors_are_retried_until_the_last_attempt(exc: BaseException) -> None:
    policy = RetryPolicy(attempts=3, wait_seconds=1.0)
    assert is_transient(exc)
    first, second, third = (policy.decide(exc, attempt) for attempt in (1, 2, 3))
    assert (first.retry, first.wait) == (True, 1.0)
    assert (second.retry, second.wait) == (True, 1.0)
    assert third.retry is False
    assert third.transient is True
    assert "gave up after 3 attempts" in third.reason


@pytest.mark.parametrize(
    "exc",
    [
        PermanentError("outcome count mismatch"),
        NotFoundError("chunk 3 of job x not found"),
        ValidationError("bad", field="email", code="invalid_email"),
        ConflictError("terminal"),
        pg.UniqueViolation("duplicate key"),
        pg.UndefinedColumn("column nope does not exist"),
        ValueError("unexpected"),
        KeyError("missing"),
        KafkaException(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED, "denied", retriable=False)),
    ],
)
def test_permanent_errors_are_never_retried(exc: BaseException) -> None:
    decision = RetryPolicy(attempts=5, wait_seconds=1.0).decide(exc, 1)
    assert not is_transient(exc)
    assert (decision.retry, decision.transient, decision.wait) == (False, False, 0.0)
    assert "gave up" not in decision.reason


@pytest.mark.parametrize(("attempts", "retried"), [(1, 0), (2, 1), (3, 2), (6, 5)])
def test_attempts_count_all_tries(attempts: int, retried: int) -> None:
    policy = RetryPolicy(attempts=attempts, wait_seconds=0.25)
    decisions = [policy.decide(RetryableError("deadlock"), n) for n in range(1, attempts + 1)]
    assert sum(d.retry for d in decisions) == retried
    assert not decisions[-1].retry
    assert all(d.wait == 0.25 for d in decisions if d.retry)


def test_policy_comes_from_settings() -> None:
    settings = Settings(retry_attempts=4, retry_wait_seconds=0.5)
    assert RetryPolicy.from_settings(settings) == RetryPolicy(attempts=4, wait_seconds=0.5)


@pytest.mark.parametrize(("attempts", "wait"), [(0, 1.0), (3, -0.1)])
def test_nonsense_policies_are_refused(attempts: int, wait: float) -> None:
    with pytest.raises(ValueError, match=r"attempts|wait"):
        RetryPolicy(attempts=attempts, wait_seconds=wait)


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (RetryableError("deadlock detected\nDETAIL: Process 1 waits"), "RetryableError: deadlock detected"),
        (ValueError(""), "ValueError"),
    ],
)
def test_reasons_are_one_line(exc: BaseException, expected: str) -> None:
    assert describe(exc) == expected
