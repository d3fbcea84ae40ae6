"""Before-images and dry-run samples beside the ledger rows (`bulk_action_chunk_images`).

Written in the chunk's own transaction, so a chunk that is done always has the image of what it changed;
purged after the retention (`before_image_retention_days`), after which its job can no longer be reverted.
"""

from __future__ import annotations

from uuid import UUID

from crm_bulk.postgres import Conn
from crm_bulk.sqlfiles import query

PURGE_BATCH = 1_000


def store_chunk_image(
    conn: Conn,
    job_id: UUID,
    chunk_no: int,
    *,
    account_id: int,
    image_rows: int,
    before_image: bytes | None,
    sample: bytes | None,
) -> None:
    """Keep a chunk's before-image (`image_rows` rows) and, for a dry run, its preview sample."""
    conn.execute(
        query("postgres", "chunk_images", "store_chunk_image"),
        {
            "job_id": job_id,
            "chunk_no": chunk_no,
            "account_id": account_id,
            "image_rows": image_rows,
            "before_image": before_image,
            "sample": sample,
        },
    )


def purge_expired_images(conn: Conn, *, retention_days: int, limit: int = PURGE_BATCH) -> int:
    """Delete up to `limit` images older than `retention_days`; return how many went."""
    cur = conn.execute(
        query("postgres", "chunk_images", "purge_expired_images"), {"days": retention_days, "limit": limit}
    )
    return cur.rowcount
