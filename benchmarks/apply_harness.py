"""The apply-engine benchmark's harness: throw-away databases on the test server, their preparation and
statistics, and the worker processes that apply a job's chunks.

Its SQL is in benchmarks/bench_apply.sql, named blocks read with `crm_bulk.sqlfiles.parse_named_blocks`;
database names are composed in as identifiers.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import re
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import polars as pl
import psycopg
from psycopg import sql

from crm_bulk.apply.engine import apply_chunk
from crm_bulk.bench import baselines
from crm_bulk.sqlfiles import parse_named_blocks, query
from crm_bulk.store.migrate import migrate

ROOT = Path(__file__).resolve().parents[1]
# The benchmark account: the first (and only) row of `accounts` in every benchmark database.
ACCOUNT_ID = 1


@cache
def _statements() -> dict[str, str]:
    return parse_named_blocks(Path(__file__).with_name("bench_apply.sql").read_text())


def statement(block: str, /, **parts: sql.Composable) -> sql.Composed:
    """Statement `block` of benchmarks/bench_apply.sql with its placeholders filled by `parts`."""
    return sql.SQL(_statements()[block]).format(**parts)


# ---------------------------------------------------------------------------------------------- databases


def server_url(explicit: str | None) -> str:
    """The PostgreSQL server to benchmark on (any database URL on it)."""
    url = explicit or os.environ.get("CRM_BULK_TEST_DATABASE_URL")
    if not url:
        env = ROOT / ".services" / "env"
        text = env.read_text() if env.exists() else ""
        url = dict(re.findall(r"^export (\w+)=(.*)$", text, re.MULTILINE)).get("CRM_BULK_TEST_DATABASE_URL")
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
        """The URL of database `name` on the same server."""
        return self.url.rsplit("/", 1)[0] + "/" + name

    def _admin(self, command: sql.Composed) -> None:
        with psycopg.connect(self.url, autocommit=True) as admin:
            admin.execute(command)

    def create(self, purpose: str, template: str | None = None) -> str:
        """A new database, empty or a copy of `template`; its name."""
        name = f"{self.prefix}_{purpose}"
        if template is None:
            self._admin(statement("create_database", name=sql.Identifier(name)))
        else:
            identifiers = {"name": sql.Identifier(name), "template": sql.Identifier(template)}
            self._admin(statement("clone_database", **identifiers))
        self.created.append(name)
        return name

    def drop(self, name: str) -> None:
        """Drop database `name`, closing its connections."""
        self._admin(statement("drop_database", name=sql.Identifier(name)))
        if name in self.created:
            self.created.remove(name)

    def drop_all(self) -> None:
        """Drop every database still standing, the clones before their templates."""
        for name in list(reversed(self.created)):
            self.drop(name)

    @contextmanager
    def clone(self, template: str, purpose: str) -> Iterator[str]:
        """A fresh copy of `template`, checkpointed so every variant starts with the same WAL state."""
        name = self.create(purpose, template)
        try:
            with psycopg.connect(self.dsn(name), autocommit=True) as conn:
                conn.execute(statement("checkpoint"))
            yield self.dsn(name)
        finally:
            self.drop(name)


def build_template(
    dbs: Databases, purpose: str, staged: pl.DataFrame | None, *, fillfactor: int | None
) -> str:
    """A migrated database with the benchmark account and, when `staged` is given, those contacts loaded
    (untimed, by the ceiling's import), frozen and analysed so that every copy of it starts alike."""
    name = dbs.create(purpose)
    dsn = dbs.dsn(name)
    migrate(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(query("postgres", "bench", "create_account"), {"name": "bench"}).fetchone()
        assert row is not None and row[0] == ACCOUNT_ID, row
        if fillfactor is not None:
            conn.execute(statement("set_contacts_fillfactor", fillfactor=sql.Literal(fillfactor)))
    if staged is not None:
        baselines.ceiling_import(dsn, account_id=ACCOUNT_ID, payloads=baselines.import_payloads(staged, 1))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(statement("freeze_and_analyze"))
    return name


def hot_stats(dsn: str) -> dict[str, Any]:
    """Updates, HOT share and size of the contacts table."""
    # Exited backends flush their statistics shortly after they end.
    time.sleep(0.6)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(statement("clear_statistics_snapshot"))
        row = conn.execute(statement("contacts_statistics")).fetchone()
    assert row is not None
    updates, hot, table, indexes = row
    return {
        "updates": updates,
        "hot_share": hot / updates if updates else 0.0,
        "table_mb": table / 2**20,
        "indexes_mb": indexes / 2**20,
    }


# ----------------------------------------------------------------------------------------------- platform


@dataclass
class StreamReport:
    """One worker's timing: monotonic start/end (comparable across processes), rows, phase totals."""

    started: float
    finished: float = 0.0
    rows: int = 0
    phase_ms: dict[str, float] = field(default_factory=dict)


def _next_chunk(counter: Any) -> int:
    with counter.get_lock():
        chunk_no = int(counter.value)
        counter.value += 1
    return chunk_no


def _platform_stream(dsn: str, job_id: str, chunk_count: int, shared: tuple[Any, Any, Any]) -> None:
    """One worker process: apply the chunks numbered by the shared counter until none is left."""
    barrier, counter, out = shared
    with psycopg.connect(dsn, autocommit=True) as conn:
        barrier.wait()
        report = StreamReport(started=time.monotonic())
        while (chunk_no := _next_chunk(counter)) < chunk_count:
            result = apply_chunk(conn, uuid.UUID(job_id), chunk_no, worker=f"bench-{os.getpid()}")
            report.rows += result.entity_count
            for phase, ms in result.phase_ms.items():
                report.phase_ms[phase] = report.phase_ms.get(phase, 0.0) + ms
        report.finished = time.monotonic()
    out.put(asdict(report))


def run_platform(dsn: str, job_id: uuid.UUID, chunk_count: int, streams: int) -> dict[str, Any]:
    """Apply the job with `streams` worker processes released together; rows, rate and phase totals.

    Processes rather than threads (unlike the baselines, whose work happens in the server): the apply
    engine's per-chunk Python work would serialise on the interpreter lock, as the platform's workers do not.
    """
    ctx = mp.get_context("spawn")
    shared = (ctx.Barrier(streams), ctx.Value("i", 0), ctx.Queue())
    args = (dsn, str(job_id), chunk_count, shared)
    processes = [ctx.Process(target=_platform_stream, args=args) for _ in range(streams)]
    for process in processes:
        process.start()
    reports = [StreamReport(**shared[2].get(timeout=3600)) for _ in processes]
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
