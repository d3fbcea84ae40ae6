"""What the entity log's reads return, as the API serves them (msgspec Structs, encoded as they are)."""

from __future__ import annotations

from datetime import datetime

import msgspec


class ThroughputPoint(msgspec.Struct):
    """Entities that reached their final outcome in the second starting at `t`."""

    t: datetime
    entities: int


class LatencyPercentiles(msgspec.Struct):
    """Chunk apply time percentiles in milliseconds; null while no chunk has finished."""

    p50: float | None
    p95: float | None
    p99: float | None


class JobStats(msgspec.Struct):
    """Aggregates of a job's entity log (ClickHouse)."""

    outcomes: dict[str, int]
    errors_by_code: dict[str, int]
    skipped_by_reason: dict[str, int]
    throughput: list[ThroughputPoint]
    chunk_latency_ms: LatencyPercentiles


class LogItem(msgspec.Struct):
    """One entity's final outcome."""

    entity_id: int | None
    email: str
    outcome: str
    code: str
    message: str
    at: datetime


class LogPage(msgspec.Struct):
    """A page of a job's entity log; `next_cursor` is null on the last page."""

    items: list[LogItem]
    next_cursor: str | None


class ErrorReport(msgspec.Struct):
    """Failed and skipped entities: counts per code, and the first `limit` of them."""

    summary: dict[str, int]
    items: list[LogItem]


class JobEvent(msgspec.Struct):
    """One lifecycle event of a job."""

    event_id: int
    at: datetime
    event: str
    chunk_no: int | None
    detail: str
