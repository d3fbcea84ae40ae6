"""The entity log in ClickHouse: one client for chDB in process (`chdb:///path`) and for a server (`http(s)://`).

`ClickHouseStore` opens its clickhouse-connect client lazily, so a store can be built while ClickHouse is down
and every call reports that as `BackendUnavailableError`; `connect()` builds one and checks it answers. chDB
hosts one engine per process and per data path: clients on the same path share it, a second path in the same
process is refused. DDL lives in `sql/clickhouse/NNN_name.sql`, applied once each by `migrate()`; the reads
are the named queries of `sql/clickhouse/queries/`, always scoped by account and job, always with bound
parameters.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, TypedDict
from urllib.parse import urlsplit
from uuid import UUID

import clickhouse_connect
import polars as pl
import pyarrow as pa
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import Error as ClickHouseClientError
from clickhouse_connect.driver.exceptions import OperationalError

from crm_bulk.errors import (
    BackendUnavailableError,
    CrmBulkError,
    PermanentError,
    RetryableError,
    ValidationError,
)
from crm_bulk.sqlfiles import query, sql_root
from crm_bulk.store.migrate import discover

log = logging.getLogger(__name__)

SETTING = "CRM_BULK_CLICKHOUSE_URL"
OUTCOMES = ("succeeded", "failed", "skipped")
CANCELLED_CODE = "cancelled"
MAX_LOG_LIMIT = 1000

# Server error codes that a later attempt can clear: overload, timeouts, network, too many parts.
_TRANSIENT_CODES = frozenset(
    {3, 159, 160, 202, 203, 209, 210, 236, 241, 242, 252, 319, 394, 425, 439, 473, 999}
)
_STATEMENT_END = re.compile(r";\s*$", re.MULTILINE)

# Column order and Arrow types of an `entity_outcomes` insert.
OUTCOME_ROW_SCHEMA = pa.schema(
    [
        ("account_id", pa.uint64()),
        ("job_id", pa.string()),
        ("chunk_no", pa.uint32()),
        ("row_no", pa.uint32()),
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


class LatencyPercentiles(TypedDict):
    """Chunk apply time percentiles in milliseconds; None while no chunk has a duration."""

    p50: float | None
    p95: float | None
    p99: float | None


class ThroughputPoint(TypedDict):
    """Entities that reached their final outcome in the bucket starting at `t`."""

    t: datetime
    entities: int


class JobStats(TypedDict):
    """The body of `GET /bulk-actions/{id}/stats`."""

    outcomes: dict[str, int]
    errors_by_code: dict[str, int]
    skipped_by_reason: dict[str, int]
    throughput: list[ThroughputPoint]
    chunk_latency_ms: LatencyPercentiles


class LogItem(TypedDict):
    """One entity's final outcome."""

    entity_id: int | None
    email: str
    outcome: str
    code: str
    message: str
    at: datetime


class LogPage(TypedDict):
    """A page of `GET /bulk-actions/{id}/logs`; `next_cursor` is None on the last page."""

    items: list[LogItem]
    next_cursor: str | None


class JobEvent(TypedDict):
    """One lifecycle event of a job."""

    event_id: int
    at: datetime
    event: str
    chunk_no: int | None
    detail: str


class ClickHouseStore:
    """The entity log: DDL, Arrow inserts and the API's reads over one lazily opened client."""

    def __init__(self, dsn: str, *, connect_timeout: float = 5.0, send_receive_timeout: float = 60.0) -> None:
        """Check the DSN's shape (a bad one raises `BackendUnavailableError`); open nothing yet."""
        parts = _split_dsn(dsn)
        self.kind = "chdb" if parts.scheme == "chdb" else "server"
        self._dsn = dsn
        self._connect_timeout = connect_timeout
        self._send_receive_timeout = send_receive_timeout
        self._lock = threading.Lock()
        self._client: Client | None = None

    def __repr__(self) -> str:
        return f"ClickHouseStore({_redact(self._dsn)!r}, open={self._client is not None})"

    def client(self) -> Client:
        """The clickhouse-connect client, opened on first use; failure raises `BackendUnavailableError`."""
        with self._lock:
            if self._client is None:
                self._client = self._open()
            return self._client

    def _open(self) -> Client:
        options: dict[str, Any] = {"tz_mode": "aware"}
        if self.kind == "server":
            # One client is shared by threads; a generated session id would make their queries collide.
            options |= {
                "connect_timeout": self._connect_timeout,
                "send_receive_timeout": self._send_receive_timeout,
                "autogenerate_session_id": False,
            }
        try:
            client = clickhouse_connect.get_client(dsn=self._dsn, **options)
        except (ClickHouseClientError, OSError, RuntimeError, ValueError) as exc:
            raise BackendUnavailableError("clickhouse", SETTING, f"{_redact(self._dsn)}: {exc}") from exc
        log.info("clickhouse client open: %s (server %s)", _redact(self._dsn), client.server_version)
        return client

    def close(self) -> None:
        """Close the client; the next call opens a new one."""
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def ping(self) -> bool:
        """True when ClickHouse answers; for readiness probes, never raises."""
        try:
            self.check()
        except CrmBulkError as exc:
            log.warning("clickhouse ping failed: %s", exc)
            return False
        return True

    def migrate(self) -> list[int]:
        """Apply pending `sql/clickhouse/NNN_name.sql` files in order; return the versions applied now.

        Every statement is idempotent (`IF NOT EXISTS`), so concurrent starts that both apply a file are safe.
        """
        applied_now: list[int] = []
        with _translated("migrate"):
            client = self.client()
            client.command(query("clickhouse", "migrate", "create_migrations_table"))
            done = {
                int(r[0])
                for r in client.query(query("clickhouse", "migrate", "applied_versions")).result_rows
            }
            for migration in discover(sql_root() / "clickhouse"):
                if migration.version in done:
                    continue
                for statement in split_statements(migration.path.read_text()):
                    client.command(statement)
                client.command(
                    query("clickhouse", "migrate", "record_version"),
                    parameters={"version": migration.version, "name": migration.name},
                )
                log.info("applied clickhouse migration %03d_%s", migration.version, migration.name)
                applied_now.append(migration.version)
        return applied_now

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
        self._insert_arrow(table, rows)
        return int(rows.num_rows)

    def stats(self, job_id: UUID, account_id: int, *, bucket_seconds: int = 1) -> JobStats:
        """Outcome counts, error and skip breakdowns, throughput per bucket and chunk latency of one job.

        `outcomes.skipped` leaves out entities skipped because the job was cancelled; they are
        `outcomes.cancelled`, as in the job's counters.
        """
        if bucket_seconds < 1:
            raise ValidationError("bucket_seconds must be at least 1", field="bucket_seconds", code="invalid")
        params = _scope(job_id, account_id)
        counts = self._rows("outcome_code_counts", params)
        outcomes = dict.fromkeys((*OUTCOMES, CANCELLED_CODE), 0)
        errors_by_code: dict[str, int] = {}
        skipped_by_reason: dict[str, int] = {}
        for outcome, code, n in counts:
            if outcome == "skipped" and code == CANCELLED_CODE:
                outcomes[CANCELLED_CODE] += int(n)
                continue
            outcomes[str(outcome)] = outcomes.get(str(outcome), 0) + int(n)
            if outcome == "failed":
                errors_by_code[str(code)] = int(n)
            elif outcome == "skipped":
                skipped_by_reason[str(code)] = int(n)
        throughput: list[ThroughputPoint] = [
            {"t": t, "entities": int(n)}
            for t, n in self._rows("throughput", params | {"bucket_seconds": bucket_seconds})
        ]
        ((chunks, quantiles),) = self._rows("chunk_latency", params)
        latency: LatencyPercentiles = {"p50": None, "p95": None, "p99": None}
        if int(chunks) > 0:
            latency = {"p50": float(quantiles[0]), "p95": float(quantiles[1]), "p99": float(quantiles[2])}
        return {
            "outcomes": outcomes,
            "errors_by_code": errors_by_code,
            "skipped_by_reason": skipped_by_reason,
            "throughput": throughput,
            "chunk_latency_ms": latency,
        }

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
        if not 1 <= limit <= MAX_LOG_LIMIT:
            raise ValidationError(f"limit must be 1..{MAX_LOG_LIMIT}", field="limit", code="out_of_range")
        params = _scope(job_id, account_id) | _after(cursor)
        params |= {"outcome": outcome or "", "entity_id": entity_id, "limit": limit + 1}
        rows = self._rows("logs_page", params)
        more = len(rows) > limit
        rows = rows[:limit]
        items: list[LogItem] = [
            {
                "entity_id": None if r[3] is None else int(r[3]),
                "email": str(r[4]),
                "outcome": str(r[0]),
                "code": str(r[5]),
                "message": str(r[6]),
                "at": r[7],
            }
            for r in rows
        ]
        next_cursor = encode_cursor(str(rows[-1][0]), int(rows[-1][1]), int(rows[-1][2])) if more else None
        return {"items": items, "next_cursor": next_cursor}

    def error_summary(self, job_id: UUID, account_id: int) -> dict[str, int]:
        """{code: entities} over the job's failed and skipped entities, most frequent first."""
        return {str(code): int(n) for code, n in self._rows("error_summary", _scope(job_id, account_id))}

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
        while True:
            frame = pl.from_arrow(self._arrow("errors_page", params))
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

    def job_events(self, job_id: UUID, account_id: int, *, limit: int = 1000) -> list[JobEvent]:
        """The job's lifecycle events, oldest first."""
        rows = self._rows("job_events", _scope(job_id, account_id) | {"limit": limit}, group="events")
        return [
            {
                "event_id": int(r[0]),
                "at": r[1],
                "event": str(r[2]),
                "chunk_no": None if r[3] is None else int(r[3]),
                "detail": str(r[4]),
            }
            for r in rows
        ]

    def count_outcomes(self, job_id: UUID, account_id: int) -> int:
        """Outcome rows of the job as reads see them (a chunk shipped twice counts once)."""
        ((n,),) = self._rows("count_rows", _scope(job_id, account_id))
        return int(n)

    # The primitives below are the only methods that reach the engine; `crm_bulk.store.host.RemoteStore`
    # replaces exactly these to run them in the process that owns chDB.

    def check(self) -> None:
        """Raise unless ClickHouse answers a trivial query (readiness probes report the message)."""
        with _translated("SELECT 1"):
            self.client().command("SELECT 1")

    def _rows(self, name: str, params: dict[str, Any], *, group: str = "outcomes") -> list[tuple[Any, ...]]:
        with _translated(name):
            result = self.client().query(query("clickhouse", group, name), parameters=params)
        return [tuple(r) for r in result.result_rows]

    def _insert_arrow(self, table: str, rows: pa.Table) -> None:
        with _translated(f"insert into {table}"):
            self.client().insert_arrow(table, rows)

    def _arrow(self, name: str, params: dict[str, Any], *, group: str = "outcomes") -> pa.Table:
        with _translated(name):
            return self.client().query_arrow(query("clickhouse", group, name), parameters=params)


def connect(dsn: str, **options: float) -> ClickHouseStore:
    """A store whose client is open and answering; `BackendUnavailableError` otherwise."""
    store = ClickHouseStore(dsn, **options)
    store.client()
    return store


def split_statements(text: str) -> list[str]:
    """The statements of a DDL file: split at a `;` that ends a line, comment-only pieces dropped."""
    statements = []
    for piece in _STATEMENT_END.split(text):
        code_lines = [
            line for line in piece.splitlines() if line.strip() and not line.strip().startswith("--")
        ]
        if code_lines:
            statements.append(piece.strip())
    return statements


def encode_cursor(outcome: str, chunk_no: int, row_no: int) -> str:
    """The opaque logs cursor after the row (outcome, chunk_no, row_no)."""
    raw = json.dumps([outcome, chunk_no, row_no], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, int, int]:
    """Inverse of `encode_cursor`; anything else raises `ValidationError` on field `cursor`."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        outcome, chunk_no, row_no = json.loads(raw)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise ValidationError("malformed cursor", field="cursor", code="invalid_cursor") from exc
    if (
        outcome not in OUTCOMES
        or not isinstance(chunk_no, int)
        or not isinstance(row_no, int)
        or not 0 <= chunk_no < 2**32
        or not 0 <= row_no < 2**32
    ):
        raise ValidationError("malformed cursor", field="cursor", code="invalid_cursor")
    return outcome, chunk_no, row_no


def _after(cursor: str | None) -> dict[str, Any]:
    # The empty outcome sorts before every real one, so the first page needs no special query.
    outcome, chunk_no, row_no = ("", 0, 0) if cursor is None else decode_cursor(cursor)
    return {"after_outcome": outcome, "after_chunk": chunk_no, "after_row": row_no}


def _scope(job_id: UUID, account_id: int) -> dict[str, Any]:
    return {"job_id": str(job_id), "account_id": account_id}


@contextmanager
def _translated(what: str) -> Iterator[None]:
    """Map clickhouse-connect errors onto the crm-bulk tree: unreachable, transient, or a bug."""
    try:
        yield
    except OperationalError as exc:
        if exc.code is None:
            raise BackendUnavailableError("clickhouse", SETTING, f"{what}: {exc}") from exc
        raise RetryableError(f"clickhouse {what}: {exc}") from exc
    except ClickHouseClientError as exc:
        if exc.code in _TRANSIENT_CODES:
            raise RetryableError(f"clickhouse {what}: {exc}") from exc
        raise PermanentError(f"clickhouse {what}: {exc}") from exc


def _split_dsn(dsn: str) -> Any:
    try:
        parts = urlsplit(dsn)
        port = parts.port
    except ValueError as exc:
        raise BackendUnavailableError("clickhouse", SETTING, f"malformed URL: {exc}") from None
    if parts.scheme == "chdb":
        if not (parts.path or parts.netloc):
            raise BackendUnavailableError("clickhouse", SETTING, "expected chdb:///absolute/data/path")
    elif parts.scheme in {"http", "https"}:
        if not parts.hostname:
            raise BackendUnavailableError("clickhouse", SETTING, f"no host in {_redact(dsn)!r}")
        if port == 0:
            raise BackendUnavailableError("clickhouse", SETTING, f"bad port in {_redact(dsn)!r}")
    else:
        raise BackendUnavailableError(
            "clickhouse",
            SETTING,
            f"unsupported scheme in {_redact(dsn)!r}; expected chdb://, http:// or https://",
        )
    return parts


def _redact(dsn: str) -> str:
    try:
        password = urlsplit(dsn).password
    except ValueError:
        return "<malformed URL>"
    return dsn if password is None else dsn.replace(f":{password}@", ":***@")
