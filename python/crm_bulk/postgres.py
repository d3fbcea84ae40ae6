"""PostgreSQL as every layer sees it: the one connection type, and psycopg's exceptions mapped onto the
platform's retryable/permanent split.

Transient means the same work may succeed if tried again on a healthy connection: the server went away or
is shutting down, the connection broke, a serialization failure or deadlock rolled the transaction back, a
lock or statement timed out, the server ran short of resources. Everything else (constraint violations,
bad SQL, data errors) fails the same way every time.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import errors as pg

from crm_bulk.errors import CrmBulkError, PermanentError, RetryableError

# The connection every repository, ledger step and apply takes (rows as tuples).
Conn = psycopg.Connection[Any]

# OperationalError covers connection loss, AdminShutdown (57P01), QueryCanceled (57014), LockNotAvailable
# (55P03), InsufficientResources (53*) and TransactionRollback (40*: SerializationFailure, DeadlockDetected).
_RETRYABLE: tuple[type[BaseException], ...] = (
    psycopg.OperationalError,
    pg.SerializationFailure,
    pg.DeadlockDetected,
    pg.AdminShutdown,
    pg.CrashShutdown,
    pg.CannotConnectNow,
    ConnectionError,
    TimeoutError,
)


def classify(exc: BaseException) -> CrmBulkError:
    """The platform error for `exc`: `RetryableError` for transient failures, `PermanentError` otherwise.

    An error that already is a `CrmBulkError` is returned as it is; otherwise the original is kept as
    `__cause__`, so logs show what the driver said.
    """
    if isinstance(exc, CrmBulkError):
        return exc
    kind: type[CrmBulkError] = RetryableError if _is_transient(exc) else PermanentError
    error = kind(f"{type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return error


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, _RETRYABLE):
        return True
    # A broken connection sometimes surfaces as InterfaceError ("the connection is lost/closed").
    return isinstance(exc, psycopg.InterfaceError) and "connection" in str(exc).lower()


class OnDemandConnection:
    """One autocommit connection, opened when first asked for and again after it broke; long-running loops
    (the scheduler's, each worker's) hold one so a database restart costs a reconnect, not the process."""

    def __init__(self, url: str, *, connect_timeout: int = 5) -> None:
        self._url = url
        self._connect_timeout = connect_timeout
        self._conn: Conn | None = None

    def get(self) -> Conn:
        """The open connection, connecting first if there is none or it broke."""
        if self._conn is None or self._conn.closed or self._conn.broken:
            self.close()
            self._conn = psycopg.connect(self._url, autocommit=True, connect_timeout=self._connect_timeout)
        return self._conn

    def drop_if_broken(self, *, force: bool = False) -> None:
        """Close the connection if it broke (or, with `force`, anyway), so the next `get` reconnects."""
        if self._conn is not None and (force or self._conn.broken or self._conn.closed):
            self.close()

    def close(self) -> None:
        """Close the connection, if open."""
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None
