"""Released and republished: which chunks of a job are in flight or waiting, and marking them published.

A chunk is published before it is marked `released`, in the transaction that locks it: a crash in between
leaves it `pending` and it is published again later (a duplicate the ledger makes harmless), never lost.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from crm_bulk.postgres import Conn
from crm_bulk.queue.messages import ChunkMessage
from crm_bulk.sqlfiles import query


@dataclass(frozen=True)
class InFlight:
    """A job's released-but-open chunks and the entities they hold."""

    chunks: int
    entities: int


def in_flight(conn: Conn, job_id: UUID) -> InFlight:
    """How much of the job is released and not yet final."""
    row = conn.execute(query("postgres", "ledger", "chunks_in_flight"), {"job_id": job_id}).fetchone()
    return InFlight(int(row[0]), int(row[1])) if row else InFlight(0, 0)


def lock_pending(conn: Conn, job_id: UUID, *, limit: int) -> list[tuple[int, int]]:
    """Up to `limit` of the job's pending chunks as `(chunk_no, entity_count)`, in order, locked (SKIP
    LOCKED: another dispatcher's chunks are passed over)."""
    rows = conn.execute(
        query("postgres", "ledger", "pending_chunks"), {"job_id": job_id, "limit": limit}
    ).fetchall()
    return [(int(chunk_no), int(entities)) for chunk_no, entities in rows]


def mark_released(conn: Conn, chunks: list[tuple[UUID, int]]) -> None:
    """`(job_id, chunk_no)` pairs were published: pending → released."""
    conn.execute(
        query("postgres", "ledger", "mark_released"),
        {"job_ids": [job for job, _ in chunks], "chunk_nos": [no for _, no in chunks]},
    )


def republish_stale(conn: Conn, *, older_than_seconds: float) -> list[ChunkMessage]:
    """Chunks released over `older_than_seconds` ago and still open, their release time renewed: the caller
    publishes them again in this transaction."""
    rows = conn.execute(
        query("postgres", "ledger", "stale_released_chunks"), {"older_than": older_than_seconds}
    ).fetchall()
    return [
        ChunkMessage(job_id=str(j), chunk_no=int(c), account_id=int(a), entity_count=int(n))
        for j, c, a, n in rows
    ]
