"""Jobs derived from jobs: what a dry run and a revert cost beside the real run, and what the before-images
take, on one database, one stream, chunk by chunk (no API, queue or log).

    .venv/bin/python benchmarks/bench_derived.py --rows 200000 --repeat 2

For the update (every contact's company) and the import (a quarter of the rows, half of them existing
emails, `on_duplicate: update`), dry and real runs alternate `--repeat` times on the same data (the real
run's change is undone by plain SQL before the next pair); then the last real run is reverted. Times are the
ledger's per-chunk apply durations summed (`bulk_action_chunks.duration_ms`, the chunk's transaction up to
its commit). Image sizes are the stored zstd Arrow IPC bytes per entity written.
Databases are created on the test PostgreSQL server (CRM_BULK_TEST_DATABASE_URL, from .services/env when
unset) and dropped at the end.
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any
from uuid import UUID

import msgspec
import psycopg

from apply_harness import Databases, server_url
from crm_bulk.actions.specs import decode_request
from crm_bulk.apply.engine import apply_chunk
from crm_bulk.jobs.derived import revert_job
from crm_bulk.jobs.lifecycle import finish_jobs, start_planned_jobs
from crm_bulk.jobs.repository import create_job
from crm_bulk.planner import plan_job
from crm_bulk.store.migrate import migrate

SEED = (
    "INSERT INTO contacts (account_id, email, email_normalized, company, first_name)"
    " SELECT %(a)s, 'u' || g || '@example.com', 'u' || g || '@example.com', 'Co ' || (g %% 50), NULL"
    " FROM generate_series(1, %(n)s) AS g"
)
UNDO: dict[str, tuple[str, ...]] = {
    "update": ("UPDATE contacts SET company = 'Co ' || (id %% 50) WHERE account_id = %(a)s",),
    "import": (
        "DELETE FROM contacts WHERE account_id = %(a)s AND email LIKE 'n%%'",
        "UPDATE contacts SET first_name = NULL, last_import_job = NULL WHERE account_id = %(a)s",
    ),
}


def _bodies(rows: int) -> dict[str, dict[str, Any]]:
    records = [
        {"email": f"u{i}@example.com" if i % 2 else f"n{i}@example.com", "first_name": f"F{i}"}
        for i in range(1, rows // 4 + 1)
    ]
    return {
        "update": {"action": "update", "target": {"all": True}, "changes": {"set": {"company": "Acme Inc"}}},
        "import": {"action": "import", "on_duplicate": "update", "records": records},
    }


def _run(conn: psycopg.Connection[Any], job_id: UUID) -> dict[str, Any]:
    """Apply a planned job's chunks, end it; its counts and summed chunk time."""
    start_planned_jobs(conn)
    for (chunk_no,) in conn.execute(
        "SELECT chunk_no FROM bulk_action_chunks WHERE job_id = %s ORDER BY chunk_no", (job_id,)
    ).fetchall():
        apply_chunk(conn, job_id, chunk_no, worker="bench")
    # The log is not read here; stamp the outboxes shipped so the job can end.
    conn.execute("UPDATE bulk_action_chunks SET outcomes_shipped_at = now() WHERE job_id = %s", (job_id,))
    finish_jobs(conn)
    row = conn.execute(
        "SELECT j.total, j.succeeded, j.skipped, j.failed, sum(c.duration_ms),"
        " coalesce(sum(octet_length(i.before_image)), 0), coalesce(sum(i.image_rows), 0)"
        " FROM bulk_actions AS j JOIN bulk_action_chunks AS c ON c.job_id = j.id"
        " LEFT JOIN bulk_action_chunk_images AS i ON i.job_id = c.job_id AND i.chunk_no = c.chunk_no"
        " WHERE j.id = %s GROUP BY j.id",
        (job_id,),
    ).fetchone()
    assert row is not None
    names = ("total", "succeeded", "skipped", "failed", "ms", "image_bytes", "image_rows")
    return dict(zip(names, row, strict=True))


def _submit(conn: psycopg.Connection[Any], account: int, body: dict[str, Any], chunk_size: int) -> UUID:
    job = create_job(
        conn, account_id=account, created_by=None, request=decode_request(msgspec.json.encode(body))
    )
    plan_job(conn, job.id, chunk_size=chunk_size)
    return job.id


COUNTS = ("total", "succeeded", "skipped", "failed")


def _measure(conn: psycopg.Connection[Any], account: int, name: str, body: dict[str, Any], args: Any) -> str:
    """Alternate dry and real runs of `body`, then revert the last real run; one table row."""
    real: list[dict[str, Any]] = []
    dry: list[dict[str, Any]] = []
    last_real: UUID | None = None
    for pair in range(args.repeat):
        dry.append(_run(conn, _submit(conn, account, {**body, "dry_run": True}, args.chunk_size)))
        last_real = _submit(conn, account, body, args.chunk_size)
        real.append(_run(conn, last_real))
        # A dry run counts what the real run does on the same data.
        assert [dry[-1][k] for k in COUNTS] == [real[-1][k] for k in COUNTS], (dry[-1], real[-1])
        if pair < args.repeat - 1:
            for undo in UNDO[name]:
                conn.execute(undo, {"a": account})
    assert last_real is not None
    revert = revert_job(conn, account_id=account, created_by=None, job_id=last_real, retention_days=30)
    reverted = _run(conn, revert.id)
    real_ms = statistics.median(r["ms"] for r in real)
    dry_ms = statistics.median(d["ms"] for d in dry)
    per_entity = real[-1]["image_bytes"] / max(real[-1]["image_rows"], 1)
    restored = f"{reverted['ms'] / 1000:.1f} s ({reverted['succeeded']:,} restored)"
    return (
        f"| {name} | {real[-1]['total']:,} | {real_ms / 1000:.1f} s | {dry_ms / 1000:.1f} s |"
        f" {dry_ms / real_ms:.2f} | {restored} | {per_entity:.1f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--server-url", help="PostgreSQL URL on the server to use (default: the test server)")
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--chunk-size", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=2, help="dry/real pairs per action; medians")
    args = parser.parse_args()
    dbs = Databases(server_url(args.server_url))
    try:
        dsn = dbs.dsn(dbs.create("derived"))
        migrate(dsn)
        with psycopg.connect(dsn, autocommit=True) as conn:
            row = conn.execute("INSERT INTO accounts (name) VALUES ('bench') RETURNING id").fetchone()
            assert row is not None
            account = int(row[0])
            conn.execute(SEED, {"a": account, "n": args.rows})
            conn.execute("VACUUM (ANALYZE) contacts")
            print("| action | entities | real run | dry run | dry / real | revert | image bytes per entity |")
            print("|---|---:|---:|---:|---:|---:|---:|")
            for name, body in _bodies(args.rows).items():
                print(_measure(conn, account, name, body, args), flush=True)
    finally:
        dbs.drop_all()


if __name__ == "__main__":
    main()
