"""The planner: a job's target becomes chunks, each a ledger row holding its input (an Arrow IPC payload).

- ids / filter / all: a snapshot of the matching live contact ids at plan time, read by keyset pagination on
  `id` (one page per chunk), so each chunk is an ascending run of ids.
- import with inline records: the records in input order, sliced into chunks.
- streamed import: the API appends slices as they arrive (`append_import_chunk`, each slice in a short
  transaction of its own while the job is `uploading`, which no scheduler picks up) and then calls
  `finish_import`, which makes the job planned and runnable in one step; a failed upload is removed with
  `discard_import`, also in one step.

Planning happens in one transaction holding the job row lock, so concurrent planners (several schedulers)
plan a job once; planning a planned job returns its chunk count.
"""

from __future__ import annotations

import logging
from typing import Any
from uuid import UUID

import msgspec
import numpy as np
import polars as pl
from psycopg import sql

from crm_bulk import kernels, ledger
from crm_bulk.actions.filters import compile_filter
from crm_bulk.actions.specs import ImportRecord
from crm_bulk.errors import ConflictError, NotFoundError, ValidationError
from crm_bulk.ledger.payload import IMPORT_TEXT_COLUMNS, REPEAT_OF, encode_ids, encode_records, import_frame
from crm_bulk.postgres import Conn
from crm_bulk.settings import DEFAULT_CHUNK_SIZE
from crm_bulk.sqlfiles import query

log = logging.getLogger(__name__)


def plan_job(conn: Conn, job_id: UUID, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> int:
    """Write the job's ledger rows, set `total` and `planned`; return the chunk count.

    A streamed import is planned by `finish_import`; calling this before then raises `ConflictError`.
    """
    _check_chunk_size(chunk_size)
    with conn.transaction():
        job = _lock_job(conn, job_id)
        if job["planned"]:
            return int(job["chunk_count"])
        if job["action"] == "import":
            if not job["inline_records"]:
                raise ConflictError(f"streamed import {job_id} is planned by finish_import")
            frame = mark_repeats(_records_frame(conn, job_id), kernels.SeenKeys(), first_record=1)
            chunks = _write_import_chunks(
                conn, job_id, job["account_id"], frame, first_chunk_no=0, first_line=1, chunk_size=chunk_size
            )
            total = frame.height
        else:
            write = _write_listed_ids if job["target_ids"] else _write_snapshot_ids
            chunks, total = write(conn, job_id, job["account_id"], chunk_size)
        ledger.mark_planned(conn, job_id, total=total, chunk_count=chunks)
    log.info("planned job %s: %d entities in %d chunks", job_id, total, chunks)
    return chunks


def append_import_chunk(
    conn: Conn,
    job_id: UUID,
    frame: pl.DataFrame,
    *,
    seen: kernels.SeenKeys,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> int:
    """Append a slice of a streamed import (columns of `crm_bulk.ledger.payload.IMPORT_SCHEMA`, any subset)
    as ledger rows of at most `chunk_size` records; return how many chunks this call wrote. `seen` is the
    import's one `SeenKeys`, kept by the caller from slice to slice."""
    _check_chunk_size(chunk_size)
    records = import_frame(frame)
    with conn.transaction():
        job = _lock_job(conn, job_id)
        if job["action"] != "import":
            raise ConflictError(f"job {job_id} is not an import")
        if job["planned"]:
            raise ConflictError(f"import {job_id} is already finished")
        records = mark_repeats(records, seen, first_record=int(job["total"]) + 1)
        chunks = _write_import_chunks(
            conn,
            job_id,
            job["account_id"],
            records,
            first_chunk_no=job["chunk_count"],
            first_line=int(job["total"]) + 1,
            chunk_size=chunk_size,
        )
        ledger.add_chunks(conn, job_id, chunks=chunks, entities=records.height)
    return chunks


def mark_repeats(records: pl.DataFrame, seen: kernels.SeenKeys, *, first_record: int) -> pl.DataFrame:
    """`records` with `repeat_of`: for a record whose normalised email an earlier record of the import holds
    (in this slice or an earlier one), that record's number.

    Repeats are settled here, in input order, rather than by the chunks as they apply: two chunks applied
    at once that both insert one email make the second wait on the first's unique-index entry until the
    first commits — measured, one chunk in five waited — and which record won would depend on timing.
    """
    normalized, _ = kernels.normalize_emails(records.get_column("email"))
    return records.with_columns(seen.repeats(normalized, first_record).alias(REPEAT_OF))


def finish_import(conn: Conn, job_id: UUID) -> int:
    """Mark a streamed import planned (no more slices); return its chunk count. Idempotent."""
    with conn.transaction():
        job = _lock_job(conn, job_id)
        if job["action"] != "import":
            raise ConflictError(f"job {job_id} is not an import")
        chunks = ledger.close_import(conn, job_id)
    log.info("import %s finished: %d entities in %d chunks", job_id, job["total"], chunks)
    return chunks


def discard_import(conn: Conn, job_id: UUID) -> bool:
    """Delete an unfinished streamed import (`uploading`) with its chunks; True when there was one."""
    chunks = ledger.discard_upload(conn, job_id)
    if chunks is not None:
        log.info("upload %s discarded with its %d chunks", job_id, chunks)
    return chunks is not None


def _check_chunk_size(chunk_size: int) -> None:
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")


def _lock_job(conn: Conn, job_id: UUID) -> dict[str, Any]:
    cur = conn.execute(query("postgres", "planner", "lock_job"), {"job_id": job_id})
    row = cur.fetchone()
    if row is None:
        raise NotFoundError(f"bulk action {job_id} not found")
    names = ("account_id", "action", "planned", "chunk_count", "total", "inline_records", "target_ids")
    return dict(zip(names, row, strict=True))


def _write_listed_ids(conn: Conn, job_id: UUID, account_id: int, chunk_size: int) -> tuple[int, int]:
    """The requested ids, de-duplicated and ascending, into ledger rows; return (chunks, entities).
    Whether they exist in the account is each entity's outcome (`not_found`), decided when applied."""
    row = conn.execute(query("postgres", "planner", "target_ids"), {"job_id": job_id}).fetchone()
    assert row is not None
    ids = np.frombuffer(bytes(row[1]), dtype=">i8").astype(np.int64)
    slices = [ids[start : start + chunk_size] for start in range(0, ids.size, chunk_size)]
    ledger.insert_chunks(conn, job_id, account_id, 0, [(s.size, encode_ids(s)) for s in slices])
    _number_lines(conn, job_id, first_chunk_no=0, first_line=1, sizes=[s.size for s in slices])
    return len(slices), int(ids.size)


def _write_snapshot_ids(conn: Conn, job_id: UUID, account_id: int, chunk_size: int) -> tuple[int, int]:
    """The ids of the account's live contacts matching the filter (`all`: every one), by keyset pages of
    `chunk_size`, into ledger rows; return (chunks, entities)."""
    filter_row = conn.execute(query("postgres", "planner", "target_filter"), {"job_id": job_id}).fetchone()
    filter_text = filter_row[0] if filter_row else None
    condition = msgspec.json.decode(filter_text, type=dict[str, dict[str, Any]]) if filter_text else {}
    fragment, params = compile_filter(condition)
    page_query = sql.SQL(query("postgres", "planner", "snapshot_page")).format(filter=fragment)
    after_id = 0
    chunk_no = 0
    total = 0
    while True:
        row = conn.execute(page_query, [account_id, after_id, *params, chunk_size]).fetchone()
        assert row is not None
        count = int(row[0])
        if count == 0:
            break
        ids = np.frombuffer(bytes(row[2]), dtype=">i8").astype(np.int64)
        ledger.insert_chunks(conn, job_id, account_id, chunk_no, [(count, encode_ids(ids))])
        _number_lines(conn, job_id, first_chunk_no=chunk_no, first_line=total + 1, sizes=[count])
        chunk_no += 1
        total += count
        after_id = int(row[1])
        if count < chunk_size:
            break
    return chunk_no, total


def _records_frame(conn: Conn, job_id: UUID) -> pl.DataFrame:
    """Inline import records (validated at request time) as import columns."""
    row = conn.execute(query("postgres", "planner", "inline_records"), {"job_id": job_id}).fetchone()
    if row is None or row[0] is None:
        raise ValidationError("import has no records", field="records", code="missing")
    records = msgspec.json.decode(row[0], type=list[ImportRecord])
    # One pass per column over a request body bounded by the API's size limit; not the apply hot path.
    columns: dict[str, pl.Series] = {
        name: pl.Series(name, [getattr(r, name) for r in records], dtype=pl.Utf8)
        for name in IMPORT_TEXT_COLUMNS
    }
    columns["tags"] = pl.Series("tags", [r.tags for r in records], dtype=pl.List(pl.Utf8))
    columns["custom_fields"] = pl.Series(
        "custom_fields",
        [None if r.custom_fields is None else msgspec.json.encode(r.custom_fields).decode() for r in records],
        dtype=pl.Utf8,
    )
    return import_frame(pl.DataFrame(columns))


def _write_import_chunks(
    conn: Conn,
    job_id: UUID,
    account_id: int,
    frame: pl.DataFrame,
    *,
    first_chunk_no: int,
    first_line: int,
    chunk_size: int,
) -> int:
    slices = [frame.slice(start, chunk_size) for start in range(0, frame.height, chunk_size)]
    ledger.insert_chunks(
        conn, job_id, account_id, first_chunk_no, [(s.height, encode_records(s)) for s in slices]
    )
    _number_lines(
        conn, job_id, first_chunk_no=first_chunk_no, first_line=first_line, sizes=[s.height for s in slices]
    )
    return len(slices)


def _number_lines(
    conn: Conn, job_id: UUID, *, first_chunk_no: int, first_line: int, sizes: list[int]
) -> None:
    """Record the first line of chunks just written (`first_chunk_no` on, `sizes` entities each), the first
    holding line `first_line`: result files number outcomes by it (sql/postgres/012_result_lines.sql)."""
    if not sizes:
        return
    starts = np.cumsum([first_line, *sizes[:-1]]).tolist()
    conn.execute(
        query("postgres", "planner", "number_chunk_lines"),
        {
            "job_id": job_id,
            "chunk_nos": list(range(first_chunk_no, first_chunk_no + len(sizes))),
            "first_lines": starts,
        },
    )
