"""The two yardsticks the platform is measured against, on the same data in the same run.

- The raw-SQL ceiling: the best pure-PostgreSQL way to make a change — per stream one transaction with a
  binary COPY of its share of the input (when there is input) and ONE set-based statement — run as K parallel
  streams over disjoint id ranges (or row ranges, for an import), K being the platform's worker processes.
  No API, no queue, no outcome log: the database's own speed for the work.
- The seed algorithm: what a first script does — count the targets, walk them in `OFFSET` pages of 1000 and
  issue one `UPDATE` per row in autocommit, retrying a failed row 3 times 1 s apart. It is far too slow to run
  whole, so `seed_estimate` times a sample of pages spread over the target range and extrapolates: the page
  query's cost grows with its offset (fitted as a line), the per-row cost is the sample's mean.

Both take a DSN and plain inputs, so any harness (the CLI bench, the apply-engine benchmark) can share them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl
import psycopg
from psycopg import sql

from crm_bulk.bench.copy_binary import ColumnKind, encode_copy_binary
from crm_bulk.postgres import Conn
from crm_bulk.sqlfiles import query

log = logging.getLogger(__name__)

SEED_PAGE_SIZE = 1000
SEED_ATTEMPTS = 3
SEED_RETRY_WAIT_SECONDS = 1.0
# The import stage's columns and their binary COPY kinds, in `ceiling_import_copy` order.
IMPORT_COPY_COLUMNS: tuple[tuple[str, ColumnKind], ...] = (
    ("email", "text"),
    ("email_normalized", "text"),
    ("first_name", "text"),
    ("last_name", "text"),
    ("phone", "text"),
    ("phone_e164", "text"),
    ("company", "text"),
    ("job_title", "text"),
    ("tags", "text[]"),
    ("custom_fields", "jsonb"),
)

StreamWork = Callable[[Conn], int]


@dataclass(frozen=True)
class BaselineResult:
    """Rows changed by all streams together and the wall time from the common start to the last commit."""

    rows: int
    seconds: float
    streams: int

    @property
    def rows_per_second(self) -> float:
        """Throughput over the whole run."""
        return self.rows / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class SeedEstimate:
    """The seed algorithm's time for `entities`, extrapolated from a timed sample."""

    entities: int
    sampled_rows: int
    sampled_pages: int
    sample_seconds: float
    per_row_ms: float
    count_seconds: float
    page_query_seconds: float
    estimated_seconds: float
    method: str

    @property
    def entities_per_second(self) -> float:
        """The extrapolated throughput."""
        return self.entities / self.estimated_seconds if self.estimated_seconds > 0 else 0.0


# ------------------------------------------------------------------------------------------ parallel streams


def run_streams(dsn: str, work: Sequence[StreamWork]) -> BaselineResult:
    """Run each `work(conn)` in its own thread and connection, all released together once connected.

    Each returns the rows it changed; threads suffice because the work happens in the server (psycopg waits
    on the socket without the GIL). The first failure is re-raised after every stream has ended.
    """
    barrier = threading.Barrier(len(work))
    spans: list[tuple[float, float, int]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def stream(task: StreamWork) -> None:
        try:
            with psycopg.connect(dsn) as conn:
                conn.execute("SELECT 1")
                conn.commit()
                barrier.wait()
                started = time.perf_counter()
                rows = task(conn)
                conn.commit()
                finished = time.perf_counter()
            with lock:
                spans.append((started, finished, rows))
        except BaseException as exc:
            barrier.abort()
            with lock:
                errors.append(exc)

    threads = [
        threading.Thread(target=stream, args=(task,), name=f"baseline-{i}") for i, task in enumerate(work)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    real = [e for e in errors if not isinstance(e, threading.BrokenBarrierError)]
    if real or errors:
        raise (real or errors)[0]
    seconds = max(s[1] for s in spans) - min(s[0] for s in spans)
    return BaselineResult(rows=sum(s[2] for s in spans), seconds=seconds, streams=len(work))


def id_ranges(ids: npt.NDArray[np.int64], streams: int) -> list[tuple[int, int]]:
    """`streams` inclusive (first, last) id ranges holding about equal numbers of `ids` (sorted)."""
    shares = [share for share in np.array_split(np.sort(ids), streams) if share.size]
    return [(int(share[0]), int(share[-1])) for share in shares]


def ids_payload(ids: npt.NDArray[np.int64]) -> bytes:
    """Binary COPY input of one bigint column."""
    return encode_copy_binary(pl.DataFrame({"id": ids}), [("id", "int8")])


def import_payloads(staged: pl.DataFrame, streams: int) -> list[bytes]:
    """The staged import rows (valid, normalised, first occurrences) as `streams` binary COPY inputs."""
    payloads = []
    for share in np.array_split(np.arange(staged.height), streams):
        if share.size:
            part = staged.slice(int(share[0]), int(share.size))
            payloads.append(encode_copy_binary(part, list(IMPORT_COPY_COLUMNS)))
    return payloads


# ------------------------------------------------------------------------------------------------- ceiling


def ceiling_import(dsn: str, *, account_id: int, payloads: Sequence[bytes]) -> BaselineResult:
    """Per stream: COPY its rows into a temp table, one `INSERT … ON CONFLICT DO UPDATE`, commit."""

    def work(payload: bytes) -> StreamWork:
        def run(conn: Conn) -> int:
            conn.execute(query("postgres", "bench", "ceiling_import_stage"))
            with conn.cursor() as cur, cur.copy(query("postgres", "bench", "ceiling_import_copy")) as copy:
                copy.write(payload)
            cur = conn.execute(query("postgres", "bench", "ceiling_import"), {"account_id": account_id})
            return cur.rowcount

        return run

    return run_streams(dsn, [work(p) for p in payloads])


def ceiling_ids_update(
    dsn: str, *, statement: str, params: Mapping[str, Any], ids: npt.NDArray[np.int64], streams: int
) -> BaselineResult:
    """Per stream: COPY its share of the id list (a contiguous run of the sorted ids) into a temp table, then
    `statement` (a named bench query joining `ceiling_stage_ids`, bounded by `first_id`/`last_id` so the
    planner can read just that id range) with `params`, commit."""
    shares = [share for share in np.array_split(np.sort(ids), streams) if share.size]

    def work(share: npt.NDArray[np.int64]) -> StreamWork:
        payload = ids_payload(share)
        bounds = {"first_id": int(share[0]), "last_id": int(share[-1])}

        def run(conn: Conn) -> int:
            conn.execute(query("postgres", "bench", "ceiling_id_stage"))
            with conn.cursor() as cur, cur.copy(query("postgres", "bench", "ceiling_id_copy")) as copy:
                copy.write(payload)
            return conn.execute(query("postgres", "bench", statement), {**params, **bounds}).rowcount

        return run

    return run_streams(dsn, [work(share) for share in shares])


def ceiling_filter_update(
    dsn: str,
    *,
    statement: str,
    leading: Sequence[object],
    account_id: int,
    ranges: Sequence[tuple[int, int]],
    filter_sql: sql.Composable,
    filter_params: Sequence[object],
) -> BaselineResult:
    """Per stream: one `statement` (a named bench query with a `{filter}` placeholder) over its id range.

    Positional parameters: `leading` (the change's values), account_id, first id, last id, the filter's.
    """
    composed = sql.SQL(query("postgres", "bench", statement)).format(filter=filter_sql)

    def work(first: int, last: int) -> StreamWork:
        def run(conn: Conn) -> int:
            params = [*leading, account_id, first, last, *filter_params]
            return conn.execute(composed, params).rowcount

        return run

    return run_streams(dsn, [work(first, last) for first, last in ranges])


# ---------------------------------------------------------------------------------------------- seed loop


def _with_retry(conn: Conn, statement: str, params: Mapping[str, Any]) -> None:
    """The seed's per-row retry: 3 attempts, 1 s apart, on errors the connection survives."""
    for attempt in range(1, SEED_ATTEMPTS + 1):
        try:
            conn.execute(statement, dict(params))
            return
        except psycopg.errors.OperationalError:
            if attempt == SEED_ATTEMPTS:
                raise
            time.sleep(SEED_RETRY_WAIT_SECONDS)


def sample_pages(total_pages: int, sample: int) -> list[int]:
    """`sample` page numbers spread evenly from the first page to the last."""
    if total_pages <= 0:
        return []
    picks = np.linspace(0, total_pages - 1, num=min(sample, total_pages))
    return sorted({round(p) for p in picks})


def seed_paged_update(
    dsn: str,
    *,
    account_id: int,
    filter_sql: sql.Composable,
    filter_params: Sequence[object],
    row_statement: str,
    row_params: Mapping[str, Any],
    pages: int,
) -> tuple[SeedEstimate, list[int]]:
    """The seed algorithm over a filter: count, then `pages` sampled OFFSET pages with one `row_statement`
    (a named bench query taking `id`, `account_id` and `row_params`) per row. Returns the estimate and the
    ids it touched (so a caller can undo a sampled delete). One function: the timed region and the estimate
    built from it read best side by side."""
    count_query = sql.SQL(query("postgres", "bench", "seed_count")).format(filter=filter_sql)
    page_query = sql.SQL(query("postgres", "bench", "seed_page")).format(filter=filter_sql)
    statement = query("postgres", "bench", row_statement)
    touched: list[int] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        started = time.perf_counter()
        row = conn.execute(count_query, [account_id, *filter_params]).fetchone()
        count_seconds = time.perf_counter() - started
        count = int(row[0]) if row else 0
        total_pages = -(-count // SEED_PAGE_SIZE)
        offsets: list[float] = []
        page_seconds: list[float] = []
        row_seconds = 0.0
        each_row = {**row_params, "account_id": account_id}
        for page in sample_pages(total_pages, pages):
            offset = page * SEED_PAGE_SIZE
            page_params = [account_id, *filter_params, SEED_PAGE_SIZE, offset]
            query_took, rows_took, ids = _seed_page(conn, page_query, page_params, statement, each_row)
            offsets.append(float(offset))
            page_seconds.append(query_took)
            row_seconds += rows_took
            touched.extend(ids)
    page_total = _page_query_total(offsets, page_seconds, total_pages)
    per_row = row_seconds / len(touched) if touched else 0.0
    estimate = SeedEstimate(
        entities=count,
        sampled_rows=len(touched),
        sampled_pages=len(offsets),
        sample_seconds=count_seconds + sum(page_seconds) + row_seconds,
        per_row_ms=per_row * 1000,
        count_seconds=count_seconds,
        page_query_seconds=page_total,
        estimated_seconds=count_seconds + page_total + per_row * count,
        method=(
            f"count, then OFFSET pages of {SEED_PAGE_SIZE} with a per-row UPDATE (autocommit, "
            f"{SEED_ATTEMPTS} attempts); {len(offsets)} of {total_pages} pages timed, page-query cost fitted "
            "linear in the offset, extrapolated to every page"
        ),
    )
    return estimate, touched


def _seed_page(
    conn: Conn,
    page_query: sql.Composed,
    page_params: Sequence[object],
    statement: str,
    row_params: Mapping[str, Any],
) -> tuple[float, float, list[int]]:
    """One timed seed page: its query, then one `statement` per id; (query seconds, row seconds, ids)."""
    started = time.perf_counter()
    ids = [int(r[0]) for r in conn.execute(page_query, page_params).fetchall()]
    query_seconds = time.perf_counter() - started
    started = time.perf_counter()
    for contact_id in ids:
        _with_retry(conn, statement, {**row_params, "id": contact_id})
    return query_seconds, time.perf_counter() - started, ids


def _page_query_total(offsets: Sequence[float], seconds: Sequence[float], total_pages: int) -> float:
    """Σ over every page of the page query's time, with time = a + b·offset fitted on the sample."""
    if not offsets or total_pages == 0:
        return 0.0
    if len(offsets) == 1:
        a, b = seconds[0], 0.0
    else:
        b, a = (float(v) for v in np.polyfit(np.array(offsets), np.array(seconds), 1))
        b = max(b, 0.0)
    all_offsets = np.arange(total_pages, dtype=np.float64) * SEED_PAGE_SIZE
    return float(np.maximum(a + b * all_offsets, 0.0).sum())


def seed_listed_rows(
    dsn: str,
    *,
    rows: pl.DataFrame,
    entities: int,
    row_statement: str,
    pages: int,
    method: str,
    budget_seconds: float | None = None,
) -> SeedEstimate:
    """The seed algorithm over a given list (ids, import records): `pages` sampled pages of 1000 rows of
    `rows` (columns: `row_statement`'s parameters), one statement per row; extrapolated to `entities`.

    With `budget_seconds`, sampling stops after the page on which the timed work reaches it.
    """
    statement = query("postgres", "bench", row_statement)
    total_pages = -(-rows.height // SEED_PAGE_SIZE)
    done = timed_pages = 0
    seconds = 0.0
    with psycopg.connect(dsn, autocommit=True) as conn:
        for page in sample_pages(total_pages, pages):
            # A page becomes Python rows before its timing starts (the seed script's own parsing is not
            # what is measured).
            page_rows = rows.slice(page * SEED_PAGE_SIZE, SEED_PAGE_SIZE).to_dicts()
            started = time.perf_counter()
            for params in page_rows:
                _with_retry(conn, statement, params)
            seconds += time.perf_counter() - started
            done += len(page_rows)
            timed_pages += 1
            if budget_seconds is not None and seconds >= budget_seconds:
                break
    per_row = seconds / done if done else 0.0
    return SeedEstimate(
        entities=entities,
        sampled_rows=done,
        sampled_pages=timed_pages,
        sample_seconds=seconds,
        per_row_ms=per_row * 1000,
        count_seconds=0.0,
        page_query_seconds=0.0,
        estimated_seconds=per_row * entities,
        method=f"{method}; {done} rows in {timed_pages} pages of {SEED_PAGE_SIZE} timed, extrapolated",
    )
