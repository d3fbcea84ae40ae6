"""Claimed and done: a worker looks a chunk up, locks it to apply it, and records it applied.

The apply engine runs between `claim_chunk` and `complete_chunk`, inside the caller's transaction, so the
chunk's data change, its ledger row (with the outbox) and the job counters commit together: exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from crm_bulk.postgres import Conn
from crm_bulk.sqlfiles import query


@dataclass(frozen=True)
class ChunkLookup:
    """What a worker checks before pacing: the chunk's state, its account's entity rate, and how often it was
    delivered before (`crm_bulk.ledger.deliveries`)."""

    state: str
    entities_per_second: float
    deliveries: int = 0


@dataclass(frozen=True)
class ClaimedChunk:
    """A chunk locked for applying, with its job's action and parameters."""

    state: str
    payload: bytes
    account_id: int
    action: str
    params_json: str
    # A dry run's chunk applies inside a savepoint that is rolled back (crm_bulk.apply.engine).
    dry_run: bool = False


def look_up_chunk(conn: Conn, job_id: UUID, chunk_no: int) -> ChunkLookup | None:
    """The chunk's state, its account's rate and its deliveries so far; None when the ledger has no such
    chunk."""
    row = conn.execute(
        query("postgres", "ledger", "chunk_for_worker"), {"job_id": job_id, "chunk_no": chunk_no}
    ).fetchone()
    return None if row is None else ChunkLookup(str(row[0]), float(row[1]), int(row[2]))


def claim_chunk(conn: Conn, job_id: UUID, chunk_no: int) -> ClaimedChunk | None:
    """Lock the chunk's row for this transaction (a concurrent apply of it waits here); None if missing."""
    row = conn.execute(
        query("postgres", "ledger", "lock_chunk"), {"job_id": job_id, "chunk_no": chunk_no}
    ).fetchone()
    if row is None:
        return None
    state, payload, account_id, action, params_json, dry_run = row
    return ClaimedChunk(
        str(state), bytes(payload), int(account_id), str(action), str(params_json), bool(dry_run)
    )


def complete_chunk(
    conn: Conn,
    job_id: UUID,
    chunk_no: int,
    *,
    outbox: bytes,
    counts: dict[str, int],
    attempt: int,
    worker: str,
    duration_ms: int,
) -> None:
    """The claimed chunk is done: its outbox and counts on the ledger row, the counts added to the job.
    The job row is updated last, so its lock is held only until the commit."""
    conn.execute(
        query("postgres", "ledger", "finish_chunk"),
        {
            "job_id": job_id,
            "chunk_no": chunk_no,
            "outcomes": outbox,
            "attempt": attempt,
            "worker": worker,
            "duration_ms": duration_ms,
            **counts,
        },
    )
    conn.execute(query("postgres", "ledger", "add_job_counts"), {"job_id": job_id, **counts})
