"""Failed, retried and cancelled: ledger changes for chunks that end without being applied (retries
exhausted, or a permanent error; or their job was cancelled), and the note of a failed attempt.

Each end writes the chunk's outbox too — one row per entity (`failed`/`internal` with the reason, or
`skipped`/`cancelled`) — so the log still holds one final row per entity and the job's counts add up.

Lock order is the apply engine's: chunk rows first, then the job row.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from uuid import UUID

from crm_bulk.entitylog.events import record_event
from crm_bulk.entitylog.outbox import encode_outcomes, uniform_outcomes
from crm_bulk.ledger.payload import decode_payload
from crm_bulk.ledger.states import FINAL_CHUNK_STATES, MAX_REASON
from crm_bulk.postgres import Conn
from crm_bulk.sqlfiles import query

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CancelledChunks:
    """What `cancel_open_chunks` cancelled."""

    chunks: int
    entities: int


def fail_chunk(
    conn: Conn,
    job_id: UUID,
    chunk_no: int,
    *,
    reason: str,
    worker: str,
    attempts: int,
    code: str = "internal",
) -> bool:
    """Mark an open chunk failed with `reason`, write its outbox (every entity failed with `code`: `internal`
    after retries or a permanent error, `poison` past the delivery cap), add its entities to the job's
    `failed` count and record the `dead_lettered` event, in one transaction.
    Returns False (and changes nothing) when the chunk is missing or already final."""
    reason = reason[:MAX_REASON]
    with conn.transaction():
        row = conn.execute(
            query("postgres", "ledger", "lock_chunk_state"), {"job_id": job_id, "chunk_no": chunk_no}
        ).fetchone()
        if row is None:
            log.warning("job %s chunk %s to fail does not exist", job_id, chunk_no)
            return False
        state, payload, account_id = row
        if state in FINAL_CHUNK_STATES:
            log.info("job %s chunk %s is %s already; not failing it", job_id, chunk_no, state)
            return False
        outcomes = uniform_outcomes(decode_payload(bytes(payload)), code=code, message=reason)
        conn.execute(
            query("postgres", "ledger", "mark_chunk_failed"),
            {
                "job_id": job_id,
                "chunk_no": chunk_no,
                "outcomes": encode_outcomes(outcomes),
                "failed": outcomes.height,
                "error": reason,
                "attempts": attempts,
                "worker": worker,
            },
        )
        conn.execute(
            query("postgres", "ledger", "add_failed_counts"), {"job_id": job_id, "failed": outcomes.height}
        )
        record_event(
            conn,
            job_id=job_id,
            account_id=account_id,
            event="dead_lettered",
            chunk_no=chunk_no,
            detail=reason,
        )
    log.warning("job %s chunk %s failed after %d attempts: %s", job_id, chunk_no, attempts, reason)
    return True


def note_retry(conn: Conn, job_id: UUID, chunk_no: int, *, attempt: int, reason: str) -> None:
    """Record a failed attempt on the ledger row and the `chunk_retried` event, in one transaction."""
    reason = reason[:MAX_REASON]
    with conn.transaction():
        row = conn.execute(
            query("postgres", "ledger", "note_chunk_attempt"),
            {"job_id": job_id, "chunk_no": chunk_no, "attempts": attempt, "error": reason},
        ).fetchone()
        if row is not None:
            record_event(
                conn,
                job_id=job_id,
                account_id=int(row[0]),
                event="chunk_retried",
                chunk_no=chunk_no,
                detail=f"attempt {attempt}: {reason}",
            )


def cancel_open_chunks(conn: Conn, job_id: UUID) -> CancelledChunks:
    """Cancel every pending or released chunk of a job with its outbox (`skipped`/`cancelled`), count them
    in the job's `cancelled` and `chunks_done`, and stamp `finished_at`; one transaction. Chunks being applied
    right now are waited for and then left as they ended."""
    with conn.transaction():
        rows = conn.execute(query("postgres", "ledger", "cancel_open_chunks"), {"job_id": job_id}).fetchall()
        entities = 0
        chunk_nos: list[int] = []
        blobs: list[bytes] = []
        for chunk_no, _entity_count, payload in rows:
            outcomes = uniform_outcomes(decode_payload(bytes(payload)), code="cancelled")
            entities += outcomes.height
            chunk_nos.append(chunk_no)
            blobs.append(encode_outcomes(outcomes))
        if chunk_nos:
            conn.execute(
                query("postgres", "ledger", "store_terminal_outcomes"),
                {"job_id": job_id, "chunk_nos": chunk_nos, "outcomes": blobs},
            )
        conn.execute(
            query("postgres", "ledger", "add_cancelled_counts"),
            {"job_id": job_id, "entities": entities, "chunks": len(chunk_nos)},
        )
    if chunk_nos:
        log.info("job %s: cancelled %d chunks (%d entities)", job_id, len(chunk_nos), entities)
    return CancelledChunks(chunks=len(chunk_nos), entities=entities)
