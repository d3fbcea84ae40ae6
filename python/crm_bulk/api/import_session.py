"""A streamed import as the API stores it: job row, chunks and `finish_import` in ONE transaction."""

from __future__ import annotations

import hashlib
import logging
from contextlib import ExitStack
from typing import Any

import polars as pl
import psycopg

from crm_bulk import kernels, metrics
from crm_bulk.actions.specs import BulkActionRequest, spec_json
from crm_bulk.api.resources import Resources
from crm_bulk.api.uploads import Rechunker, RecordParser
from crm_bulk.auth.accounts import Principal
from crm_bulk.errors import ValidationError
from crm_bulk.jobs import repository as jobs
from crm_bulk.jobs.repository import Job
from crm_bulk.planner import append_import_chunk, finish_import

log = logging.getLogger(__name__)


class ImportSession:
    """One streamed import, fed from a worker thread piece by piece. A pooled connection is held for the
    whole upload with one transaction around the job row, its chunks and `finish_import`: a broken upload
    leaves nothing behind, and the job becomes visible complete. The transaction starts with the first full
    chunk, so a file refused by its header never touches the database."""

    def __init__(
        self,
        resources: Resources,
        principal: Principal,
        spec: BulkActionRequest,
        parser: RecordParser,
        *,
        idempotency_key: str | None = None,
    ) -> None:
        self._resources = resources
        self._principal = principal
        self._spec = spec
        self._parser = parser
        self._idempotency_key = idempotency_key
        self._digest = upload_digest(spec)
        self._chunk_size = resources.settings.chunk_size
        self._rechunker = Rechunker(self._chunk_size)
        self._seen = kernels.SeenKeys()
        self._stack = ExitStack()
        self._conn: psycopg.Connection[Any] | None = None
        self._job: Job | None = None

    def consume(self, piece: bytes) -> None:
        """Parse a piece of the body and store every chunk it completes."""
        self._digest.update(piece)
        self._store(self._rechunker.push(self._parser.feed(piece)))

    def finish(self) -> Job:
        """Parse and store the rest, mark the import planned and commit; the job as it now stands."""
        self._store(self._rechunker.push(self._parser.finish()))
        last = self._rechunker.finish()
        if last is not None:
            self._store([last])
        if self._job is None or self._conn is None:
            raise ValidationError("the upload holds no records", field="body", code="empty")
        if self._idempotency_key is not None:
            jobs.record_request_hash(self._conn, self._job.id, self._digest.hexdigest())
        finish_import(self._conn, self._job.id)
        job = jobs.get_job(self._conn, self._principal.account_id, self._job.id)
        self._stack.close()
        log.info("import %s uploaded: %d rows, %d bytes", job.id, self._parser.rows, self._parser.bytes)
        return job

    def abort(self) -> None:
        """Roll back whatever is open and give the connection back (after a failure; no-op after `finish`)."""
        error = UploadAbortedError()
        self._stack.__exit__(UploadAbortedError, error, None)

    def _store(self, frames: list[pl.DataFrame]) -> None:
        for frame in frames:
            conn, job = self._begun()
            append_import_chunk(conn, job.id, frame, seen=self._seen, chunk_size=self._chunk_size)
            metrics.IMPORT_ROWS.inc(frame.height)

    def _begun(self) -> tuple[psycopg.Connection[Any], Job]:
        """The connection and job, created on first use inside the upload's transaction."""
        if self._conn is None or self._job is None:
            conn = self._stack.enter_context(self._resources.connection())
            self._stack.enter_context(conn.transaction())
            self._conn = conn
            self._job = jobs.create_job(
                conn,
                account_id=self._principal.account_id,
                created_by=self._principal.user_id,
                request=self._spec,
                idempotency_key=self._idempotency_key,
                request_hash=None if self._idempotency_key is None else jobs.PENDING_REQUEST_HASH,
            )
        return self._conn, self._job


def upload_digest(spec: BulkActionRequest) -> Any:
    """The running hash an upload's Idempotency-Key is checked against: its parameters, then its body."""
    return hashlib.sha256(spec_json(spec))


class UploadAbortedError(Exception):
    """Passed to the upload's transaction so that it rolls back."""
