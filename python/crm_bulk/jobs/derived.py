"""Jobs derived from jobs: a finished dry run promoted to the real job, a revert of an ended job, and a dry
run's preview.

A derived job carries `source_id` and is planned as it is created, in one transaction, from what its source
stored: a promotion copies the dry run's chunk payloads (the same target snapshot: the ids a filter
matched then, the records of an import), a revert takes one chunk per before-image its source's chunks
kept (`crm_bulk.apply.images`). The scheduler then starts it like any planned job.
"""

from __future__ import annotations

import logging
from typing import Any
from uuid import UUID

import msgspec

from crm_bulk.apply.images import PreviewItem, decode_image, preview_items
from crm_bulk.errors import ConflictError, NotFoundError, ValidationError
from crm_bulk.jobs.repository import TERMINAL_STATUSES, Job, get_job
from crm_bulk.ledger.images import PURGE_BATCH, purge_expired_images
from crm_bulk.postgres import Conn
from crm_bulk.sqlfiles import query

log = logging.getLogger(__name__)

# A promotion needs a dry run that ran to its end; one cancelled or failed part-way previewed only part.
PROMOTABLE_STATUSES = frozenset({"completed", "completed_with_errors"})
MAX_PREVIEW = 500


class Preview(msgspec.Struct, kw_only=True):
    """A dry run's sample (`GET /bulk-actions/{id}/preview`), in input order."""

    items: list[PreviewItem]


class _Source(msgspec.Struct, frozen=True):
    action: str
    status: str
    dry_run: bool
    spec: str
    params: str
    # A promoted import shows the column mapping its dry run used.
    mapping_used: str | None
    images_expired: bool


def promote_dry_run(conn: Conn, *, account_id: int, created_by: int | None, job_id: UUID) -> Job:
    """The real job of a finished dry run, over the dry run's target snapshot; `ConflictError` unless the
    job is a dry run that completed."""
    with conn.transaction():
        source = _lock_source(conn, account_id, job_id, retention_days=0)
        if not source.dry_run:
            raise ConflictError(f"bulk action {job_id} is not a dry run")
        if source.status not in PROMOTABLE_STATUSES:
            raise ConflictError(f"dry run {job_id} has not completed (status {source.status})")
        plan = conn.execute(query("postgres", "derived", "source_plan"), {"source_id": job_id}).fetchone()
        assert plan is not None
        new_id = _insert(
            conn,
            account_id=account_id,
            created_by=created_by,
            action=source.action,
            spec=source.spec,
            params=source.params,
            total=int(plan[0]),
            chunk_count=int(plan[1]),
            source_id=job_id,
            mapping_used=source.mapping_used,
        )
        conn.execute(query("postgres", "derived", "copy_chunks"), {"job_id": new_id, "source_id": job_id})
        job = get_job(conn, account_id, new_id)
    log.info("dry run %s promoted to job %s: %d entities", job_id, job.id, job.total)
    return job


def revert_job(
    conn: Conn, *, account_id: int, created_by: int | None, job_id: UUID, retention_days: int
) -> Job:
    """A revert job restoring what the ended job `job_id` changed; `ConflictError` while it runs, for a dry
    run, and once its before-images are past `retention_days`."""
    with conn.transaction():
        source = _lock_source(conn, account_id, job_id, retention_days=retention_days)
        if source.dry_run:
            raise ConflictError(f"bulk action {job_id} is a dry run: it changed nothing to revert")
        if source.status not in TERMINAL_STATUSES:
            raise ConflictError(
                f"bulk action {job_id} has not ended (status {source.status}); revert it once it has"
            )
        if source.images_expired:
            raise ConflictError(
                f"the before-images of bulk action {job_id} were kept {retention_days} days and are gone"
            )
        chunks, total = _one(conn, "revert_plan", {"source_id": job_id})
        spec = msgspec.json.encode({"action": "revert", "source_id": str(job_id)}).decode()
        new_id = _insert(
            conn,
            account_id=account_id,
            created_by=created_by,
            action="revert",
            spec=spec,
            params="{}",
            total=total,
            chunk_count=chunks,
            source_id=job_id,
        )
        conn.execute(
            query("postgres", "derived", "copy_images_as_chunks"), {"job_id": new_id, "source_id": job_id}
        )
        job = get_job(conn, account_id, new_id)
    log.info("revert %s of job %s: %d entities in %d chunks", job.id, job_id, total, chunks)
    return job


def preview(conn: Conn, *, account_id: int, job_id: UUID, limit: int = 50) -> Preview:
    """Up to `limit` sampled entities of a dry run (the first of each chunk), in input order;
    `ConflictError` for a job that is not a dry run."""
    if not 1 <= limit <= MAX_PREVIEW:
        raise ValidationError(f"limit is 1-{MAX_PREVIEW}", field="limit", code="invalid_value")
    job = get_job(conn, account_id, job_id)
    if not job.dry_run:
        raise ConflictError(f"bulk action {job_id} is not a dry run; only dry runs keep a preview")
    items: list[PreviewItem] = []
    rows = conn.execute(
        query("postgres", "chunk_images", "preview_samples"), {"job_id": job.id, "chunks": limit}
    )
    for _chunk_no, sample, first_line in rows:
        items.extend(preview_items(decode_image(bytes(sample)), first_line=int(first_line)))
        if len(items) >= limit:
            break
    return Preview(items=items[:limit])


def purge_before_images(conn: Conn, *, retention_days: int) -> int:
    """Delete before-images and samples of jobs that ended more than `retention_days` ago, a batch at a
    time (the scheduler calls it every minute); return how many chunks' images went."""
    purged = 0
    while True:
        with conn.transaction():
            batch = purge_expired_images(conn, retention_days=retention_days)
        purged += batch
        if batch < PURGE_BATCH:
            break
    if purged:
        log.info("purged the before-images of %d chunks (kept %d days)", purged, retention_days)
    return purged


def _lock_source(conn: Conn, account_id: int, job_id: UUID, *, retention_days: int) -> _Source:
    row = conn.execute(
        query("postgres", "derived", "lock_source"),
        {"job_id": job_id, "account_id": account_id, "retention_days": retention_days},
    ).fetchone()
    if row is None:
        raise NotFoundError(f"bulk action {job_id} not found")
    action, status, dry_run, spec, params, mapping_used, expired = row
    return _Source(
        str(action), str(status), bool(dry_run), str(spec), str(params), mapping_used, bool(expired)
    )


def _insert(conn: Conn, **values: Any) -> UUID:
    row = conn.execute(
        query("postgres", "derived", "insert_planned_job"),
        {"request_hash": None, "mapping_used": None, **values},
    ).fetchone()
    assert row is not None
    return UUID(str(row[0]))


def _one(conn: Conn, name: str, params: dict[str, Any]) -> tuple[int, int]:
    row = conn.execute(query("postgres", "derived", name), params).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])
