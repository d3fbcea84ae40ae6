"""What a worker asks of PostgreSQL, one call per decision: look a chunk up, count a delivery, apply it,
note a retry, fail it, record an event. `ChunkWorker` takes any `WorkerLedger`; `PostgresWorkerLedger` is
the real one (one on-demand connection), and the worker's unit tests use a twin of their own, so the
worker's decisions are tested without a database.

Connection failures surface as psycopg's `OperationalError`/`InterfaceError`; the worker waits those out
(they are not the chunk's fault) and counts only the apply's own failures as attempts.
"""

from __future__ import annotations

from typing import Protocol
from uuid import UUID

from crm_bulk.apply.engine import ChunkResult, apply_chunk
from crm_bulk.entitylog.events import record_event
from crm_bulk.ledger import ChunkLookup, count_delivery, fail_chunk, look_up_chunk, note_retry
from crm_bulk.postgres import OnDemandConnection


class WorkerLedger(Protocol):
    """The ledger as one worker uses it."""

    def connect(self) -> None:
        """Make sure a connection is open; raises `psycopg.OperationalError` while the database is down."""
        ...

    def drop(self, *, force: bool = False) -> None:
        """Close the connection if it broke (or, with `force`, anyway), so the next call reconnects."""
        ...

    def close(self) -> None:
        """Close the connection for good."""
        ...

    def look_up(self, job_id: UUID, chunk_no: int) -> ChunkLookup | None:
        """The chunk's state and its account's rate; None when the ledger has no such chunk."""
        ...

    def count_delivery(self, job_id: UUID, chunk_no: int) -> int | None:
        """Count a delivery of the open chunk, committed before anything else
        (`crm_bulk.ledger.count_delivery`); the count so far, or None when the chunk is final or missing."""
        ...

    def apply(self, job_id: UUID, chunk_no: int, *, worker: str, attempt: int) -> ChunkResult:
        """Apply the chunk exactly once (`crm_bulk.apply.engine.apply_chunk`)."""
        ...

    def note_retry(self, job_id: UUID, chunk_no: int, *, attempt: int, reason: str) -> None:
        """Record a failed attempt on the chunk (`crm_bulk.ledger.note_retry`)."""
        ...

    def fail(
        self, job_id: UUID, chunk_no: int, *, reason: str, worker: str, attempts: int, code: str = "internal"
    ) -> bool:
        """Mark the chunk failed with its outcome rows, each entity `code` (`crm_bulk.ledger.fail_chunk`)."""
        ...

    def record_paced(self, job_id: UUID, account_id: int, chunk_no: int, *, detail: str) -> None:
        """Record that the chunk waited for its account's rate (a `paced` job event)."""
        ...


class PostgresWorkerLedger:
    """`WorkerLedger` on one autocommit connection, reopened after it breaks."""

    def __init__(self, database_url: str) -> None:
        self._db = OnDemandConnection(database_url)

    def connect(self) -> None:
        self._db.get()

    def drop(self, *, force: bool = False) -> None:
        self._db.drop_if_broken(force=force)

    def close(self) -> None:
        self._db.close()

    def look_up(self, job_id: UUID, chunk_no: int) -> ChunkLookup | None:
        return look_up_chunk(self._db.get(), job_id, chunk_no)

    def count_delivery(self, job_id: UUID, chunk_no: int) -> int | None:
        return count_delivery(self._db.get(), job_id, chunk_no)

    def apply(self, job_id: UUID, chunk_no: int, *, worker: str, attempt: int) -> ChunkResult:
        return apply_chunk(self._db.get(), job_id, chunk_no, worker=worker, attempt=attempt)

    def note_retry(self, job_id: UUID, chunk_no: int, *, attempt: int, reason: str) -> None:
        note_retry(self._db.get(), job_id, chunk_no, attempt=attempt, reason=reason)

    def fail(
        self, job_id: UUID, chunk_no: int, *, reason: str, worker: str, attempts: int, code: str = "internal"
    ) -> bool:
        return fail_chunk(
            self._db.get(), job_id, chunk_no, reason=reason, worker=worker, attempts=attempts, code=code
        )

    def record_paced(self, job_id: UUID, account_id: int, chunk_no: int, *, detail: str) -> None:
        record_event(
            self._db.get(),
            job_id=job_id,
            account_id=account_id,
            event="paced",
            chunk_no=chunk_no,
            detail=detail,
        )
