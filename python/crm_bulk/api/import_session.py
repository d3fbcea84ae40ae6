"""A streamed import as the API stores it: an `uploading` job whose chunks are written slice by slice.

An upload never holds a database connection or a transaction while it waits on its client. Each piece of
the body is parsed as it arrives; whenever pieces complete chunks, those chunks are written in one short
transaction on a connection taken from the pool for that write alone and given back at once. The job row is
created with the first chunks, in status `uploading`: no scheduler query matches it and the API's reads
leave it out, so until the body has been read whole the upload is neither runnable nor visible (the REST
contract knows no such status; to a client the job appears when its upload ends well).

- The body ends well: `finish` writes the last chunks and, in one transaction, records the request hash
  and makes the job planned and `queued` (or `scheduled`) — the job appears whole, at once.
- The body fails (malformed, too large, idle too long, the client gone): `abort` deletes the job and every
  chunk written so far in one statement; a broken upload leaves nothing stored.
- The API process dies mid-upload: the job stays `uploading`, invisible and never run, and the scheduler
  discards it once its `upload_seen_at` is old (`crm_bulk.jobs.lifecycle.discard_abandoned_uploads`). A
  slow client that completes no chunk for a while still refreshes that sign of life (`HEARTBEAT_SECONDS`).

A file refused by its header never touches the database: nothing is written before the first full chunk.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any
from uuid import UUID

import polars as pl

from crm_bulk import kernels, ledger, metrics
from crm_bulk.actions.specs import BulkActionRequest, spec_json
from crm_bulk.api.resources import Resources
from crm_bulk.api.uploads import Rechunker
from crm_bulk.auth.accounts import Principal
from crm_bulk.errors import ValidationError
from crm_bulk.imports import ImportOptions, RecordStream
from crm_bulk.jobs import repository as jobs
from crm_bulk.jobs.repository import Job
from crm_bulk.planner import append_import_chunk, discard_import, finish_import
from crm_bulk.postgres import Conn

log = logging.getLogger(__name__)

# How often an upload that completes no chunk still tells the database it is alive; well under
# `crm_bulk.jobs.lifecycle.ABANDONED_UPLOAD_SECONDS`, after which the scheduler discards a silent upload.
HEARTBEAT_SECONDS = 60.0


class ImportSession:
    """One streamed import, fed from worker threads piece by piece; see the module docstring."""

    def __init__(
        self,
        resources: Resources,
        principal: Principal,
        spec: BulkActionRequest,
        parser: RecordStream,
        *,
        idempotency_key: str | None = None,
        options: ImportOptions | None = None,
    ) -> None:
        self._resources = resources
        self._principal = principal
        self._spec = spec
        self._parser = parser
        self._idempotency_key = idempotency_key
        self._digest = upload_digest(spec, options)
        self._chunk_size = resources.settings.chunk_size
        self._rechunker = Rechunker(self._chunk_size)
        self._seen = kernels.SeenKeys()
        self._job: Job | None = None
        self._finished = False
        self._last_write = time.monotonic()

    def consume(self, piece: bytes) -> None:
        """Parse a piece of the body and store every chunk it completes (one short transaction)."""
        self._digest.update(piece)
        frames = self._rechunker.push(self._parser.feed(piece))
        if frames:
            self._store(frames)
        elif self._job is not None and time.monotonic() - self._last_write >= HEARTBEAT_SECONDS:
            self._resources.in_transaction(ledger.touch_upload, self._job.id)
            self._last_write = time.monotonic()

    def finish(self) -> Job:
        """Store the rest and turn the upload into a planned, runnable job in one step; that job."""
        # Frames of the rest may come lazily (a workbook read only now): stored as they complete chunks.
        for frame in self._parser.finish():
            frames = self._rechunker.push([frame])
            if frames:
                self._store(frames)
        last = self._rechunker.finish()
        if last is not None:
            self._store([last])
        if self._job is None:
            raise ValidationError("the upload holds no records", field="body", code="empty")
        job = self._resources.in_transaction(self._close, self._job.id, self._digest.hexdigest())
        self._finished = True
        log.info("import %s uploaded: %d rows, %d bytes", job.id, self._parser.rows, self._parser.bytes)
        return job

    def abort(self) -> None:
        """Discard whatever the upload stored (after a failure; no-op after `finish` or before any write).
        Never raises: a discard that fails leaves an `uploading` job the scheduler discards later."""
        if self._job is None or self._finished:
            return
        try:
            self._resources.in_transaction(discard_import, self._job.id)
        except Exception:
            log.warning("upload %s not discarded now; the scheduler will", self._job.id, exc_info=True)

    def _store(self, frames: list[pl.DataFrame]) -> None:
        self._job = self._resources.in_transaction(self._append, frames)
        self._last_write = time.monotonic()

    def _append(self, conn: Conn, frames: list[pl.DataFrame]) -> Job:
        """Inside one transaction: the job (on the first write) and these chunks."""
        job = self._job
        if job is None:
            job = jobs.create_job(
                conn,
                account_id=self._principal.account_id,
                created_by=self._principal.user_id,
                request=self._spec,
                idempotency_key=self._idempotency_key,
                request_hash=None if self._idempotency_key is None else jobs.PENDING_REQUEST_HASH,
                uploading=True,
                mapping_used=self._parser.mapping_used,
            )
        for frame in frames:
            append_import_chunk(conn, job.id, frame, seen=self._seen, chunk_size=self._chunk_size)
            metrics.IMPORT_ROWS.inc(frame.height)
        return job

    def _close(self, conn: Conn, job_id: UUID, digest: str) -> Job:
        if self._idempotency_key is not None:
            jobs.record_request_hash(conn, job_id, digest)
        finish_import(conn, job_id)
        return jobs.get_job(conn, self._principal.account_id, job_id)


def upload_digest(spec: BulkActionRequest, options: ImportOptions | None = None) -> Any:
    """The running hash an upload's Idempotency-Key is checked against: its parameters (the file options
    too, when any is set), then its body."""
    digest = hashlib.sha256(spec_json(spec))
    if options is not None and options != ImportOptions():
        digest.update(options.digest_bytes())
    return digest
