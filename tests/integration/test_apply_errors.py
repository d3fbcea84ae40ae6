"""Database failures become RetryableError or PermanentError, from the real driver and server."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from psycopg import errors as pg

from crm_bulk.apply.engine import apply_chunk
from crm_bulk.errors import NotFoundError, PermanentError, RetryableError, ValidationError
from crm_bulk.postgres import classify
from tests.integration.apply_support import Conn, insert_contacts, new_account, submit

pytestmark = pytest.mark.postgres


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (pg.SerializationFailure("could not serialize"), RetryableError),
        (pg.DeadlockDetected("deadlock detected"), RetryableError),
        (pg.AdminShutdown("terminating connection"), RetryableError),
        (pg.QueryCanceled("statement timeout"), RetryableError),
        (pg.LockNotAvailable("lock timeout"), RetryableError),
        (psycopg.OperationalError("server closed the connection unexpectedly"), RetryableError),
        (psycopg.InterfaceError("the connection is lost"), RetryableError),
        (ConnectionResetError("reset by peer"), RetryableError),
        (pg.UniqueViolation("duplicate key"), PermanentError),
        (pg.UndefinedTable("no such table"), PermanentError),
        (pg.InvalidTextRepresentation("bad input"), PermanentError),
        (ValueError("bad payload"), PermanentError),
    ],
)
def test_classify_splits_transient_from_permanent(exc: BaseException, kind: type[Exception]) -> None:
    error = classify(exc)
    assert type(error) is kind
    assert error.__cause__ is exc


def test_platform_errors_pass_through_unchanged() -> None:
    original = ValidationError("bad", field="f", code="c")
    assert classify(original) is original


def test_a_real_constraint_violation_is_permanent(conn: Conn) -> None:
    account = new_account(conn)
    insert_contacts(conn, account, [{"email": "u@example.com"}])
    with pytest.raises(pg.UniqueViolation) as caught:
        insert_contacts(conn, account, [{"email": "u@example.com"}])
    assert isinstance(classify(caught.value), PermanentError)


def test_a_lost_connection_is_retryable_and_leaves_the_chunk_pending(conn: Conn, database_url: str) -> None:
    account = new_account(conn)
    ids = insert_contacts(conn, account, [{"email": "l@example.com"}])
    job_id, _ = submit(conn, account, {"action": "delete", "target": {"ids": ids}})
    with psycopg.connect(database_url, autocommit=True) as doomed:
        pid = doomed.info.backend_pid
        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(RetryableError):
            apply_chunk(doomed, job_id, 0)
    state = conn.execute("SELECT state FROM bulk_action_chunks WHERE job_id = %s", (job_id,)).fetchone()
    assert state == ("pending",)
    assert apply_chunk(conn, job_id, 0).state == "applied"


def test_a_missing_chunk_is_not_found(conn: Conn) -> None:
    with pytest.raises(NotFoundError):
        apply_chunk(conn, uuid.uuid4(), 0)
