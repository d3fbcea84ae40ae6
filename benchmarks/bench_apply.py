"""Apply-engine throughput: 1M-entity `update` and `import` jobs applied chunk by chunk, beside the raw-SQL
ceiling and the seed algorithm, in the same run, on the same data, with the same parallelism.

    .venv/bin/python benchmarks/bench_apply.py                # 1M rows, 2 streams, plus the sweeps
    .venv/bin/python benchmarks/bench_apply.py --rows 200000 --no-sweeps

- platform: `crm_bulk.apply.apply_chunk` over the job's ledger chunks, `--streams` worker processes pulling
  chunk numbers from a shared counter (planning is timed separately).
- ceiling and seed: the baselines of `crm-bulk bench` (`crm_bulk.bench.baselines`). The ceiling runs
  `--streams` parallel transactions: for the update one set-based `UPDATE` per id range, for the import a
  binary COPY of the valid, normalised rows into a temp table and one upsert. The seed algorithm runs one
  statement per row on one connection in autocommit, timed for `--seed-seconds` (whole pages of 1000 rows)
  and extrapolated to every row (at its speed 1M rows take hours).
Every variant starts from an identical copy of the data (`CREATE DATABASE … TEMPLATE`) after a CHECKPOINT.

The sweeps measure the chunk size and the contacts fillfactor the platform ships with, and the COPY input
format of the import staging table (Polars CSV vs a vectorised numpy binary encoder).
Databases are created on the test PostgreSQL server (CRM_BULK_TEST_DATABASE_URL, from .services/env when
unset) and dropped at the end.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import polars as pl
import psycopg
from psycopg import sql

from apply_harness import (
    ACCOUNT_ID,
    Databases,
    build_template,
    hot_stats,
    run_platform,
    server_url,
    statement,
)
from apply_report import print_report
from crm_bulk import kernels
from crm_bulk.actions.filters import compile_filter
from crm_bulk.actions.specs import BulkActionRequest, Changes, Target
from crm_bulk.apply.staging import IMPORT_STAGE_COLUMNS, csv_payload
from crm_bulk.bench import baselines, scenarios
from crm_bulk.bench.baselines import BaselineResult
from crm_bulk.bench.copy_binary import ColumnKind, encode_copy_binary
from crm_bulk.bench.datagen import generate_contacts
from crm_bulk.jobs.repository import create_job
from crm_bulk.planner import append_import_chunk, finish_import, plan_job
from crm_bulk.postgres import Conn
from crm_bulk.sqlfiles import query

# The update sets job_title, which no index covers, so it can be HOT; the ceiling's and the seed's statements
# (`ceiling_set_job_title`, `seed_set_job_title`) set the same column.
UPDATE_FIELD = "job_title"


# ----------------------------------------------------------------------------------------------- platform


def _platform_job(
    dsn: str, request: BulkActionRequest, plan: Callable[[Conn, uuid.UUID], int], streams: int
) -> dict[str, Any]:
    """Create the job, plan it with `plan` (timed apart), apply it; the run's figures and table stats."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        job = create_job(conn, account_id=ACCOUNT_ID, created_by=None, request=request)
        started = time.monotonic()
        chunks = plan(conn, job.id)
        plan_seconds = time.monotonic() - started
    result = run_platform(dsn, job.id, chunks, streams)
    return {**result, "plan_seconds": plan_seconds, "chunks": chunks, **hot_stats(dsn)}


def platform_update(
    dsn: str, *, streams: int, chunk_size: int, value: str, company: str | None = None
) -> dict[str, Any]:
    """Set UPDATE_FIELD on every contact, or on those of one `company` (scattered rows)."""
    target = Target(all=True) if company is None else Target(filter={"company": {"eq": company}})
    request = BulkActionRequest(action="update", target=target, changes=Changes(set={UPDATE_FIELD: value}))
    return _platform_job(
        dsn, request, lambda conn, job_id: plan_job(conn, job_id, chunk_size=chunk_size), streams
    )


def platform_import(dsn: str, frame: pl.DataFrame, *, streams: int, chunk_size: int) -> dict[str, Any]:
    """Import `frame` as one streamed slice; planning covers the checks and the ledger rows."""

    def plan(conn: Conn, job_id: uuid.UUID) -> int:
        append_import_chunk(conn, job_id, frame, seen=kernels.SeenKeys(), chunk_size=chunk_size)
        return finish_import(conn, job_id)

    return _platform_job(dsn, BulkActionRequest(action="import"), plan, streams)


# ---------------------------------------------------------------------------------------------- baselines


def _ceiling(result: BaselineResult, dsn: str) -> dict[str, Any]:
    return {**asdict(result), "rate": result.rows_per_second, **hot_stats(dsn)}


def seed_sample(
    dsn: str, rows: pl.DataFrame, *, row_statement: str, method: str, seconds: float
) -> dict[str, Any]:
    """The seed algorithm, one `row_statement` per row of `rows` in order, for about `seconds` (whole pages),
    extrapolated to every row."""
    estimate = baselines.seed_listed_rows(
        dsn,
        rows=rows,
        entities=rows.height,
        row_statement=row_statement,
        pages=rows.height,  # no fewer than the pages: each is sampled in turn until the budget is spent
        method=method,
        budget_seconds=seconds,
    )
    return {**asdict(estimate), "rate": estimate.entities_per_second}


def ceiling_update(dsn: str, *, streams: int, value: str) -> dict[str, Any]:
    """The update's ceiling: per stream one `UPDATE … SET job_title` over its id range (target all)."""
    everything, no_params = compile_filter({})
    result = baselines.ceiling_filter_update(
        dsn,
        statement="ceiling_set_job_title",
        leading=[value, value],
        account_id=ACCOUNT_ID,
        ranges=baselines.id_ranges(scenarios.live_ids(dsn, ACCOUNT_ID), streams),
        filter_sql=everything,
        filter_params=no_params,
    )
    return _ceiling(result, dsn)


def ceiling_import(dsn: str, staged: pl.DataFrame, *, streams: int) -> dict[str, Any]:
    """The import's ceiling: per stream a binary COPY of its share of `staged` and one upsert."""
    payloads = baselines.import_payloads(staged, streams)
    return _ceiling(baselines.ceiling_import(dsn, account_id=ACCOUNT_ID, payloads=payloads), dsn)


def seed_update(dsn: str, *, value: str, seconds: float) -> dict[str, Any]:
    """The seed algorithm over the list of every contact id: one `UPDATE` per row."""
    ids = pl.DataFrame({"id": scenarios.live_ids(dsn, ACCOUNT_ID)})
    rows = ids.with_columns(account_id=pl.lit(ACCOUNT_ID), value=pl.lit(value))
    method = "ids from the list, one UPDATE per row (autocommit, 3 attempts)"
    return seed_sample(dsn, rows, row_statement="seed_set_job_title", method=method, seconds=seconds)


def seed_import(dsn: str, frame: pl.DataFrame, *, seconds: float) -> dict[str, Any]:
    """The seed algorithm over the file's rows: one `INSERT … ON CONFLICT` per row."""
    rows = scenarios.seed_import_rows(frame).with_columns(account_id=pl.lit(ACCOUNT_ID))
    method = "one INSERT … ON CONFLICT per row (autocommit, 3 attempts), email trimmed and lower-cased"
    return seed_sample(dsn, rows, row_statement="seed_insert", method=method, seconds=seconds)


# ------------------------------------------------------------------------------------------------- runs


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median rate, with every run's rate kept beside it."""
    ordered = sorted(runs, key=lambda r: r["rate"])
    return {**ordered[len(ordered) // 2], "rates": [r["rate"] for r in runs]}


def _summary(runs: dict[str, list[dict[str, Any]]], seed: dict[str, Any]) -> dict[str, Any]:
    """Median platform and ceiling runs, the seed, and each platform run against the ceiling run right after
    it: the noise of a shared machine drifts slowly, so adjacent runs compare best."""
    pairs = zip(runs["platform"], runs["ceiling"], strict=True)
    return {
        **{variant: _median_run(found) for variant, found in runs.items()},
        "seed": seed,
        "paired_ratios": [p["rate"] / c["rate"] for p, c in pairs],
    }


def compare(dbs: Databases, frame: pl.DataFrame, args: argparse.Namespace) -> dict[str, Any]:
    """Platform, ceiling and seed for update and import on the same data; platform and ceiling
    alternate `--repeat` times so a noisy neighbour hits both alike."""
    staged = scenarios.staged_rows(frame)
    empty = build_template(dbs, "empty", None, fillfactor=None)
    full = build_template(dbs, "full", staged, fillfactor=None)
    update: dict[str, list[dict[str, Any]]] = {"platform": [], "ceiling": []}
    imports: dict[str, list[dict[str, Any]]] = {"platform": [], "ceiling": []}
    streams, size = args.streams, args.chunk_size
    for run in range(args.repeat):
        print(f"update, run {run + 1}/{args.repeat} …", flush=True)
        with dbs.clone(full, f"u_platform{run}") as dsn:
            update["platform"].append(
                platform_update(dsn, streams=streams, chunk_size=size, value="platform")
            )
        with dbs.clone(full, f"u_ceiling{run}") as dsn:
            update["ceiling"].append(ceiling_update(dsn, streams=streams, value="ceiling"))
        print(f"import, run {run + 1}/{args.repeat} …", flush=True)
        with dbs.clone(empty, f"i_platform{run}") as dsn:
            imports["platform"].append(platform_import(dsn, frame, streams=streams, chunk_size=size))
        with dbs.clone(empty, f"i_ceiling{run}") as dsn:
            imports["ceiling"].append(ceiling_import(dsn, staged, streams=streams))
    print("seed samples …", flush=True)
    with dbs.clone(full, "u_seed") as dsn:
        update_seed = seed_update(dsn, value="seed", seconds=args.seed_seconds)
    with dbs.clone(empty, "i_seed") as dsn:
        import_seed = seed_import(dsn, frame, seconds=args.seed_seconds)
    return {"update": _summary(update, update_seed), "import": _summary(imports, import_seed)}


# ------------------------------------------------------------------------------------------------- sweeps


def chunk_size_sweep(
    dbs: Databases, sample: pl.DataFrame, templates: tuple[str, str], args: argparse.Namespace
) -> dict[int, dict[str, Any]]:
    """Platform update and import rates per chunk size (medians of `--sweep-repeat` runs)."""
    empty, full = templates
    sizes = [int(s) for s in args.chunk_sizes.split(",") if s]
    rates: dict[int, dict[str, list[float]]] = {size: {"update": [], "import": []} for size in sizes}
    # Sizes interleave within each round, so a noisy neighbour spreads over all of them.
    for run in range(args.sweep_repeat):
        for size in sizes:
            print(f"sweep: chunk size {size}, run {run + 1}/{args.sweep_repeat} …", flush=True)
            with dbs.clone(full, f"cs_u{size}_{run}") as dsn:
                update = platform_update(dsn, streams=args.streams, chunk_size=size, value=f"cs{size}")
            with dbs.clone(empty, f"cs_i{size}_{run}") as dsn:
                imported = platform_import(dsn, sample, streams=args.streams, chunk_size=size)
            rates[size]["update"].append(update["rate"])
            rates[size]["import"].append(imported["rate"])
    return {
        size: {action: statistics.median(values) for action, values in found.items()}
        | {f"{action}_runs": values for action, values in found.items()}
        for size, found in rates.items()
    }


def fillfactor_sweep(
    dbs: Databases, sample: pl.DataFrame, staged: pl.DataFrame, fillfactor: int, args: argparse.Namespace
) -> dict[str, Any]:
    """Two full updates, a scattered one and an import with the contacts table at `fillfactor`."""
    streams, size = args.streams, args.chunk_size
    loaded = build_template(dbs, f"ff{fillfactor}", staged, fillfactor=fillfactor)
    with dbs.clone(loaded, f"ff_u{fillfactor}") as dsn:
        first = platform_update(dsn, streams=streams, chunk_size=size, value="pass1")
        second = platform_update(dsn, streams=streams, chunk_size=size, value="pass2")
    with dbs.clone(loaded, f"ff_s{fillfactor}") as dsn:
        # One company's contacts: about one row in fourteen, scattered over every page.
        scattered = platform_update(dsn, streams=streams, chunk_size=size, value="scattered", company="Acme")
    dbs.drop(loaded)
    blank = build_template(dbs, f"ffe{fillfactor}", None, fillfactor=fillfactor)
    with dbs.clone(blank, f"ff_i{fillfactor}") as dsn:
        imported = platform_import(dsn, sample, streams=streams, chunk_size=size)
    dbs.drop(blank)
    return {
        "update_pass1": first["rate"],
        "hot_pass1": first["hot_share"],
        "update_pass2": second["rate"],
        "hot_both_passes": second["hot_share"],
        "scattered_update": scattered["rate"],
        "hot_scattered": scattered["hot_share"],
        "import": imported["rate"],
        "table_mb_after_updates": second["table_mb"],
        "table_mb_imported": imported["table_mb"],
    }


def copy_format_comparison(dsn: str, staged: pl.DataFrame, *, rows: int, repeats: int) -> dict[str, Any]:
    """Encode time and server COPY time of one import chunk into the platform's staging table, CSV (Polars)
    vs binary (numpy encoder); medians of `repeats`."""
    chunk = staged.head(rows).with_row_index("row_no").select(IMPORT_STAGE_COLUMNS)
    kinds: list[tuple[str, ColumnKind]] = [("row_no", "int4"), *baselines.IMPORT_COPY_COLUMNS]
    encoders: dict[str, tuple[Callable[[], bytes], sql.Composable]] = {
        "CSV": (
            lambda: csv_payload(chunk, IMPORT_STAGE_COLUMNS),
            sql.SQL(query("postgres", "contacts", "copy_import_stage")),
        ),
        "BINARY": (lambda: encode_copy_binary(chunk, kinds), statement("copy_import_stage_binary")),
    }
    results: dict[str, Any] = {}
    with psycopg.connect(dsn) as conn:
        conn.execute(query("postgres", "contacts", "create_import_stage"))
        for name, (encode, copy_statement) in encoders.items():
            encode_ms, copy_ms = [], []
            for _ in range(repeats):
                started = time.perf_counter()
                payload = encode()
                encode_ms.append((time.perf_counter() - started) * 1000)
                started = time.perf_counter()
                with conn.cursor() as cur, cur.copy(copy_statement) as copy:
                    copy.write(payload)
                copy_ms.append((time.perf_counter() - started) * 1000)
                conn.commit()  # the staging table empties on commit, as after each chunk
            results[name] = {
                "encode_ms": statistics.median(encode_ms),
                "copy_ms": statistics.median(copy_ms),
                "bytes": len(payload),
            }
    return results


def sweeps(dbs: Databases, frame: pl.DataFrame, args: argparse.Namespace) -> dict[str, Any]:
    """Chunk size, fillfactor and COPY format, on `--sweep-rows` contacts."""
    sample = frame.head(args.sweep_rows)
    staged = scenarios.staged_rows(sample)
    empty = build_template(dbs, "sweep_empty", None, fillfactor=None)
    full = build_template(dbs, "sweep_full", staged, fillfactor=None)
    found: dict[str, Any] = {
        "chunk_size": chunk_size_sweep(dbs, sample, (empty, full), args),
        "fillfactor": {},
    }
    for fillfactor in [int(f) for f in args.fillfactors.split(",") if f]:
        print(f"sweep: fillfactor {fillfactor} …", flush=True)
        found["fillfactor"][fillfactor] = fillfactor_sweep(dbs, sample, staged, fillfactor, args)
    print("sweep: copy formats …", flush=True)
    with dbs.clone(empty, "copyfmt") as dsn:
        found["copy_format"] = copy_format_comparison(dsn, staged, rows=args.chunk_size, repeats=30)
    return found


# ----------------------------------------------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--server-url", help="PostgreSQL URL on the server to use (default: the test server)")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--streams", type=int, default=2)
    parser.add_argument("--chunk-size", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=1, help="platform/ceiling runs per action; medians")
    parser.add_argument(
        "--seed-seconds", type=float, default=15.0, help="time per seed sample (whole pages of 1000 rows)"
    )
    parser.add_argument("--sweep-rows", type=int, default=200_000)
    parser.add_argument("--sweep-repeat", type=int, default=3, help="runs per chunk size; medians")
    parser.add_argument("--chunk-sizes", default="1000,2500,5000,10000,20000")
    parser.add_argument("--fillfactors", default="100,90,85,70,50")
    parser.add_argument("--no-sweeps", action="store_true")
    parser.add_argument(
        "--sweeps-only", action="store_true", help="skip the platform/ceiling/seed comparison"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    return parser.parse_args()


def main() -> None:
    """Run the comparison and the sweeps, print the report, write the JSON."""
    args = parse_args()
    dbs = Databases(server_url(args.server_url))
    results: dict[str, Any] = {"rows": args.rows, "streams": args.streams, "chunk_size": args.chunk_size}
    started = time.monotonic()
    print(f"generating {args.rows:,} contacts …", flush=True)
    frame = generate_contacts(args.rows, invalid_email_rate=0.0)
    try:
        if not args.sweeps_only:
            results.update(compare(dbs, frame, args))
        if not args.no_sweeps:
            results["sweeps"] = sweeps(dbs, frame, args)
    finally:
        dbs.drop_all()
    results["total_seconds"] = time.monotonic() - started
    print_report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
