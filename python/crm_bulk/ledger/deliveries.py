"""Delivered: every time a worker starts on an open chunk, the ledger counts it first, in a transaction of
its own, so the count survives a worker that dies while applying (a crash, the OOM killer, SIGKILL).

Retries inside one delivery are attempts (`terminal.note_retry`), not deliveries. A chunk counted past the
poison cap without ever being applied is not applied again: the worker fails it with code `poison`
(`terminal.fail_chunk`) and dead-letters it, so it cannot keep killing workers and hold its partition.
"""

from __future__ import annotations

from uuid import UUID

from crm_bulk.postgres import Conn
from crm_bulk.sqlfiles import query

POISON_CODE = "poison"


def count_delivery(conn: Conn, job_id: UUID, chunk_no: int) -> int | None:
    """Add one to the open chunk's deliveries and commit it; return the count including this delivery, or
    None when the chunk is missing or already final (nothing to apply).

    `conn` must be in autocommit mode: inside a caller's transaction the count would roll back with it."""
    if not conn.autocommit:
        raise ValueError("count_delivery needs an autocommit connection: the count must commit on its own")
    row = conn.execute(
        query("postgres", "ledger", "count_chunk_delivery"), {"job_id": job_id, "chunk_no": chunk_no}
    ).fetchone()
    return None if row is None else int(row[0])


def is_poison(deliveries: int, *, cap: int) -> bool:
    """True when this delivery (the `deliveries`-th) comes after `cap` deliveries that never applied it."""
    return deliveries > cap


def poison_reason(deliveries: int, *, cap: int) -> str:
    """The failed chunk's error and every entity's message."""
    return (
        f"poison chunk: delivered {deliveries} times, {deliveries - 1} of them without finishing "
        f"(cap {cap}); not applied again"
    )
