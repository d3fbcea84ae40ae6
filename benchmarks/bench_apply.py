"""Apply-engine throughput: 1M-entity `update` and `import` jobs applied chunk by chunk, beside the raw-SQL
ceiling and the seed-style per-row loop, in the same run, on the same data, with the same parallelism.

    .venv/bin/python benchmarks/bench_apply.py                # 1M rows, 2 streams, plus the sweeps
    .venv/bin/python benchmarks/bench_apply.py --rows 200000 --no-sweeps

- platform: `crm_bulk.apply.apply_chunk` over the job's ledger chunks, `--streams` worker processes pulling
  chunk numbers from a shared counter (planning is timed separately).
- ceiling: per stream one binary COPY of its share of the final (already normalised) rows into a temp table
  and one set-based statement for all of them, in one transaction: the database's own speed for the work.
- seed loop: per stream one `UPDATE`/`INSERT` per row in autocommit, as a naive seed script does; run for
  `--seed-seconds` and reported as a rate (at this speed 1M rows would take hours).
Every variant starts from an identical copy of the data (`CREATE DATABASE … TEMPLATE`) after a CHECKPOINT.

The sweeps measure the chunk size and the contacts fillfactor the platform ships with, and the COPY input
format of the import staging table (Polars CSV vs a vectorised numpy binary encoder).
Databases are created on the test PostgreSQL server (CRM_BULK_TEST_DATABASE_URL, from .services/env when
unset) and dropped at the end.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import re
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import psycopg
from psycopg import sql

from crm_bulk import kernels
from crm_bulk.actions.specs import BulkActionRequest, Changes, Target
from crm_bulk.apply.checks import check_records
from crm_bulk.apply.engine import apply_chunk
from crm_bulk.ledger.payload import import_frame
from crm_bulk.apply.staging import IMPORT_STAGE_COLUMNS, csv_payload
from crm_bulk.bench.copy_binary import ColumnKind, encode_copy_binary
from crm_bulk.bench.datagen import generate_contacts
from crm_bulk.jobs.repository import create_job
from crm_bulk.planner import append_import_chunk, finish_import, plan_job
from crm_bulk.store.migrate import migrate

ROOT = Path(__file__).resolve().parents[1]
CONTACT_COLUMNS = IMPORT_STAGE_COLUMNS[1:]  # the staged columns without row_no
BINARY_KINDS: dict[str, ColumnKind] = {
    "row_no": "int4",
    "tags": "text[]",
    "custom_fields": "jsonb",
    **{name: "text" for name in CONTACT_COLUMNS if name not in ("tags", "custom_fields")},
}
UPDATE_FIELD = "job_title"  # not indexed: an update of it can be HOT


# ---------------------------------------------------------------------------------------------- databases


def server_url(explicit: str | None) -> str:
    """The PostgreSQL server to benchmark on (any database URL on it)."""
    url = explicit or os.environ.get("CRM_BULK_TEST_DATABASE_URL")
    if not url:
        env = ROOT / ".services" / "env"
        found = (
            dict(re.findall(r"^export (\w+)=(.*)$", env.read_text(), re.MULTILINE)) if env.exists() else {}
        )
        url = found.get("CRM_BULK_TEST_DATABASE_URL")
    if not url:
        sys.exit("no server: pass --server-url or start the services (scripts/services.sh start)")
    return url


class Databases:
    """Throw-away databases on one server, all dropped by `drop_all`."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.prefix = f"crm_bulk_bench_{uuid.uuid4().hex[:8]}"
        self.created: list[str] = []

    def dsn(self, name: str) -> str:
        return self.url.rsplit("/", 1)[0] + "/" + name

    def create(self, purpose: str, template: str | None = None) -> str:
        name = f"{self.prefix}_{purpose}"
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template is not None:
            statement = sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
                sql.Identifier(name), sql.Identifier(template)
            )
        with psycopg.connect(self.url, autocommit=True) as admin:
            admin.execute(statement)
        self.created.append(name)
        return name

    def drop(self, name: str) -> None:
        with psycopg.connect(self.url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        if name in self.created:
            self.created.remove(name)

    def drop_all(self) -> None:
        for name in list(reversed(self.created)):
            self.drop(name)

    @contextmanager
    def clone(self, template: str, purpose: str) -> Iterator[str]:
        """A fresh copy of `template`, checkpointed so every variant starts with the same WAL state."""
        name = self.create(purpose, template)
        try:
            with psycopg.connect(self.dsn(name), autocommit=True) as conn:
                conn.execute("CHECKPOINT")
            yield self.dsn(name)
        finally:
            self.drop(name)


def build_template(dbs: Databases, purpose: str, base: pl.DataFrame | None, *, fillfactor: int | None) -> str:
    """A migrated database with one account (id 1) and, when `base` is given, its contacts loaded."""
    name = dbs.create(purpose)
    migrate(dbs.dsn(name))
    with psycopg.connect(dbs.dsn(name), autocommit=True) as conn:
        conn.execute("INSERT INTO accounts (name) VALUES ('bench')")
        if fillfactor is not None:
            conn.execute(
                sql.SQL("ALTER TABLE contacts SET (fillfactor = {})").format(sql.Literal(fillfactor))
            )
        if base is not None:
            rows = base.select(pl.lit("1").alias("account_id"), *CONTACT_COLUMNS)
            columns = sql.SQL(", ").join(map(sql.Identifier, ["account_id", *CONTACT_COLUMNS]))
            with (
                conn.cursor() as cur,
                cur.copy(sql.SQL("COPY contacts ({}) FROM STDIN (FORMAT CSV)").format(columns)) as copy,
            ):
                copy.write(csv_payload(rows, ["account_id", *CONTACT_COLUMNS]))
        conn.execute("VACUUM (FREEZE, ANALYZE)")
    return name


def staged_rows(frame: pl.DataFrame) -> pl.DataFrame:
    """What the platform stages for `frame`: valid, normalised, first occurrences (the ceiling's input)."""
    return check_records(import_frame(frame)).filter(pl.col("code").is_null()).select(IMPORT_STAGE_COLUMNS)


# ------------------------------------------------------------------------------------------------ workers


@dataclass
class StreamReport:
    """One stream's timing: monotonic start/end (comparable across processes), rows, phase totals."""

    started: float
    finished: float
    rows: int
    chunks: int = 0
    phase_ms: dict[str, float] = field(default_factory=dict)


@dataclass
class Sync:
    """What the streams of one run share: a start barrier, a result queue and a chunk counter."""

    barrier: Any
    out: Any
    counter: Any


def _platform_stream(task: dict[str, Any], sync: Sync) -> None:
    job_id, chunk_count = uuid.UUID(task["job_id"]), task["chunks"]
    with psycopg.connect(task["dsn"], autocommit=True) as conn:
        conn.execute("SELECT 1")
        sync.barrier.wait()
        report = StreamReport(started=time.monotonic(), finished=0.0, rows=0)
        while True:
            with sync.counter.get_lock():
                chunk_no = sync.counter.value
                sync.counter.value += 1
            if chunk_no >= chunk_count:
                break
            result = apply_chunk(conn, job_id, chunk_no, worker=f"bench-{os.getpid()}")
            report.rows += result.entity_count
            report.chunks += 1
            for phase, ms in result.phase_ms.items():
                report.phase_ms[phase] = report.phase_ms.get(phase, 0.0) + ms
        report.finished = time.monotonic()
    sync.out.put(asdict(report))


def _ceiling_stream(task: dict[str, Any], sync: Sync) -> None:
    payload = Path(task["payload_path"]).read_bytes()
    with psycopg.connect(task["dsn"]) as conn:
        conn.execute("SELECT 1")
        conn.commit()
        sync.barrier.wait()
        started = time.monotonic()
        conn.execute(task["setup"].encode())
        with conn.cursor() as cur, cur.copy(task["copy"].encode()) as cp:
            cp.write(payload)
        rows = conn.execute(task["statement"].encode()).rowcount
        conn.commit()
        sync.out.put(asdict(StreamReport(started=started, finished=time.monotonic(), rows=rows)))


def _seed_stream(task: dict[str, Any], sync: Sync) -> None:
    rows = json.loads(Path(task["rows_path"]).read_text())
    statement = task["statement"].encode()
    with psycopg.connect(task["dsn"], autocommit=True) as conn:
        conn.execute("SELECT 1")
        sync.barrier.wait()
        started = time.monotonic()
        done = 0
        for params in rows:
            conn.execute(statement, params)
            done += 1
            if done % 100 == 0 and time.monotonic() - started > task["seconds"]:
                break
        sync.out.put(asdict(StreamReport(started=started, finished=time.monotonic(), rows=done)))


def run_streams(
    target: Callable[[dict[str, Any], Sync], None], tasks: list[dict[str, Any]]
) -> dict[str, Any]:
    """Start one spawned process per task, release them together, return rows/s and phase totals."""
    ctx = mp.get_context("spawn")
    sync = Sync(barrier=ctx.Barrier(len(tasks)), out=ctx.Queue(), counter=ctx.Value("i", 0))
    processes = []
    for task in tasks:
        process = ctx.Process(target=target, args=(task, sync))
        process.start()
        processes.append(process)
    reports = [StreamReport(**sync.out.get(timeout=3600)) for _ in processes]
    for process in processes:
        process.join()
        if process.exitcode != 0:
            raise RuntimeError(f"a benchmark stream failed (exit code {process.exitcode})")
    seconds = max(r.finished for r in reports) - min(r.started for r in reports)
    rows = sum(r.rows for r in reports)
    phases: dict[str, float] = {}
    for report in reports:
        for phase, ms in report.phase_ms.items():
            phases[phase] = phases.get(phase, 0.0) + ms
    return {"rows": rows, "seconds": seconds, "rate": rows / seconds, "phase_ms": phases}


# ---------------------------------------------------------------------------------------------- variants


def hot_stats(dsn: str) -> dict[str, Any]:
    """Updates, HOT share and size of the contacts table (statistics of exited backends are flushed)."""
    time.sleep(0.6)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(
            "SELECT n_tup_upd, n_tup_hot_upd, pg_table_size('contacts'), pg_indexes_size('contacts') "
            "FROM pg_stat_user_tables WHERE relname = 'contacts'"
        ).fetchone()
    assert row is not None
    updates, hot, table, indexes = row
    return {
        "updates": updates,
        "hot_share": hot / updates if updates else 0.0,
        "table_mb": table / 2**20,
        "indexes_mb": indexes / 2**20,
    }


def platform_update(
    dsn: str, *, streams: int, chunk_size: int, value: str, company: str | None = None
) -> dict[str, Any]:
    """Set the unindexed UPDATE_FIELD on every contact, or on those of one `company` (scattered rows)."""
    target = Target(all=True) if company is None else Target(filter={"company": {"eq": company}})
    body = BulkActionRequest(action="update", target=target, changes=Changes(set={UPDATE_FIELD: value}))
    with psycopg.connect(dsn, autocommit=True) as conn:
        job = create_job(conn, account_id=1, created_by=None, request=body)
        started = time.monotonic()
        chunks = plan_job(conn, job.id, chunk_size=chunk_size)
        plan_seconds = time.monotonic() - started
    task = {"dsn": dsn, "job_id": str(job.id), "chunks": chunks}
    result = run_streams(_platform_stream, [task] * streams)
    return {**result, "plan_seconds": plan_seconds, "chunks": chunks, **hot_stats(dsn)}


def platform_import(dsn: str, frame: pl.DataFrame, *, streams: int, chunk_size: int) -> dict[str, Any]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        job = create_job(conn, account_id=1, created_by=None, request=BulkActionRequest(action="import"))
        started = time.monotonic()
        append_import_chunk(conn, job.id, frame, seen=kernels.SeenKeys(), chunk_size=chunk_size)
        chunks = finish_import(conn, job.id)
        plan_seconds = time.monotonic() - started
    task = {"dsn": dsn, "job_id": str(job.id), "chunks": chunks}
    result = run_streams(_platform_stream, [task] * streams)
    return {**result, "plan_seconds": plan_seconds, "chunks": chunks, **hot_stats(dsn)}


def _write(directory: str, name: str, data: bytes) -> str:
    path = Path(directory) / name
    path.write_bytes(data)
    return str(path)


def ceiling_update(dsn: str, *, streams: int, value: str, workdir: str) -> dict[str, Any]:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT string_agg(int8send(id), ''::bytea ORDER BY id) FROM contacts").fetchone()
    assert row is not None
    ids = np.frombuffer(bytes(row[0]), dtype=">i8").astype(np.int64)
    shares = np.array_split(ids, streams)
    setup = "CREATE TEMP TABLE stage (id bigint NOT NULL) ON COMMIT DROP"
    copy = "COPY stage (id) FROM STDIN (FORMAT BINARY)"
    statement = (
        f"UPDATE contacts AS c SET {UPDATE_FIELD} = '{value}', updated_at = now() FROM stage AS s "
        f"WHERE c.id = s.id AND c.account_id = 1 AND c.deleted_at IS NULL "
        f"AND c.{UPDATE_FIELD} IS DISTINCT FROM "
        f"'{value}'"
    )
    tasks: list[dict[str, Any]] = []
    for i, share in enumerate(shares):
        payload = encode_copy_binary(pl.DataFrame({"id": share}), [("id", "int8")])
        path = _write(workdir, f"ids{i}.bin", payload)
        tasks.append({"dsn": dsn, "setup": setup, "copy": copy, "statement": statement, "payload_path": path})
    return {**run_streams(_ceiling_stream, tasks), **hot_stats(dsn)}


def ceiling_import(dsn: str, staged: pl.DataFrame, *, streams: int, workdir: str) -> dict[str, Any]:
    columns = ", ".join(IMPORT_STAGE_COLUMNS)
    setup = (
        'CREATE TEMP TABLE stage (row_no integer, email text, email_normalized text COLLATE "C", '
        "first_name text, last_name text, phone text, phone_e164 text, company text, job_title text, "
        'tags text[] COLLATE "C", custom_fields jsonb) ON COMMIT DROP'
    )
    copy = f"COPY stage ({columns}) FROM STDIN (FORMAT BINARY)"
    targets = ", ".join(CONTACT_COLUMNS)
    statement = (
        f"INSERT INTO contacts (account_id, {targets}) SELECT 1, email, email_normalized, first_name, "
        "last_name, phone, phone_e164, company, job_title, coalesce(tags, '{}'), "
        "coalesce(custom_fields, '{}') FROM stage ORDER BY email_normalized "
        "ON CONFLICT (account_id, email_normalized) WHERE deleted_at IS NULL DO NOTHING"
    )
    tasks: list[dict[str, Any]] = []
    for i, share in enumerate(np.array_split(np.arange(staged.height), streams)):
        part = staged[int(share[0]) : int(share[-1]) + 1] if share.size else staged.clear()
        payload = encode_copy_binary(part, [(c, BINARY_KINDS[c]) for c in IMPORT_STAGE_COLUMNS])
        path = _write(workdir, f"import{i}.bin", payload)
        tasks.append({"dsn": dsn, "setup": setup, "copy": copy, "statement": statement, "payload_path": path})
    return {**run_streams(_ceiling_stream, tasks), **hot_stats(dsn)}


def seed_update(dsn: str, *, streams: int, value: str, seconds: float, workdir: str) -> dict[str, Any]:
    with psycopg.connect(dsn) as conn:
        ids = [r[0] for r in conn.execute("SELECT id FROM contacts ORDER BY id LIMIT 200000").fetchall()]
    statement = (
        f"UPDATE contacts SET {UPDATE_FIELD} = %s, updated_at = now() WHERE id = %s AND account_id = 1"
    )
    tasks: list[dict[str, Any]] = []
    for i in range(streams):
        rows = [[value, contact_id] for contact_id in ids[i::streams]]
        path = _write(workdir, f"seed-u{i}.json", json.dumps(rows).encode())
        tasks.append({"dsn": dsn, "statement": statement, "rows_path": path, "seconds": seconds})
    return run_streams(_seed_stream, tasks)


def seed_import(
    dsn: str, frame: pl.DataFrame, *, streams: int, seconds: float, workdir: str
) -> dict[str, Any]:
    # The seed script's normalisation: trim and lower-case the email in Python, one INSERT per row.
    sample = frame.head(200_000).with_columns(
        email_normalized=pl.col("email").str.strip_chars().str.to_lowercase(),
        custom_fields=pl.col("custom_fields").fill_null("{}"),
    )
    statement = (
        "INSERT INTO contacts (account_id, email, email_normalized, first_name, last_name, phone, company, "
        "job_title, tags, custom_fields) VALUES (1, %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb) "
        "ON CONFLICT (account_id, email_normalized) WHERE deleted_at IS NULL DO NOTHING"
    )
    names = [
        "email",
        "email_normalized",
        "first_name",
        "last_name",
        "phone",
        "company",
        "job_title",
        "tags",
        "custom_fields",
    ]
    rows = sample.select(names).with_columns(pl.col("tags").fill_null([])).rows()
    tasks: list[dict[str, Any]] = []
    for i in range(streams):
        part = [list(r) for r in rows[i::streams]]
        path = _write(workdir, f"seed-i{i}.json", json.dumps(part).encode())
        tasks.append({"dsn": dsn, "statement": statement, "rows_path": path, "seconds": seconds})
    return run_streams(_seed_stream, tasks)


# ------------------------------------------------------------------------------------------------- sweeps


def copy_format_comparison(dsn: str, staged: pl.DataFrame, *, rows: int, repeats: int) -> dict[str, Any]:
    """Encode time and server COPY time of one import chunk, CSV (Polars) vs binary (numpy encoder)."""
    chunk = staged.head(rows)
    kinds = [(c, BINARY_KINDS[c]) for c in IMPORT_STAGE_COLUMNS]
    encoders: dict[str, Callable[[], bytes]] = {
        "CSV": lambda: csv_payload(chunk, IMPORT_STAGE_COLUMNS),
        "BINARY": lambda: encode_copy_binary(chunk, kinds),
    }
    results: dict[str, Any] = {}
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "CREATE TEMP TABLE stage (row_no integer, email text, email_normalized text, first_name text,"
            " last_name text, phone text, phone_e164 text, company text, job_title text, tags text[],"
            " custom_fields jsonb)"
        )
        for fmt, encode in encoders.items():
            encode_ms, copy_ms = [], []
            for _ in range(repeats):
                started = time.perf_counter()
                payload = encode()
                encode_ms.append((time.perf_counter() - started) * 1000)
                conn.execute("TRUNCATE stage")
                started = time.perf_counter()
                with (
                    conn.cursor() as cur,
                    cur.copy(sql.SQL("COPY stage FROM STDIN (FORMAT {})").format(sql.SQL(fmt))) as copy,
                ):
                    copy.write(payload)
                copy_ms.append((time.perf_counter() - started) * 1000)
            results[fmt] = {
                "encode_ms": statistics.median(encode_ms),
                "copy_ms": statistics.median(copy_ms),
                "bytes": len(payload),
            }
    return results


# ------------------------------------------------------------------------------------------------- report


def fmt_rate(rate: float) -> str:
    return f"{rate:,.0f}"


def phase_table(phases: dict[str, float]) -> str:
    total = sum(phases.values()) or 1.0
    order = ["lock", "decode", "checks", "stage", "statement", "outcomes", "outbox", "ledger", "commit"]
    cells = [f"{name} {phases.get(name, 0.0) / total:.0%}" for name in order if name in phases]
    return ", ".join(cells)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--server-url", help="PostgreSQL URL on the server to use (default: the test server)")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--streams", type=int, default=2)
    parser.add_argument("--chunk-size", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=1, help="platform/ceiling runs per action; medians")
    parser.add_argument("--seed-seconds", type=float, default=15.0)
    parser.add_argument("--sweep-rows", type=int, default=200_000)
    parser.add_argument("--sweep-repeat", type=int, default=3, help="runs per chunk size; medians")
    parser.add_argument("--chunk-sizes", default="1000,2500,5000,10000,20000")
    parser.add_argument("--fillfactors", default="100,90,85,70,50")
    parser.add_argument("--no-sweeps", action="store_true")
    parser.add_argument(
        "--sweeps-only", action="store_true", help="skip the platform/ceiling/seed comparison"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    dbs = Databases(server_url(args.server_url))
    results: dict[str, Any] = {"rows": args.rows, "streams": args.streams, "chunk_size": args.chunk_size}
    started = time.monotonic()
    print(f"generating {args.rows:,} contacts …", flush=True)
    frame = generate_contacts(args.rows, invalid_email_rate=0.0)
    try:
        with tempfile.TemporaryDirectory() as workdir:
            if not args.sweeps_only:
                results.update(compare(dbs, frame, args, workdir))
            if not args.no_sweeps:
                results["sweeps"] = sweeps(dbs, frame, args)
    finally:
        dbs.drop_all()
    results["total_seconds"] = time.monotonic() - started
    print_report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median rate, with every run's rate kept beside it."""
    ordered = sorted(runs, key=lambda r: r["rate"])
    return {**ordered[len(ordered) // 2], "rates": [r["rate"] for r in runs]}


def compare(dbs: Databases, frame: pl.DataFrame, args: argparse.Namespace, workdir: str) -> dict[str, Any]:
    """Platform, ceiling and seed loop for update and import on the same data; platform and ceiling
    alternate `--repeat` times so a noisy neighbour hits both alike."""
    staged = staged_rows(frame)
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
            update["ceiling"].append(ceiling_update(dsn, streams=streams, value="ceiling", workdir=workdir))
        print(f"import, run {run + 1}/{args.repeat} …", flush=True)
        with dbs.clone(empty, f"i_platform{run}") as dsn:
            imports["platform"].append(platform_import(dsn, frame, streams=streams, chunk_size=size))
        with dbs.clone(empty, f"i_ceiling{run}") as dsn:
            imports["ceiling"].append(ceiling_import(dsn, staged, streams=streams, workdir=workdir))
    print("seed loops …", flush=True)
    with dbs.clone(full, "u_seed") as dsn:
        update_seed = seed_update(
            dsn, streams=streams, value="seed", seconds=args.seed_seconds, workdir=workdir
        )
    with dbs.clone(empty, "i_seed") as dsn:
        import_seed = seed_import(dsn, frame, streams=streams, seconds=args.seed_seconds, workdir=workdir)
    return {
        action: {
            **{k: _median_run(v) for k, v in runs.items()},
            "seed": seed,
            # Each platform run against the ceiling run right after it: the noise of a shared machine drifts
            # slowly, so adjacent runs compare best.
            "paired_ratios": [
                p["rate"] / c["rate"] for p, c in zip(runs["platform"], runs["ceiling"], strict=True)
            ],
        }
        for action, runs, seed in (("update", update, update_seed), ("import", imports, import_seed))
    }


def sweeps(dbs: Databases, frame: pl.DataFrame, args: argparse.Namespace) -> dict[str, Any]:
    """Chunk size, fillfactor and COPY format, on `--sweep-rows` contacts."""
    sample = frame.head(args.sweep_rows)
    staged = staged_rows(sample)
    found: dict[str, Any] = {"chunk_size": {}, "fillfactor": {}}
    empty = build_template(dbs, "sweep_empty", None, fillfactor=None)
    full = build_template(dbs, "sweep_full", staged, fillfactor=None)
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
    for size, found_rates in rates.items():
        found["chunk_size"][size] = {
            action: statistics.median(values) for action, values in found_rates.items()
        } | {f"{action}_runs": values for action, values in found_rates.items()}
    for fillfactor in [int(f) for f in args.fillfactors.split(",") if f]:
        print(f"sweep: fillfactor {fillfactor} …", flush=True)
        loaded = build_template(dbs, f"ff{fillfactor}", staged, fillfactor=fillfactor)
        with dbs.clone(loaded, f"ff_u{fillfactor}") as dsn:
            first = platform_update(dsn, streams=args.streams, chunk_size=args.chunk_size, value="pass1")
            second = platform_update(dsn, streams=args.streams, chunk_size=args.chunk_size, value="pass2")
        with dbs.clone(loaded, f"ff_s{fillfactor}") as dsn:
            # One company's contacts: about one row in fourteen, scattered over every page.
            scattered = platform_update(
                dsn, streams=args.streams, chunk_size=args.chunk_size, value="scattered", company="Acme"
            )
        dbs.drop(loaded)
        blank = build_template(dbs, f"ffe{fillfactor}", None, fillfactor=fillfactor)
        with dbs.clone(blank, f"ff_i{fillfactor}") as dsn:
            imported = platform_import(dsn, sample, streams=args.streams, chunk_size=args.chunk_size)
        dbs.drop(blank)
        found["fillfactor"][fillfactor] = {
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
    print("sweep: copy formats …", flush=True)
    with dbs.clone(empty, "copyfmt") as dsn:
        found["copy_format"] = copy_format_comparison(dsn, staged, rows=args.chunk_size, repeats=30)
    return found


def print_report(results: dict[str, Any]) -> None:
    if "update" in results:
        print(
            f"\n## Apply throughput: {results['rows']:,} entities, {results['streams']} streams, "
            f"chunk size {results['chunk_size']}"
        )
        print(
            "\n| action | platform (entities/s) | ceiling | seed loop | platform / ceiling "
            "| paired runs: median (each) | platform / seed |"
        )
        print("|---|---:|---:|---:|---:|---|---:|")
        for action in ("update", "import"):
            r = results[action]
            p, c, s = r["platform"]["rate"], r["ceiling"]["rate"], r["seed"]["rate"]
            pairs = r["paired_ratios"]
            each = " ".join(f"{x:.2f}" for x in pairs)
            print(
                f"| {action} | {fmt_rate(p)} | {fmt_rate(c)} | {fmt_rate(s)} | {p / c:.2f} "
                f"| {statistics.median(pairs):.2f} ({each}) | {p / s:.0f}x |"
            )
        for action in ("update", "import"):
            p, c = results[action]["platform"], results[action]["ceiling"]
            print(
                f"\n{action}: planning {p['plan_seconds']:.1f} s for {p['chunks']} chunks; "
                f"apply {p['seconds']:.1f} s;"
                f" ceiling {c['seconds']:.1f} s; HOT share platform {p['hot_share']:.0%} / ceiling "
                f"{c['hot_share']:.0%}; runs platform {[round(x) for x in p['rates']]} ceiling "
                f"{[round(x) for x in c['rates']]}"
            )
            print(f"{action} time per phase (sum over streams): {phase_table(p['phase_ms'])}")
    sweeps = results.get("sweeps")
    if sweeps:
        print("\n### Chunk size (platform, entities/s, median of runs)\n")
        print("| chunk size | update | import | update runs | import runs |\n|---:|---:|---:|---|---|")
        for size, r in sweeps["chunk_size"].items():
            print(
                f"| {size} | {fmt_rate(r['update'])} | {fmt_rate(r['import'])} "
                f"| {' '.join(fmt_rate(x) for x in r['update_runs'])} "
                f"| {' '.join(fmt_rate(x) for x in r['import_runs'])} |"
            )
    if sweeps and sweeps["fillfactor"]:
        print("\n### contacts fillfactor (platform, entities/s; HOT share of updates)\n")
        print(
            "| fillfactor | update pass 1 | HOT pass 1 | update pass 2 | HOT both passes "
            "| scattered update | "
            "HOT scattered | import | table MB (2 updates) | table MB (imported) |"
        )
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for ff, r in sweeps["fillfactor"].items():
            print(
                f"| {ff} | {fmt_rate(r['update_pass1'])} | {r['hot_pass1']:.0%} "
                f"| {fmt_rate(r['update_pass2'])} | {r['hot_both_passes']:.0%} "
                f"| {fmt_rate(r['scattered_update'])} | {r['hot_scattered']:.0%} | {fmt_rate(r['import'])} "
                f"| {r['table_mb_after_updates']:.0f} | {r['table_mb_imported']:.0f} |"
            )
    if sweeps:
        print("\n### COPY input format for one import chunk (median)\n")
        print("| format | encode ms | COPY ms | bytes |\n|---|---:|---:|---:|")
        for fmt, r in sweeps["copy_format"].items():
            print(f"| {fmt} | {r['encode_ms']:.1f} | {r['copy_ms']:.1f} | {r['bytes']:,} |")
    print(f"\nbenchmark wall time {results['total_seconds']:.0f} s")


if __name__ == "__main__":
    main()
