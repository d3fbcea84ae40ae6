"""The entity log in ClickHouse: the shipper's Arrow inserts and the API's reads, over one `LogEngine`.

Query parameters, validation and result shaping live here once, whichever process runs the engine (this one,
or the store host beside the API process). Every read is scoped by account and job and reads FINAL, so a chunk
shipped twice counts once (see `sql/clickhouse/001_entity_outcomes.sql`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, Literal
from uuid import UUID

import msgspec
import polars as pl
import pyarrow as pa

from crm_bulk.cursors import CursorCodec
from crm_bulk.entitylog.engine import LogEngine
from crm_bulk.entitylog.outbox import OUTCOMES
from crm_bulk.entitylog.views import (
    ErrorReport,
    JobEvent,
    JobStats,
    LatencyPercentiles,
    LogItem,
    LogPage,
    ThroughputPoint,
)
from crm_bulk.errors import ValidationError

CANCELLED_CODE = "cancelled"
MAX_LOG_LIMIT = 1000

_UInt32 = Annotated[int, msgspec.Meta(ge=0, le=2**32 - 1)]
# A logs cursor: the (outcome, chunk_no, row_no) of the last row served, in one job of one account. The
# outcome literal spells OUTCOMES out, which a type cannot be built from.
LOG_CURSOR: CursorCodec[tuple[str, int, int]] = CursorCodec(
    "logs", [Literal["succeeded", "failed", "skipped"], _UInt32, _UInt32]
)

# Column order and Arrow types of an `entity_outcomes` insert.
OUTCOME_ROW_SCHEMA = pa.schema(
    [
        ("account_id", pa.uint64()),
        ("job_id", pa.string()),
        ("chunk_no", pa.uint32()),
        ("row_no", pa.uint32()),
        ("line", pa.uint64()),
        ("entity_id", pa.int64()),
        ("email", pa.string()),
        ("action", pa.string()),
        ("outcome", pa.string()),
        ("code", pa.string()),
        ("message", pa.string()),
        ("changed_fields", pa.list_(pa.string())),
        ("attempt", pa.uint16()),
        ("worker", pa.string()),
        ("applied_at", pa.timestamp("ms", tz="UTC")),
        ("duration_ms", pa.uint32()),
        ("input", pa.string()),
    ]
)

# What a result file can select: the final outcomes, and `cancelled` (skipped because the job was cancelled).
RESULTS: tuple[str, ...] = (*OUTCOMES, CANCELLED_CODE)
CANCELLED_RESULT_OUTCOME = "skipped"
# Columns of a result file's rows as `results` yields them (`input`: see `crm_bulk.entitylog.inputs`).
RESULT_SCHEMA = pa.schema(
    [
        ("line", pa.uint64()),
        ("entity_id", pa.int64()),
        ("outcome", pa.string()),
        ("code", pa.string()),
        ("message", pa.string()),
        ("changed_fields", pa.list_(pa.string())),
        ("input", pa.string()),
    ]
)

# Column order and Arrow types of a `job_events` insert.
EVENT_ROW_SCHEMA = pa.schema(
    [
        ("account_id", pa.uint64()),
        ("job_id", pa.string()),
        ("event_id", pa.uint64()),
        ("at", pa.timestamp("ms", tz="UTC")),
        ("event", pa.string()),
        ("chunk_no", pa.uint32()),
        ("detail", pa.string()),
    ]
)


class ClickHouseStore:
    """The entity log: DDL, Arrow inserts and the API's reads, run by `engine`."""

    def __init__(self, engine: LogEngine) -> None:
        """A store over `engine`; opens nothing."""
        self.engine = engine

    def __repr__(self) -> str:
        return f"ClickHouseStore({self.engine!r})"

    def check(self) -> None:
        """Raise unless ClickHouse answers (readiness probes report the message)."""
        self.engine.check()

    def migrate(self) -> list[int]:
        """Apply pending ClickHouse migrations; return the versions applied now."""
        return self.engine.migrate()

    def close(self) -> None:
        """Release the engine; the next call opens it again."""
        self.engine.close()

    def insert_outcomes(self, rows: pa.Table) -> int:
        """Insert outcome rows (`OUTCOME_ROW_SCHEMA`) in one Arrow insert; return the row count."""
        return self._insert("entity_outcomes", rows, OUTCOME_ROW_SCHEMA)

    def insert_events(self, rows: pa.Table) -> int:
        """Insert job events (`EVENT_ROW_SCHEMA`) in one Arrow insert; return the row count."""
        return self._insert("job_events", rows, EVENT_ROW_SCHEMA)

    def _insert(self, table: str, rows: pa.Table, schema: pa.Schema) -> int:
        if rows.num_rows == 0:
            return 0
        rows = rows.select(schema.names).cast(schema)
        self.engine.insert_arrow(table, rows)
        return int(rows.num_rows)

    def stats(self, job_id: UUID, account_id: int, *, bucket_seconds: int = 1) -> JobStats:
        """Outcome counts, error and skip breakdowns, throughput per bucket and chunk latency of one job.

        `outcomes.skipped` leaves out entities skipped because the job was cancelled; they are
        `outcomes.cancelled`, as in the job's counters.
        """
        if bucket_seconds < 1:
            raise ValidationError("bucket_seconds must be at least 1", field="bucket_seconds", code="invalid")
        params = _scope(job_id, account_id)
        outcomes = dict.fromkeys((*OUTCOMES, CANCELLED_CODE), 0)
        errors_by_code: dict[str, int] = {}
        skipped_by_reason: dict[str, int] = {}
        for outcome, code, n in self._outcome_rows("outcome_code_counts", params):
            if outcome == "skipped" and code == CANCELLED_CODE:
                outcomes[CANCELLED_CODE] += int(n)
                continue
            outcomes[str(outcome)] = outcomes.get(str(outcome), 0) + int(n)
            if outcome == "failed":
                errors_by_code[str(code)] = int(n)
            elif outcome == "skipped":
                skipped_by_reason[str(code)] = int(n)
        throughput = [
            ThroughputPoint(t=t, entities=int(n))
            for t, n in self._outcome_rows("throughput", params | {"bucket_seconds": bucket_seconds})
        ]
        return JobStats(
            outcomes=outcomes,
            errors_by_code=errors_by_code,
            skipped_by_reason=skipped_by_reason,
            throughput=throughput,
            chunk_latency_ms=self._chunk_latency(params),
        )

    def _chunk_latency(self, params: dict[str, Any]) -> LatencyPercentiles:
        ((chunks, quantiles),) = self._outcome_rows("chunk_latency", params)
        if int(chunks) == 0:
            return LatencyPercentiles(p50=None, p95=None, p99=None)
        return LatencyPercentiles(p50=float(quantiles[0]), p95=float(quantiles[1]), p99=float(quantiles[2]))

    def logs(
        self,
        job_id: UUID,
        account_id: int,
        *,
        outcome: str | None = None,
        entity_id: int | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> LogPage:
        """One page of a job's entity outcomes, in (outcome, chunk, row) order, optionally filtered."""
        if outcome is not None and outcome not in OUTCOMES:
            raise ValidationError(
                f"outcome must be one of {', '.join(OUTCOMES)}", field="outcome", code="invalid"
            )
        _check_limit(limit)
        after = None if cursor is None else decode_cursor(job_id, account_id, cursor)
        params = _scope(job_id, account_id) | _after(after)
        params |= {"outcome": outcome or "", "entity_id": entity_id, "limit": limit + 1}
        rows = self._outcome_rows("logs_page", params)
        more = len(rows) > limit
        rows = rows[:limit]
        last = rows[-1] if more else None
        next_cursor = (
            None
            if last is None
            else encode_cursor(job_id, account_id, str(last[0]), int(last[1]), int(last[2]))
        )
        return LogPage(items=[_log_item(r) for r in rows], next_cursor=next_cursor)

    def error_summary(self, job_id: UUID, account_id: int) -> dict[str, int]:
        """{code: entities} over the job's failed and skipped entities, most frequent first."""
        rows = self._outcome_rows("error_summary", _scope(job_id, account_id))
        return {str(code): int(n) for code, n in rows}

    def error_report(self, job_id: UUID, account_id: int, *, limit: int = 100) -> ErrorReport:
        """The job's failed and skipped entities: counts per code, and the first `limit` of them in
        (outcome, chunk, row) order."""
        _check_limit(limit)
        params = _scope(job_id, account_id) | _after(None) | {"limit": limit}
        items = [_log_item(r) for r in self._outcome_rows("errors_page", params)]
        return ErrorReport(summary=self.error_summary(job_id, account_id), items=items)

    def iter_errors(
        self, job_id: UUID, account_id: int, *, batch_size: int = 50_000
    ) -> Iterator[pl.DataFrame]:
        """The job's failed and skipped entities as DataFrames of up to `batch_size` rows, for CSV streaming.

        Columns: entity_id, email, outcome, code, message, at. Batches are keyset pages, so no stream is
        held open between them.
        """
        if batch_size < 1:
            raise ValidationError("batch_size must be at least 1", field="batch_size", code="invalid")
        params = _scope(job_id, account_id) | _after(None) | {"limit": batch_size}
        while True:  # one keyset page per turn, until a short page
            frame = pl.from_arrow(self.engine.arrow("outcomes", "errors_page", params))
            assert isinstance(frame, pl.DataFrame)
            if frame.height == 0:
                return
            last = frame.row(frame.height - 1, named=True)
            yield frame.select(
                "entity_id", "email", "outcome", "code", "message", pl.col("applied_at").alias("at")
            )
            if frame.height < batch_size:
                return
            params |= {
                "after_outcome": last["outcome"],
                "after_chunk": last["chunk_no"],
                "after_row": last["row_no"],
            }

    @contextmanager
    def results(
        self, job_id: UUID, account_id: int, *, results: Collection[str] = RESULTS
    ) -> Iterator[Iterator[pl.DataFrame]]:
        """The job's entity outcomes whose result (`RESULTS`: an outcome, or `cancelled`) is in `results`,
        in input order, as frames of `RESULT_SCHEMA`, one per ClickHouse block: streamed, never held whole.
        Leaving the context ends the query."""
        unknown = sorted(set(results) - set(RESULTS))
        if unknown or not results:
            raise ValidationError(
                f"outcome must be one of {', '.join(RESULTS)}", field="outcome", code="invalid"
            )
        outcomes = sorted({CANCELLED_RESULT_OUTCOME if r == CANCELLED_CODE else r for r in results})
        params = _scope(job_id, account_id) | {"outcomes": outcomes, "results": sorted(results)}
        with self.engine.stream("outcomes", "results", params, RESULT_SCHEMA) as tables:
            yield (_frame(table) for table in tables)

    def job_events(self, job_id: UUID, account_id: int, *, limit: int = 1000) -> list[JobEvent]:
        """The job's lifecycle events, oldest first."""
        rows = self.engine.rows("events", "job_events", _scope(job_id, account_id) | {"limit": limit})
        return [
            JobEvent(
                event_id=int(r[0]),
                at=r[1],
                event=str(r[2]),
                chunk_no=None if r[3] is None else int(r[3]),
                detail=str(r[4]),
            )
            for r in rows
        ]

    def _outcome_rows(self, name: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        return self.engine.rows("outcomes", name, params)


def _frame(table: pa.Table) -> pl.DataFrame:
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame


def encode_cursor(job_id: UUID, account_id: int, outcome: str, chunk_no: int, row_no: int) -> str:
    """The opaque cursor of the job's log after the row (outcome, chunk_no, row_no)."""
    return LOG_CURSOR.encode(_cursor_scope(job_id, account_id), (outcome, chunk_no, row_no))


def decode_cursor(job_id: UUID, account_id: int, cursor: str) -> tuple[str, int, int]:
    """Inverse of `encode_cursor` for this job of this account; anything else (another job's cursor
    included) raises `ValidationError` on field `cursor`."""
    return LOG_CURSOR.decode(cursor, _cursor_scope(job_id, account_id))


def _cursor_scope(job_id: UUID, account_id: int) -> str:
    return f"{account_id}/{job_id}"


def _log_item(row: tuple[Any, ...]) -> LogItem:
    # A row of `logs_page` or `errors_page`: outcome, chunk_no, row_no, entity_id, email, code, message, at.
    return LogItem(
        entity_id=None if row[3] is None else int(row[3]),
        email=str(row[4]),
        outcome=str(row[0]),
        code=str(row[5]),
        message=str(row[6]),
        at=row[7],
    )


def _check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_LOG_LIMIT:
        raise ValidationError(f"limit must be 1..{MAX_LOG_LIMIT}", field="limit", code="out_of_range")


def _after(position: tuple[str, int, int] | None) -> dict[str, Any]:
    # The empty outcome sorts before every real one, so the first page needs no special query.
    outcome, chunk_no, row_no = ("", 0, 0) if position is None else position
    return {"after_outcome": outcome, "after_chunk": chunk_no, "after_row": row_no}


def _scope(job_id: UUID, account_id: int) -> dict[str, Any]:
    return {"job_id": str(job_id), "account_id": account_id}
