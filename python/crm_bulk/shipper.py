"""The log shipper: moves chunk outcome outboxes and job events from PostgreSQL to ClickHouse.

A chunk's outcomes are committed with the chunk itself (`bulk_action_chunks.outcomes`, an Arrow IPC
stream); the shipper claims many unshipped chunks at once (row locks, SKIP LOCKED), decodes them, adds the
chunk-level columns, inserts them all as one Arrow insert, and only then marks the chunks shipped and drops
their bytes, in the transaction that holds the locks. If ClickHouse is down or slow the insert raises, the
transaction rolls back and the outboxes stay for the next call. If the process dies after the insert but
before the commit, the chunks are shipped again and `entity_outcomes` (a ReplacingMergeTree keyed by job,
chunk and row, read with FINAL) keeps one row per entity.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from psycopg.rows import tuple_row

from crm_bulk.errors import CrmBulkError
from crm_bulk.local_postgres import LocalPostgres
from crm_bulk.settings import Settings
from crm_bulk.sqlfiles import query
from crm_bulk.store.clickhouse import EVENT_ROW_SCHEMA, OUTCOME_ROW_SCHEMA, OUTCOMES, ClickHouseStore

log = logging.getLogger(__name__)

DEFAULT_BATCH_CHUNKS = 50
DEFAULT_BATCH_EVENTS = 5000
DEFAULT_IDLE_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 30.0

# The per-chunk outbox written by the apply engine (see the data contract): one row per target entity.
OUTBOX_SCHEMA = pa.schema(
    [
        ("row_no", pa.int32()),
        ("entity_id", pa.int64()),
        ("email", pa.string()),
        ("outcome", pa.string()),
        ("code", pa.string()),
        ("message", pa.string()),
        ("changed_fields", pa.list_(pa.string())),
    ]
)
_REQUIRED_OUTBOX_COLUMNS = ("row_no", "outcome", "code")
_NO_FIELDS = pa.scalar([], pa.list_(pa.string()))


@dataclass(frozen=True)
class ChunkFacts:
    """The chunk-level columns a chunk's outcome rows carry, from its ledger and job rows."""

    job_id: UUID
    chunk_no: int
    account_id: int
    action: str
    attempt: int
    worker: str
    applied_at: datetime
    duration_ms: int | None


@dataclass
class ShipperCounters:
    """What a `run_shipper` loop moved, and how often it had to wait for a backend."""

    chunks: int = 0
    events: int = 0
    failures: int = 0


def decode_outbox(blob: bytes) -> pa.Table:
    """An outbox Arrow IPC stream as a table of `OUTBOX_SCHEMA`; ValueError/ArrowException if it is not one.

    Optional columns that are absent become nulls; string views and large strings are cast to plain ones.
    """
    table = pa.ipc.open_stream(pa.py_buffer(blob)).read_all()
    missing = [name for name in _REQUIRED_OUTBOX_COLUMNS if name not in table.column_names]
    if missing:
        raise ValueError(f"outbox lacks columns {missing}")
    columns = [
        table.column(f.name).cast(f.type)
        if f.name in table.column_names
        else pa.nulls(table.num_rows, f.type)
        for f in OUTBOX_SCHEMA
    ]
    outbox = pa.Table.from_arrays(columns, schema=OUTBOX_SCHEMA)
    for name in _REQUIRED_OUTBOX_COLUMNS:
        if outbox.column(name).null_count:
            raise ValueError(f"outbox column {name} holds nulls")
    if not pc.all(pc.is_in(outbox.column("outcome"), value_set=pa.array(OUTCOMES))).as_py():
        raise ValueError(f"outbox holds an outcome other than {', '.join(OUTCOMES)}")
    return outbox


def outcome_rows(outbox: pa.Table, chunk: ChunkFacts) -> pa.Table:
    """The `entity_outcomes` rows of one chunk: its outbox plus the chunk-level columns, nulls as defaults."""
    n = outbox.num_rows

    def same(value: object, kind: pa.DataType) -> pa.Array:
        return pa.repeat(pa.scalar(value, kind), n)

    columns = {
        "account_id": same(chunk.account_id, pa.uint64()),
        "job_id": same(str(chunk.job_id), pa.string()),
        "chunk_no": same(chunk.chunk_no, pa.uint32()),
        "row_no": outbox.column("row_no").cast(pa.uint32()),
        "entity_id": outbox.column("entity_id"),
        "email": pc.fill_null(outbox.column("email"), ""),
        "action": same(chunk.action, pa.string()),
        "outcome": outbox.column("outcome"),
        "code": outbox.column("code"),
        "message": pc.fill_null(outbox.column("message"), ""),
        "changed_fields": pc.fill_null(outbox.column("changed_fields"), _NO_FIELDS),
        "attempt": same(chunk.attempt, pa.uint16()),
        "worker": same(chunk.worker, pa.string()),
        "applied_at": same(chunk.applied_at, pa.timestamp("ms", tz="UTC")),
        "duration_ms": same(chunk.duration_ms, pa.uint32()),
    }
    return pa.Table.from_arrays(
        [columns[name] for name in OUTCOME_ROW_SCHEMA.names], schema=OUTCOME_ROW_SCHEMA
    )


def ship_outcomes(
    pg_conn: psycopg.Connection[Any], ch: ClickHouseStore, *, batch_chunks: int = DEFAULT_BATCH_CHUNKS
) -> int:
    """Ship up to `batch_chunks` unshipped chunk outboxes in one ClickHouse insert; return the chunks shipped.

    Runs in its own transaction on `pg_conn` (a savepoint if the caller has one open). ClickHouse failures
    propagate (`BackendUnavailableError`, `RetryableError`) with nothing marked. An outbox that cannot be
    decoded is logged and left in place, so it is neither lost nor allowed to block the others.
    """
    with pg_conn.transaction(), pg_conn.cursor(row_factory=tuple_row) as cur:
        claimed = cur.execute(
            query("postgres", "outbox", "claim_unshipped_outcomes"), {"limit": batch_chunks}
        ).fetchall()
        if not claimed:
            return 0
        tables: list[pa.Table] = []
        job_ids: list[UUID] = []
        chunk_nos: list[int] = []
        for job_id, chunk_no, account_id, action, attempts, worker, applied_at, duration_ms, blob in claimed:
            chunk = ChunkFacts(
                job_id, chunk_no, account_id, action, attempts, worker, applied_at, duration_ms
            )
            try:
                tables.append(outcome_rows(decode_outbox(blob), chunk))
            except (pa.ArrowException, ValueError) as exc:
                log.error(
                    "outbox of job %s chunk %d cannot be decoded, left unshipped: %s", job_id, chunk_no, exc
                )
                continue
            job_ids.append(job_id)
            chunk_nos.append(chunk_no)
        if not job_ids:
            return 0
        rows = ch.insert_outcomes(pa.concat_tables(tables))
        cur.execute(
            query("postgres", "outbox", "mark_outcomes_shipped"), {"job_ids": job_ids, "chunk_nos": chunk_nos}
        )
    log.info("shipped %d outcome rows of %d chunks", rows, len(job_ids))
    return len(job_ids)


def ship_events(
    pg_conn: psycopg.Connection[Any], ch: ClickHouseStore, *, batch_events: int = DEFAULT_BATCH_EVENTS
) -> int:
    """Ship up to `batch_events` job events and delete them from the outbox; return how many.

    Same transaction discipline as `ship_outcomes`; the outbox id travels as `event_id`, so a re-shipped
    event collapses into one row.
    """
    with pg_conn.transaction(), pg_conn.cursor(row_factory=tuple_row) as cur:
        claimed = cur.execute(
            query("postgres", "outbox", "claim_unshipped_events"), {"limit": batch_events}
        ).fetchall()
        if not claimed:
            return 0
        ids, job_ids, account_ids, ats, events, chunk_nos, details = (
            list(column) for column in zip(*claimed, strict=True)
        )
        table = pa.Table.from_arrays(
            [
                pa.array(account_ids, pa.uint64()),
                pa.array([str(j) for j in job_ids], pa.string()),
                pa.array(ids, pa.uint64()),
                pa.array(ats, pa.timestamp("ms", tz="UTC")),
                pa.array(events, pa.string()),
                pa.array(chunk_nos, pa.uint32()),
                pa.array(details, pa.string()),
            ],
            schema=EVENT_ROW_SCHEMA,
        )
        ch.insert_events(table)
        cur.execute(query("postgres", "outbox", "delete_shipped_events"), {"ids": ids})
    log.info("shipped %d job events", len(ids))
    return len(ids)


def run_shipper(
    settings: Settings,
    stop_event: threading.Event,
    *,
    store: ClickHouseStore | None = None,
    database_url: str | None = None,
    idle_seconds: float = DEFAULT_IDLE_SECONDS,
    batch_chunks: int = DEFAULT_BATCH_CHUNKS,
) -> ShipperCounters:
    """Ship outcomes and events until `stop_event` is set; return what was moved.

    Sleeps `idle_seconds` when both outboxes are empty; backs off exponentially (up to 30 s) while a backend
    fails, reconnecting to Postgres after a Postgres error. Pass `store` to share the process's ClickHouse
    client (chDB: one engine per process).
    """
    url = database_url or settings.database_url
    if url is None:
        url = LocalPostgres(settings.data_dir / "postgres", settings.embedded_postgres_port).dsn
    ch = store if store is not None else ClickHouseStore(settings.clickhouse_dsn)
    counters = ShipperCounters()
    pg: psycopg.Connection[Any] | None = None
    streak = 0
    try:
        while not stop_event.is_set():
            try:
                if pg is None:
                    pg = psycopg.connect(url)
                chunks = ship_outcomes(pg, ch, batch_chunks=batch_chunks)
                events = ship_events(pg, ch)
            except (CrmBulkError, psycopg.Error) as exc:
                streak += 1
                counters.failures += 1
                wait = min(MAX_BACKOFF_SECONDS, idle_seconds * 2 ** min(streak, 8))
                log.warning("shipper waits %.1f s after: %s", wait, exc)
                if isinstance(exc, psycopg.Error) and pg is not None:
                    pg.close()
                    pg = None
                stop_event.wait(wait)
                continue
            streak = 0
            counters.chunks += chunks
            counters.events += events
            if chunks == 0 and events == 0:
                stop_event.wait(idle_seconds)
    finally:
        if pg is not None:
            pg.close()
        if store is None:
            ch.close()
    log.info("shipper stopped: %s", counters)
    return counters
