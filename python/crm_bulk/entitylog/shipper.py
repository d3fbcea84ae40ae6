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

import dataclasses
import logging
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from psycopg.rows import tuple_row

from crm_bulk.entitylog.clickhouse import ClickHouseEngine
from crm_bulk.entitylog.inputs import encode_inputs
from crm_bulk.entitylog.outbox import decode_outcome_table
from crm_bulk.entitylog.store import EVENT_ROW_SCHEMA, OUTCOME_ROW_SCHEMA, ClickHouseStore
from crm_bulk.errors import CrmBulkError
from crm_bulk.metrics import SHIP_FAILURES, SHIPPED_CHUNKS
from crm_bulk.retry import RetryPolicy, RetryStopped, on_types, until_stopped
from crm_bulk.settings import Settings
from crm_bulk.sqlfiles import query

log = logging.getLogger(__name__)

DEFAULT_BATCH_CHUNKS = 50
DEFAULT_BATCH_EVENTS = 5000
DEFAULT_IDLE_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 30.0
# After a failed pass (ClickHouse or PostgreSQL down or slow) the shipper waits twice its idle time, doubling
# while failures last, up to 30 s (and up to 256 idle times), until a pass succeeds or it is stopped.
SHIP_RETRY = until_stopped(
    wait_seconds=2 * DEFAULT_IDLE_SECONDS,
    max_wait_seconds=MAX_BACKOFF_SECONDS,
    retry_on=on_types(CrmBulkError, psycopg.Error),
)
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
    # The input line of the chunk's first entity (its outcome rows are numbered on from it), and for an
    # import the chunk's payload, whose records the log keeps as sent.
    first_line: int = 1
    payload: bytes | None = None
    # A retry's chunk lists its rows' lines (big-endian int64 each): those of the records it retries.
    lines: bytes | None = None


@dataclass
class ShipperCounters:
    """What a `run_shipper` loop moved, and how often it had to wait for a backend."""

    chunks: int = 0
    events: int = 0
    failures: int = 0


def outcome_rows(outbox: pa.Table, chunk: ChunkFacts) -> pa.Table:
    """The `entity_outcomes` rows of one chunk: its outbox plus the chunk-level columns, nulls as defaults;
    each row's input line and (imports) its input record."""
    n = outbox.num_rows

    def same(value: object, kind: pa.DataType) -> pa.Array:
        return pa.repeat(pa.scalar(value, kind), n)

    row_nos = outbox.column("row_no").combine_chunks()
    lines = _lines(chunk, row_nos)
    inputs = same("", pa.string()) if chunk.payload is None else encode_inputs(chunk.payload, row_nos)

    columns = {
        "account_id": same(chunk.account_id, pa.uint64()),
        "job_id": same(str(chunk.job_id), pa.string()),
        "chunk_no": same(chunk.chunk_no, pa.uint32()),
        "row_no": row_nos.cast(pa.uint32()),
        "line": lines,
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
        "input": inputs,
    }
    return pa.Table.from_arrays(
        [columns[name] for name in OUTCOME_ROW_SCHEMA.names], schema=OUTCOME_ROW_SCHEMA
    )


def _lines(chunk: ChunkFacts, row_nos: pa.Array) -> pa.Array:
    """Each outcome row's input line: listed by the chunk (a retry's), else counted on from its first."""
    if chunk.lines is None:
        return pc.add(row_nos.cast(pa.uint64()), pa.scalar(chunk.first_line, pa.uint64()))
    listed = pa.array(np.frombuffer(chunk.lines, dtype=">i8").astype(np.uint64))
    return listed.take(row_nos.cast(pa.int64()))


def event_rows(claimed: list[tuple[Any, ...]]) -> pa.Table:
    """The `job_events` rows of claimed outbox events: (id, job_id, account_id, at, event, chunk_no, detail)
    tuples."""
    ids, job_ids, account_ids, ats, events, chunk_nos, details = (
        list(column) for column in zip(*claimed, strict=True)
    )
    return pa.Table.from_arrays(
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


def ship_outcomes(
    pg_conn: psycopg.Connection[Any], ch: ClickHouseStore, *, batch_chunks: int = DEFAULT_BATCH_CHUNKS
) -> int:
    """Ship up to `batch_chunks` unshipped chunk outboxes in one ClickHouse insert; return the chunks shipped.

    Runs in its own transaction on `pg_conn` (a savepoint if the caller has one open). ClickHouse failures
    propagate (`BackendUnavailableError`, `RetryableError`) with nothing marked. An outbox that cannot be
    decoded is logged and left in place, so it is neither lost nor allowed to block the others.
    """
    with pg_conn.transaction(), pg_conn.cursor(row_factory=tuple_row) as cur:
        tables, job_ids, chunk_nos = _decoded(_claim(cur, "claim_unshipped_outcomes", batch_chunks))
        if not job_ids:
            return 0
        rows = ch.insert_outcomes(pa.concat_tables(tables))
        cur.execute(
            query("postgres", "outbox", "mark_outcomes_shipped"), {"job_ids": job_ids, "chunk_nos": chunk_nos}
        )
    log.info("shipped %d outcome rows of %d chunks", rows, len(job_ids))
    return len(job_ids)


def _decoded(claimed: list[tuple[Any, ...]]) -> tuple[list[pa.Table], list[UUID], list[int]]:
    """The outcome rows of each claimed chunk whose outbox decodes, with those chunks' keys."""
    tables: list[pa.Table] = []
    job_ids: list[UUID] = []
    chunk_nos: list[int] = []
    for row in claimed:
        chunk, blob = _chunk_facts(row)
        try:
            tables.append(outcome_rows(decode_outcome_table(blob), chunk))
        except (pa.ArrowException, ValueError) as exc:
            log.error(
                "outbox of job %s chunk %d cannot be decoded, left unshipped: %s",
                chunk.job_id,
                chunk.chunk_no,
                exc,
            )
            continue
        job_ids.append(chunk.job_id)
        chunk_nos.append(chunk.chunk_no)
    return tables, job_ids, chunk_nos


def _chunk_facts(row: tuple[Any, ...]) -> tuple[ChunkFacts, bytes]:
    """A `claim_unshipped_outcomes` row as the chunk's facts and its outbox bytes."""
    job_id, chunk_no, account_id, action, attempts, worker, applied_at, duration_ms, blob = row[:9]
    first_line, payload, lines = row[9:]
    facts = ChunkFacts(
        job_id,
        chunk_no,
        account_id,
        action,
        attempts,
        worker,
        applied_at,
        duration_ms,
        first_line=int(first_line),
        payload=None if payload is None else bytes(payload),
        lines=None if lines is None else bytes(lines),
    )
    return facts, bytes(blob)


def ship_events(
    pg_conn: psycopg.Connection[Any], ch: ClickHouseStore, *, batch_events: int = DEFAULT_BATCH_EVENTS
) -> int:
    """Ship up to `batch_events` job events and delete them from the outbox; return how many.

    Same transaction discipline as `ship_outcomes`; the outbox id travels as `event_id`, so a re-shipped
    event collapses into one row.
    """
    with pg_conn.transaction(), pg_conn.cursor(row_factory=tuple_row) as cur:
        claimed = _claim(cur, "claim_unshipped_events", batch_events)
        if not claimed:
            return 0
        ch.insert_events(event_rows(claimed))
        ids = [row[0] for row in claimed]
        cur.execute(query("postgres", "outbox", "delete_shipped_events"), {"ids": ids})
    log.info("shipped %d job events", len(ids))
    return len(ids)


def _claim(cur: psycopg.Cursor[tuple[Any, ...]], name: str, limit: int) -> list[tuple[Any, ...]]:
    # Locks the claimed rows until the caller's transaction ends (see sql/postgres/queries/outbox.sql).
    return cur.execute(query("postgres", "outbox", name), {"limit": limit}).fetchall()


class _ShipPasses:
    """One shipping pass after another over one PostgreSQL connection, opened when first needed and dropped
    after a PostgreSQL error; counts what moved and how often a pass failed."""

    def __init__(self, url: str, ch: ClickHouseStore, *, batch_chunks: int) -> None:
        self._url = url
        self._ch = ch
        self._batch_chunks = batch_chunks
        self._conn: psycopg.Connection[Any] | None = None
        self.counters = ShipperCounters()

    def run(self) -> int:
        """Ship what both outboxes hold now (up to a batch each); return the chunks and events moved."""
        if self._conn is None:
            self._conn = psycopg.connect(self._url)
        chunks = ship_outcomes(self._conn, self._ch, batch_chunks=self._batch_chunks)
        events = ship_events(self._conn, self._ch)
        self.counters.chunks += chunks
        self.counters.events += events
        SHIPPED_CHUNKS.inc(chunks)
        return chunks + events

    def failed(self, exc: BaseException) -> None:
        """Count a failed pass; after a PostgreSQL error the next pass connects again."""
        self.counters.failures += 1
        SHIP_FAILURES.inc()
        if isinstance(exc, psycopg.Error):
            self.close()

    def close(self) -> None:
        """Close the connection, if open."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def run_shipper(
    settings: Settings,
    stop_event: threading.Event,
    *,
    store: ClickHouseStore | None = None,
    idle_seconds: float = DEFAULT_IDLE_SECONDS,
    batch_chunks: int = DEFAULT_BATCH_CHUNKS,
) -> ShipperCounters:
    """Ship outcomes and events of resolved `settings` (`settings.postgres_dsn`) until `stop_event` is set;
    return what was moved.

    Sleeps `idle_seconds` when both outboxes are empty; backs off exponentially (`SHIP_RETRY`, up to 30 s)
    while a backend fails, reconnecting to Postgres after a Postgres error. Pass `store` to share the
    process's ClickHouse engine (chDB: one engine per process).
    """
    ch = store if store is not None else ClickHouseStore(ClickHouseEngine(settings.clickhouse_dsn))
    passes = _ShipPasses(settings.postgres_dsn, ch, batch_chunks=batch_chunks)
    policy = _backoff(idle_seconds)
    try:
        # The service loop: a pass, then the next at once while there was work, or after `idle_seconds`;
        # a failed pass is retried by `policy`.
        while not stop_event.is_set():
            try:
                moved = policy.call(
                    passes.run,
                    what="shipper waits: shipping the outboxes",
                    stop=stop_event,
                    on_retry=passes.failed,
                    logger=log,
                )
            except RetryStopped:
                break
            if moved == 0:
                stop_event.wait(idle_seconds)
    finally:
        passes.close()
        if store is None:
            ch.close()
    log.info("shipper stopped: %s", passes.counters)
    return passes.counters


def _backoff(idle_seconds: float) -> RetryPolicy:
    """`SHIP_RETRY` scaled to a loop's idle time: 2, 4, 8 … idle times, at most 256 of them, at most 30 s."""
    if idle_seconds == DEFAULT_IDLE_SECONDS:
        return SHIP_RETRY
    return dataclasses.replace(
        SHIP_RETRY,
        wait_seconds=min(MAX_BACKOFF_SECONDS, 2 * idle_seconds),
        max_wait_seconds=min(MAX_BACKOFF_SECONDS, idle_seconds * 2**8),
    )
