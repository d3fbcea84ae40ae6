"""Job rows (`bulk_actions`): create with an idempotency key, read and list within one account.

Every read is scoped by the caller's account: another account's job id is simply not found.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

import msgspec

from crm_bulk.actions.specs import BulkActionRequest, action_params, spec_json, validate_request
from crm_bulk.cursors import CursorCodec
from crm_bulk.errors import ConflictError, NotFoundError, ValidationError
from crm_bulk.postgres import Conn
from crm_bulk.sqlfiles import query

log = logging.getLogger(__name__)

JOB_STATUSES: tuple[str, ...] = (
    "scheduled",
    "queued",
    "running",
    "completed",
    "completed_with_errors",
    "failed",
    "cancelled",
)
TERMINAL_STATUSES: frozenset[str] = frozenset({"completed", "completed_with_errors", "failed", "cancelled"})
MAX_PAGE = 200
# The request hash of a streamed upload until its body has been read whole (replaced in the transaction
# that finishes the upload, so only an `uploading` job keeps it).
PENDING_REQUEST_HASH = "pending"


class Job(msgspec.Struct, kw_only=True):
    """A bulk action job as the API shows it (`shared/api.md`)."""

    id: UUID
    action: str
    status: str
    total: int
    succeeded: int
    failed: int
    skipped: int
    cancelled: int
    progress: float
    entities_per_second: float
    eta_seconds: float | None
    created_at: datetime
    scheduled_for: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    created_by: int | None
    # A dry run applies nothing; `source_id` names the job this one derives from (promotion, revert, retry).
    dry_run: bool = False
    source_id: UUID | None = None
    # A file import's columns: header → field, `custom_fields.<key>`, or "" for a column left out.
    mapping_used: dict[str, str] | None = None


class JobPage(msgspec.Struct, kw_only=True):
    """One page of an account's jobs, newest first; `next_cursor` is None on the last page."""

    items: list[Job]
    next_cursor: str | None


def create_job(
    conn: Conn,
    *,
    account_id: int,
    created_by: int | None,
    request: BulkActionRequest,
    idempotency_key: str | None = None,
    request_hash: str | None = None,
    uploading: bool = False,
    source_id: UUID | None = None,
    mapping_used: dict[str, str] | None = None,
) -> Job:
    """Store a validated request as a new job: `scheduled` when `scheduled_for` is in the future, else
    `queued`; not yet planned. The same idempotency key with the same request (hash) within 24 hours
    returns the existing job; with a different request it raises `ConflictError(existing_id)`. With
    `uploading` (a streamed upload whose body is still arriving) the job is `uploading`: neither runnable
    nor visible until `crm_bulk.planner.finish_import`. `source_id` names the job this one derives from.

    An import without inline records is a streamed import: its chunks arrive through
    `crm_bulk.planner.append_import_chunk`.
    """
    streamed = request.action == "import" and request.records is None
    request = validate_request(request, streamed=streamed)
    spec = spec_json(request)
    digest = request_hash or hashlib.sha256(spec).hexdigest()
    params = {
        "account_id": account_id,
        "created_by": created_by,
        "action": request.action,
        "spec": spec.decode(),
        "params": action_params(request).decode(),
        "scheduled_for": request.scheduled_for,
        "idempotency_key": idempotency_key,
        "request_hash": digest,
        "uploading": uploading,
        "dry_run": request.dry_run,
        "source_id": source_id,
        "mapping_used": None if mapping_used is None else msgspec.json.encode(mapping_used).decode(),
    }
    with conn.transaction():
        if idempotency_key is not None:
            existing = _job_for_key(conn, account_id, idempotency_key, digest)
            if existing is not None:
                return existing
        row = conn.execute(query("postgres", "jobs", "insert_job"), params).fetchone()
        if row is None:
            # A concurrent request with the same key won the insert; answer with its job.
            assert idempotency_key is not None
            existing = _job_for_key(conn, account_id, idempotency_key, digest)
            if existing is None:
                raise ConflictError("idempotency key is being used by another request; retry")
            return existing
    job = _job(row)
    log.info("created job %s (%s) for account %s, status %s", job.id, job.action, account_id, job.status)
    return job


def get_job(conn: Conn, account_id: int, job_id: UUID | str) -> Job:
    """The account's job; `NotFoundError` for unknown ids and other accounts' jobs alike."""
    uuid = _uuid(job_id)
    row = conn.execute(
        query("postgres", "jobs", "get_job"), {"account_id": account_id, "job_id": uuid}
    ).fetchone()
    if row is None:
        raise NotFoundError(f"bulk action {job_id} not found")
    return _job(row)


def get_jobs(conn: Conn, watched: list[tuple[int, UUID]]) -> dict[UUID, Job]:
    """Several jobs in one query, each scoped by its `(account_id, job_id)`; missing ones are left out."""
    rows = conn.execute(
        query("postgres", "progress", "jobs_by_account_and_id"),
        {"account_ids": [a for a, _ in watched], "job_ids": [j for _, j in watched]},
    ).fetchall()
    return {job.id: job for job in map(_job, rows)}


def list_jobs(
    conn: Conn, account_id: int, *, status: str | None = None, limit: int = 50, cursor: str | None = None
) -> JobPage:
    """The account's jobs, newest first, optionally of one status; pass `next_cursor` for the next page."""
    if status is not None and status not in JOB_STATUSES:
        raise ValidationError(f"unknown status {status!r}", field="status", code="invalid_value")
    if not 1 <= limit <= MAX_PAGE:
        raise ValidationError(f"limit is 1-{MAX_PAGE}", field="limit", code="invalid_value")
    after_created_at, after_id = _decode_cursor(account_id, cursor) if cursor else (None, None)
    rows = conn.execute(
        query("postgres", "jobs", "list_jobs"),
        {
            "account_id": account_id,
            "status": status,
            "after_created_at": after_created_at,
            "after_id": after_id,
            "limit": limit + 1,
        },
    ).fetchall()
    jobs = [_job(row) for row in rows[:limit]]
    next_cursor = _encode_cursor(account_id, jobs[-1]) if len(rows) > limit else None
    return JobPage(items=jobs, next_cursor=next_cursor)


def job_for_idempotency_key(conn: Conn, account_id: int, key: str) -> tuple[Job, str] | None:
    """The job holding `key` in the account and its request hash; None when the key is free (a key expires
    24 hours after its job was created and is then released)."""
    found = conn.execute(
        query("postgres", "jobs", "job_by_idempotency_key"),
        {"account_id": account_id, "idempotency_key": key},
    ).fetchone()
    if found is None:
        return None
    job_id, stored_hash, expired = found
    if expired:
        conn.execute(query("postgres", "jobs", "release_idempotency_key"), {"job_id": job_id})
        return None
    if stored_hash == PENDING_REQUEST_HASH:
        # An upload under this key is still arriving; its job is not visible yet, nor is its hash known.
        raise ConflictError("idempotency key is held by an upload in progress; retry")
    return get_job(conn, account_id, job_id), str(stored_hash)


def record_request_hash(conn: Conn, job_id: UUID, digest: str) -> None:
    """Store the hash of a request known only once it has been read whole (a streamed upload's body)."""
    conn.execute(query("postgres", "jobs", "set_request_hash"), {"job_id": job_id, "request_hash": digest})


def _job_for_key(conn: Conn, account_id: int, key: str, digest: str) -> Job | None:
    found = job_for_idempotency_key(conn, account_id, key)
    if found is None:
        return None
    job, stored_hash = found
    if digest == PENDING_REQUEST_HASH:
        # Another upload committed the key while this one was starting; its hash may well be ours.
        raise ConflictError("idempotency key is held by another upload; retry", existing_id=str(job.id))
    if stored_hash != digest:
        raise ConflictError("idempotency key was used with a different request", existing_id=str(job.id))
    return job


def _job(row: tuple[Any, ...]) -> Job:
    (
        job_id,
        action,
        status,
        total,
        succeeded,
        failed,
        skipped,
        cancelled,
        created_at,
        scheduled_for,
        started_at,
        finished_at,
        created_by,
        dry_run,
        source_id,
        mapping_used,
        now,
    ) = row
    done = succeeded + failed + skipped + cancelled
    terminal = status in TERMINAL_STATUSES
    progress = min(done / total, 1.0) if total > 0 else float(terminal)
    rate = 0.0
    if started_at is not None and done > 0:
        elapsed = ((finished_at or now) - started_at).total_seconds()
        rate = done / elapsed if elapsed > 0 else 0.0
    eta: float | None = None
    if terminal:
        eta = 0.0
    elif rate > 0 and total > 0:
        eta = max(total - done, 0) / rate
    return Job(
        id=job_id,
        action=action,
        status=status,
        total=total,
        succeeded=succeeded,
        failed=failed,
        skipped=skipped,
        cancelled=cancelled,
        progress=progress,
        entities_per_second=rate,
        eta_seconds=eta,
        created_at=created_at,
        scheduled_for=scheduled_for,
        started_at=started_at,
        finished_at=finished_at,
        created_by=created_by,
        dry_run=dry_run,
        source_id=source_id,
        mapping_used=mapping_used,
    )


def _uuid(value: UUID | str) -> UUID:
    if isinstance(value, UUID):
        return value
    try:
        return UUID(value)
    except ValueError:
        raise NotFoundError(f"bulk action {value} not found") from None


# A jobs cursor: (created_at, id) of the last job served, in one account's listing.
JOB_CURSOR: CursorCodec[tuple[datetime, UUID]] = CursorCodec(
    "jobs", [Annotated[datetime, msgspec.Meta(tz=True)], UUID]
)


def _encode_cursor(account_id: int, job: Job) -> str:
    return JOB_CURSOR.encode(str(account_id), (job.created_at, job.id))


def _decode_cursor(account_id: int, cursor: str) -> tuple[datetime, UUID]:
    return JOB_CURSOR.decode(cursor, str(account_id))
