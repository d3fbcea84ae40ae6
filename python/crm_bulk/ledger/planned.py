"""Planned: chunk rows written with their inputs, and the job's planned totals; a streamed upload's
chunks are written slice by slice while its job is `uploading`, and discarded with it if it fails."""

from __future__ import annotations

from uuid import UUID

from crm_bulk.postgres import Conn
from crm_bulk.sqlfiles import query


def insert_chunks(
    conn: Conn, job_id: UUID, account_id: int, first_chunk_no: int, chunks: list[tuple[int, bytes]]
) -> None:
    """Write `pending` ledger rows numbered from `first_chunk_no`, one per `(entity_count, payload)`."""
    if not chunks:
        return
    with conn.cursor() as cur:
        cur.executemany(
            query("postgres", "ledger", "insert_chunk"),
            [
                {
                    "job_id": job_id,
                    "chunk_no": first_chunk_no + i,
                    "account_id": account_id,
                    "entity_count": count,
                    "payload": payload,
                }
                for i, (count, payload) in enumerate(chunks)
            ],
        )


def mark_planned(conn: Conn, job_id: UUID, *, total: int, chunk_count: int) -> None:
    """The job is planned whole: `total` entities in `chunk_count` chunks."""
    conn.execute(
        query("postgres", "ledger", "mark_planned"),
        {"job_id": job_id, "total": total, "chunk_count": chunk_count},
    )


def add_chunks(conn: Conn, job_id: UUID, *, chunks: int, entities: int) -> None:
    """A streamed import's slice was written: the job counts more chunks and entities, still unplanned."""
    conn.execute(
        query("postgres", "ledger", "add_chunks"), {"job_id": job_id, "chunks": chunks, "entities": entities}
    )


def close_import(conn: Conn, job_id: UUID) -> int:
    """No more slices: the streamed import is planned (and an `uploading` job becomes `queued`, or
    `scheduled`); return its chunk count."""
    row = conn.execute(query("postgres", "ledger", "finish_import"), {"job_id": job_id}).fetchone()
    if row is None:
        raise LookupError(f"bulk action {job_id} vanished while it was locked")
    return int(row[0])


def touch_upload(conn: Conn, job_id: UUID) -> None:
    """The upload is still arriving (its process is alive): it must not be taken for abandoned."""
    conn.execute(query("postgres", "ledger", "touch_upload"), {"job_id": job_id})


def discard_upload(conn: Conn, job_id: UUID) -> int | None:
    """Delete an `uploading` job with every chunk written so far; return how many chunks it had, or None
    when there is no such upload (already finished, or already discarded)."""
    row = conn.execute(query("postgres", "ledger", "discard_upload"), {"job_id": job_id}).fetchone()
    return None if row is None else int(row[0])


def discard_abandoned_uploads(conn: Conn, *, older_than_seconds: float, limit: int) -> list[tuple[UUID, int]]:
    """Discard uploads with no sign of life for `older_than_seconds`; return their (job id, account id)."""
    rows = conn.execute(
        query("postgres", "ledger", "discard_abandoned_uploads"),
        {"older_than": older_than_seconds, "limit": limit},
    ).fetchall()
    return [(row[0], int(row[1])) for row in rows]
