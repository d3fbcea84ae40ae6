"""`/bulk-actions`: create jobs (JSON or a streamed upload), follow them, read their logs and errors."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

import anyio.to_thread
from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency, Provide
from litestar.exceptions import HTTPException
from litestar.params import FromPath, HeaderParameter, JSONBody, QueryParameter
from litestar.response import Stream

from crm_bulk.actions.specs import BulkActionRequest
from crm_bulk.api.dependencies import Connection, provide_autocommit_connection
from crm_bulk.api.import_params import provide_import_options
from crm_bulk.api.import_session import ImportSession, upload_digest
from crm_bulk.api.openapi_extras import ErrorsOperation, ImportUploadOperation
from crm_bulk.api.problems import AUTHENTICATED, problem_responses
from crm_bulk.api.resources import Resources
from crm_bulk.api.security import editor, viewer
from crm_bulk.api.uploads import parser_for
from crm_bulk.auth.accounts import Principal
from crm_bulk.entitylog.export import csv_bytes
from crm_bulk.entitylog.store import MAX_LOG_LIMIT
from crm_bulk.entitylog.views import ErrorReport, JobStats, LogPage
from crm_bulk.errors import ConflictError
from crm_bulk.imports import ImportOptions
from crm_bulk.jobs import repository as jobs
from crm_bulk.jobs.control import cancel_job
from crm_bulk.jobs.repository import Job, JobPage

log = logging.getLogger(__name__)

JobStatus = Literal[
    "scheduled", "queued", "running", "completed", "completed_with_errors", "failed", "cancelled"
]
Outcome = Literal["succeeded", "failed", "skipped"]
ERROR_CSV_BATCH = 50_000
UPLOAD_TYPES = (
    "send Content-Type: text/csv, application/x-ndjson or "
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
)


async def _limited(request: Request[Any, Any, Any], limit: int, idle_timeout: float) -> AsyncIterator[bytes]:
    """The body's pieces; past `limit` bytes, 413 (a chunked upload declares no length up front); nothing
    received for `idle_timeout` seconds, 408 (a stalled client must not keep its upload open)."""
    received = 0
    pieces = request.stream().__aiter__()
    while True:
        # The deadline covers only the wait for the next piece, never the yield: the caller's work on a
        # piece (parsing, writing chunks) is not the client's idleness.
        with anyio.move_on_after(idle_timeout) as waiting:
            try:
                piece = await pieces.__anext__()
            except StopAsyncIteration:
                return
        if waiting.cancelled_caught:
            raise HTTPException(
                status_code=408,
                detail=f"no data received for {idle_timeout:g} s (CRM_BULK_UPLOAD_IDLE_TIMEOUT_SECONDS)",
                headers={"Connection": "close"},
            )
        received += len(piece)
        if received > limit:
            raise _too_large(limit)
        yield piece


def _held_key(resources: Resources, account_id: int, key: str) -> tuple[Job, str] | None:
    # A short transaction: no connection is held while the body arrives (ImportSession).
    return resources.in_transaction(jobs.job_for_idempotency_key, account_id, key)


async def _same_upload_again(
    request: Request[Any, Any, Any],
    spec: BulkActionRequest,
    limits: tuple[int, float],
    job: Job,
    stored_hash: str,
    *,
    options: ImportOptions | None = None,
) -> Job:
    """The job an earlier upload with this key made, if this upload is the same (parameters and body)."""
    digest = upload_digest(spec, options)
    async for piece in _limited(request, *limits):
        digest.update(piece)
    if digest.hexdigest() != stored_hash:
        raise ConflictError("idempotency key was used with a different request", existing_id=str(job.id))
    return job


def _too_large(limit: int) -> HTTPException:
    return HTTPException(
        status_code=413, detail=f"the upload is larger than {limit} bytes (CRM_BULK_MAX_UPLOAD_BYTES)"
    )


def _job_of(resources: Resources, account_id: int, job_id: UUID) -> Job:
    # A short transaction rather than `conn`: the ClickHouse reads that follow must not hold a pooled
    # connection (a slow or unreachable ClickHouse would otherwise drain the pool for every other route).
    return resources.in_transaction(jobs.get_job, account_id, job_id)


def _csv_rows(resources: Resources, account_id: int, job_id: UUID) -> Iterator[bytes]:
    header = True
    for frame in resources.store.iter_errors(job_id, account_id, batch_size=ERROR_CSV_BATCH):
        # Neutralised against formula injection: the file is meant to be opened in a spreadsheet.
        yield csv_bytes(frame, include_header=header)
        header = False
    if header:
        yield b"entity_id,email,outcome,code,message,at\n"


# Shared by the JSON create and the streamed upload: for an upload, "the request" is its parameters and body.
IdempotencyKey = Annotated[
    str | None,
    HeaderParameter(
        name="Idempotency-Key",
        min_length=1,
        max_length=200,
        description="The same key and request (parameters and body) within 24 hours answer with the same "
        "job; another request under the key answers 409.",
    ),
]


class BulkActionController(Controller):
    """Bulk jobs of the caller's account; viewers read, editors create and cancel."""

    path = "/bulk-actions"
    tags = ["bulk-actions"]  # noqa: RUF012 - Litestar reads it as a class attribute
    guards = [viewer]  # noqa: RUF012

    @post(
        "",
        guards=[editor],
        sync_to_thread=True,
        status_code=202,
        summary="Create a bulk action",
        responses=problem_responses(*AUTHENTICATED, 403, 409, 422),
    )
    def create_bulk_action(
        self,
        data: JSONBody[BulkActionRequest],
        principal: NamedDependency[Principal],
        conn: NamedDependency[Connection],
        idempotency_key: IdempotencyKey = None,
    ) -> Job:
        """The job starts `queued` (or `scheduled` until `scheduled_for`); 409 when the idempotency key was
        used with another body."""
        return jobs.create_job(
            conn,
            account_id=principal.account_id,
            created_by=principal.user_id,
            request=data,
            idempotency_key=idempotency_key,
        )

    @post(
        "/import",
        guards=[editor],
        status_code=202,
        request_max_body_size=None,
        summary="Import contacts from a streamed CSV, NDJSON or XLSX upload",
        operation_class=ImportUploadOperation,
        responses=problem_responses(400, 401, 403, 408, 409, 413, 415, 422, 429, 503),
        dependencies={"import_options": Provide(provide_import_options, sync_to_thread=False)},
    )
    async def import_upload(
        self,
        request: Request[Any, Any, Any],
        *,
        principal: NamedDependency[Principal],
        resources: NamedDependency[Resources],
        import_options: NamedDependency[ImportOptions],
        on_duplicate: Annotated[
            Literal["skip", "update"], QueryParameter(description="What a row whose email exists does")
        ] = "skip",
        scheduled_for: Annotated[
            datetime | None, QueryParameter(description="Start no earlier than this (ISO 8601, future)")
        ] = None,
        dry_run: Annotated[
            bool, QueryParameter(description="Run in full but roll every change back (see /preview, /run)")
        ] = False,
        idempotency_key: IdempotencyKey = None,
    ) -> Job:
        """Rows are parsed and stored as chunks while they arrive, so the file is never held whole; the job
        exists (and becomes visible) once the upload has ended well. Bad rows do not fail the upload: each
        becomes that entity's outcome. A malformed file answers 422 and leaves nothing behind. A repeated
        upload with the same Idempotency-Key is read (to compare it) but not stored again. A client that sends
        nothing for CRM_BULK_UPLOAD_IDLE_TIMEOUT_SECONDS gets 408, also leaving nothing; more uploads in
        progress than CRM_BULK_MAX_UPLOADS (per account: CRM_BULK_MAX_UPLOADS_PER_ACCOUNT) answer 429."""
        parser = parser_for(
            request.headers.get("content-type", ""),
            import_options,
            max_xlsx_bytes=resources.settings.max_xlsx_bytes,
        )
        if parser is None:
            raise HTTPException(status_code=415, detail=UPLOAD_TYPES)
        limit = resources.settings.max_upload_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise _too_large(limit)
        spec = BulkActionRequest(
            action="import", on_duplicate=on_duplicate, scheduled_for=scheduled_for, dry_run=dry_run
        )
        limits = (limit, resources.settings.upload_idle_timeout_seconds)
        with resources.uploads.hold(principal.account_id):
            if idempotency_key is not None:
                held = await anyio.to_thread.run_sync(
                    _held_key, resources, principal.account_id, idempotency_key
                )
                if held is not None:
                    return await _same_upload_again(request, spec, limits, *held, options=import_options)
            upload = ImportSession(
                resources, principal, spec, parser, idempotency_key=idempotency_key, options=import_options
            )
            try:
                async for piece in _limited(request, *limits):
                    if piece:
                        await anyio.to_thread.run_sync(upload.consume, piece)
                return await anyio.to_thread.run_sync(upload.finish)
            except BaseException:
                # Shielded: a cancelled request (the client gone) must still discard what it stored.
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(upload.abort)
                raise

    @get(
        "",
        sync_to_thread=True,
        summary="The account's bulk actions, newest first",
        responses=problem_responses(*AUTHENTICATED, 422),
    )
    def list_bulk_actions(
        self,
        principal: NamedDependency[Principal],
        conn: NamedDependency[Connection],
        status: Annotated[JobStatus | None, QueryParameter(description="Only jobs in this status")] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=jobs.MAX_PAGE, description="Page size")] = 50,
        cursor: Annotated[
            str | None, QueryParameter(description="`next_cursor` of the previous page")
        ] = None,
    ) -> JobPage:
        """Pages follow `next_cursor`."""
        return jobs.list_jobs(conn, principal.account_id, status=status, limit=limit, cursor=cursor)

    @get(
        "/{job_id:uuid}",
        sync_to_thread=True,
        summary="A bulk action with its progress, rate and ETA",
        responses=problem_responses(*AUTHENTICATED, 404),
    )
    def get_bulk_action(
        self,
        job_id: FromPath[UUID],
        principal: NamedDependency[Principal],
        conn: NamedDependency[Connection],
    ) -> Job:
        """404 for unknown ids and other accounts' jobs alike."""
        return jobs.get_job(conn, principal.account_id, job_id)

    @get(
        "/{job_id:uuid}/stats",
        sync_to_thread=True,
        summary="Outcome counts, error codes, throughput and chunk latency",
        responses=problem_responses(*AUTHENTICATED, 404),
    )
    def get_stats(
        self,
        job_id: FromPath[UUID],
        principal: NamedDependency[Principal],
        resources: NamedDependency[Resources],
    ) -> JobStats:
        """From the entity log in ClickHouse; outcomes appear there shortly after their chunk is applied."""
        _job_of(resources, principal.account_id, job_id)
        return resources.store.stats(job_id, principal.account_id)

    @get(
        "/{job_id:uuid}/logs",
        sync_to_thread=True,
        summary="The job's entity log, one final outcome per entity",
        responses=problem_responses(*AUTHENTICATED, 404, 422),
    )
    def get_logs(
        self,
        *,
        job_id: FromPath[UUID],
        principal: NamedDependency[Principal],
        resources: NamedDependency[Resources],
        outcome: Annotated[Outcome | None, QueryParameter(description="Only this outcome")] = None,
        entity_id: Annotated[
            int | None, QueryParameter(ge=1, le=2**63 - 1, description="Only this contact")
        ] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_LOG_LIMIT, description="Page size")] = 100,
        cursor: Annotated[
            str | None, QueryParameter(description="`next_cursor` of the previous page")
        ] = None,
    ) -> LogPage:
        """Ordered by outcome, chunk and row; pages follow `next_cursor`."""
        _job_of(resources, principal.account_id, job_id)
        return resources.store.logs(
            job_id, principal.account_id, outcome=outcome, entity_id=entity_id, limit=limit, cursor=cursor
        )

    @get(
        "/{job_id:uuid}/errors",
        sync_to_thread=True,
        summary="Failed and skipped entities: a summary by code, or the whole list as CSV",
        operation_class=ErrorsOperation,
        responses=problem_responses(*AUTHENTICATED, 404, 406),
    )
    def get_errors(
        self,
        job_id: FromPath[UUID],
        request: Request[Any, Any, Any],
        principal: NamedDependency[Principal],
        resources: NamedDependency[Resources],
        limit: Annotated[
            int, QueryParameter(ge=1, le=MAX_LOG_LIMIT, description="Items in the JSON answer")
        ] = 100,
    ) -> Response[ErrorReport]:
        """With `Accept: text/csv` the answer streams every failed and skipped entity as CSV (entity_id,
        email, outcome, code, message, at); otherwise JSON: counts per code and the first `limit` items."""
        account_id = principal.account_id
        _job_of(resources, account_id, job_id)
        accept = request.headers.get("accept", "")
        if "text/csv" in accept.lower():
            filename = f"bulk-action-{job_id}-errors.csv"
            return Stream(  # type: ignore[return-value]
                _csv_rows(resources, account_id, job_id),
                media_type="text/csv; charset=utf-8",
                headers={"Content-Disposition": f'attachment; filename="{filename}"'},
            )
        return Response(resources.store.error_report(job_id, account_id, limit=limit))

    @post(
        "/{job_id:uuid}/cancel",
        guards=[editor],
        sync_to_thread=True,
        status_code=200,
        summary="Cancel a bulk action",
        responses=problem_responses(*AUTHENTICATED, 403, 404, 409),
        # cancel_job commits its steps one by one (it must not hold the job row while waiting for chunks).
        dependencies={"conn": Provide(provide_autocommit_connection)},
    )
    def cancel_bulk_action(
        self,
        job_id: FromPath[UUID],
        principal: NamedDependency[Principal],
        conn: NamedDependency[Connection],
    ) -> Job:
        """Chunks not yet applied are cancelled; the job answers `cancelled` (or still finishing the chunks in
        flight). 409 when it has already ended."""
        return cancel_job(conn, principal.account_id, job_id)
