"""Running the whole job pipeline in tests: scheduler (thread), worker pool (a real `run_worker_pool` in a
subprocess, so workers can be killed), shipper into chDB (thread), plus data set-up and exactness checks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg

from crm_bulk.actions.specs import BulkActionRequest, Target
from crm_bulk.dispatch import run_scheduler
from crm_bulk.entitylog.shipper import run_shipper
from crm_bulk.entitylog.store import ClickHouseStore
from crm_bulk.jobs.repository import TERMINAL_STATUSES, Job, create_job, get_job
from crm_bulk.settings import Settings
from tests import databases
from tests.integration.entitylog_support import client_of

JWT_SECRET = "pipeline-tests-secret-0123456789abcdef"
ROOT = Path(__file__).resolve().parents[2]
POOL_SCRIPT = (
    "import logging, os, sys\n"
    "from crm_bulk.settings import Settings\n"
    "from crm_bulk.worker import run_worker_pool\n"
    "settings = Settings.from_env()\n"
    "logging.basicConfig(level=settings.log_level,\n"
    "                    format='%(asctime)s %(levelname)s %(processName)s %(name)s %(message)s')\n"
    "sys.exit(run_worker_pool(settings, int(os.environ['TEST_POOL_PROCESSES']), "
    "burst=os.environ.get('TEST_POOL_BURST') == '1'))\n"
)


def own_database(pg_server_url: str) -> AbstractContextManager[str]:
    """A migrated database of the caller's own (the shipper ships every outbox of a database)."""
    return databases.own_database(pg_server_url, prefix="crm_bulk_pipe")


def pipeline_settings(database_url: str, *, queue_url: str | None, **overrides: Any) -> Settings:
    """Settings for a test pipeline: its own Kafka topic prefix, metrics off unless asked for."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "queue_url": queue_url,
        "jwt_secret": JWT_SECRET,
        "namespace": f"test-{uuid.uuid4().hex[:10]}",
        "kafka_partitions": 4,
        "worker_metrics_port": 0,
        "scheduler_interval_seconds": 0.1,
        "chunk_size": 5000,
    }
    values.update(overrides)
    return Settings(**values)


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes `Settings.from_env()` in a child equal `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRM_BULK_")}
    for name, value in vars(settings).items():
        if value is not None:
            env[f"CRM_BULK_{name.upper()}"] = str(value)
    env["PYTHONPATH"] = str(ROOT / "python")
    return env


@dataclass
class WorkerPool:
    """A `run_worker_pool` supervisor in a subprocess."""

    process: subprocess.Popen[bytes]
    log_path: Path

    def workers(self) -> list[int]:
        """Pids of the live worker processes (the supervisor's spawned children, not its resource tracker)."""
        pids = []
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        for pid in children.read_text().split() if children.exists() else []:
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"spawn_main" in cmdline and b"resource_tracker" not in cmdline:
                pids.append(int(pid))
        return sorted(pids)

    def wait_for_workers(self, count: int, timeout: float = 60.0) -> list[int]:
        """Block until `count` workers are alive."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pids = self.workers()
            if len(pids) >= count:
                return pids
            assert self.process.poll() is None, f"pool exited: {self.log()}"
            time.sleep(0.1)
        raise AssertionError(f"{count} workers did not start: {self.log()}")

    def kill_worker(self, pid: int) -> None:
        """SIGKILL one worker process."""
        os.kill(pid, signal.SIGKILL)

    def stop(self, timeout: float = 90.0) -> int:
        """SIGTERM the supervisor (drain) and wait for it."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
            raise AssertionError(f"pool did not drain within {timeout} s: {self.log()}") from None

    def log(self) -> str:
        """The last lines of the pool's output."""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-60:])


@contextmanager
def worker_pool(
    settings: Settings, processes: int, log_dir: Path, *, burst: bool = False
) -> Iterator[WorkerPool]:
    """A running pool, stopped (drained) at the end."""
    env = settings_env(settings) | {
        "TEST_POOL_PROCESSES": str(processes),
        "TEST_POOL_BURST": "1" if burst else "0",
    }
    log_path = log_dir / f"pool-{uuid.uuid4().hex[:6]}.log"
    with log_path.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", POOL_SCRIPT], env=env, stdout=out, stderr=out, cwd=ROOT
        )
    pool = WorkerPool(process=process, log_path=log_path)
    try:
        yield pool
    finally:
        pool.stop()


@dataclass
class Background:
    """A loop running in a thread until stopped."""

    stop_event: threading.Event
    thread: threading.Thread
    result: list[Any] = field(default_factory=list)

    def stop(self) -> Any:
        self.stop_event.set()
        self.thread.join(60)
        assert not self.thread.is_alive(), "background loop did not stop"
        return self.result[0] if self.result else None


def _background(target: Any, *args: Any, **kwargs: Any) -> Background:
    stop = threading.Event()
    holder: list[Any] = []

    def run() -> None:
        holder.append(target(*args, stop, **kwargs))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return Background(stop_event=stop, thread=thread, result=holder)


@contextmanager
def scheduler(settings: Settings) -> Iterator[Background]:
    """`run_scheduler` in a thread of the test process."""
    bg = _background(run_scheduler, settings)
    try:
        yield bg
    finally:
        bg.stop()


@contextmanager
def shipper(settings: Settings, store: ClickHouseStore) -> Iterator[Background]:
    """`run_shipper` into `store` in a thread of the test process (the process that owns chDB)."""
    bg = _background(run_shipper, settings, store=store, idle_seconds=0.2)
    try:
        yield bg
    finally:
        bg.stop()


def stamp_outboxes_shipped(conn: psycopg.Connection[Any], job_id: UUID | None = None) -> int:
    """Stamp unshipped outboxes (of one job, or of all) shipped without moving them, keeping their bytes; for
    tests of applying and dispatch that never read the log, so the finaliser (which waits for the log to be
    complete) can end their jobs. Return how many."""
    cur = conn.execute(
        "UPDATE bulk_action_chunks SET outcomes_shipped_at = now() "
        "WHERE outcomes IS NOT NULL AND outcomes_shipped_at IS NULL "
        "AND (%(job)s::uuid IS NULL OR job_id = %(job)s)",
        {"job": job_id},
    )
    if not conn.autocommit:
        conn.commit()
    return cur.rowcount


def _stamp_until_stopped(database_url: str, stop: threading.Event) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        while not stop.is_set():
            stamp_outboxes_shipped(conn)
            stop.wait(0.1)


@contextmanager
def log_discarded(settings: Settings) -> Iterator[Background]:
    """In place of the shipper where no test reads the log: outboxes are stamped shipped as they appear."""
    bg = _background(_stamp_until_stopped, settings.postgres_dsn)
    try:
        yield bg
    finally:
        bg.stop()


def make_account(conn: psycopg.Connection[Any], *, entities_per_second: int = 50_000) -> int:
    """A new account with an entity rate limit."""
    row = conn.execute(
        "INSERT INTO accounts (name, entities_per_second) VALUES (%s, %s) RETURNING id",
        (f"pipeline {uuid.uuid4().hex[:6]}", entities_per_second),
    ).fetchone()
    conn.commit()
    assert row is not None
    return int(row[0])


def seed_contacts(conn: psycopg.Connection[Any], account_id: int, count: int) -> None:
    """`count` live contacts in the account, generated by the server."""
    conn.execute(
        "INSERT INTO contacts (account_id, email, email_normalized, first_name, company) "
        "SELECT %(a)s, e, e, 'User', 'Acme' FROM generate_series(1, %(n)s) AS g, "
        "LATERAL (SELECT 'u' || g || '@a' || %(a)s || '.example.com') AS x (e)",
        {"a": account_id, "n": count},
    )
    conn.commit()
    # Fresh rows without statistics make the apply statements' plans quadratic; a live table has them.
    conn.execute("ANALYZE contacts")
    conn.commit()


def submit_tagging(conn: psycopg.Connection[Any], account_id: int, tag: str) -> UUID:
    """An `add_tags` job over all the account's contacts."""
    request = BulkActionRequest(action="add_tags", target=Target(all=True), tags=[tag])
    job = create_job(conn, account_id=account_id, created_by=None, request=request)
    conn.commit()
    return job.id


def wait_terminal(conn: psycopg.Connection[Any], account_id: int, job_id: UUID, *, timeout: float) -> Job:
    """Poll until the job ends; fail with its state when it does not in time."""
    deadline = time.monotonic() + timeout
    while True:
        job = get_job(conn, account_id, job_id)
        conn.commit()
        if job.status in TERMINAL_STATUSES:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job did not finish in {timeout} s: {job}")
        time.sleep(0.2)


def wait_shipped(conn: psycopg.Connection[Any], job_id: UUID, *, timeout: float) -> None:
    """Poll until no chunk of the job has an unshipped outbox and every chunk has been shipped."""
    deadline = time.monotonic() + timeout
    while True:
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE outcomes_shipped_at IS NULL) FROM bulk_action_chunks "
            "WHERE job_id = %s",
            (job_id,),
        ).fetchone()
        conn.commit()
        assert row is not None
        if row[0] == 0:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{row[0]} chunks of {job_id} still unshipped after {timeout} s")
        time.sleep(0.2)


def ledger_summary(conn: psycopg.Connection[Any], job_id: UUID) -> dict[str, int]:
    """Chunk counts by state and entity sums over the ledger."""
    row = conn.execute(
        "SELECT count(*), count(*) FILTER (WHERE state = 'done'), count(*) FILTER (WHERE state = 'failed'), "
        "count(*) FILTER (WHERE state = 'cancelled'), coalesce(sum(entity_count), 0), "
        "coalesce(sum(succeeded), 0), coalesce(sum(failed), 0), coalesce(sum(skipped), 0) "
        "FROM bulk_action_chunks WHERE job_id = %s",
        (job_id,),
    ).fetchone()
    conn.commit()
    assert row is not None
    keys = (
        "chunks",
        "done",
        "failed_chunks",
        "cancelled_chunks",
        "entities",
        "succeeded",
        "failed",
        "skipped",
    )
    return dict(zip(keys, (int(v) for v in row), strict=True))


def clickhouse_counts(store: ClickHouseStore, job_id: UUID, account_id: int) -> tuple[int, int, int]:
    """(rows as reads see them, distinct (chunk, row) identities, distinct entity ids) of a job's log."""
    result = client_of(store).query(
        "SELECT count(), uniqExact(chunk_no, row_no), uniqExact(entity_id) FROM entity_outcomes FINAL "
        "WHERE account_id = {a:UInt64} AND job_id = {j:UUID}",
        parameters={"a": account_id, "j": str(job_id)},
    )
    ((rows, identities, entities),) = result.result_rows
    return int(rows), int(identities), int(entities)


def tagged_contacts(conn: psycopg.Connection[Any], account_id: int, tag: str) -> int:
    """Live contacts of the account holding `tag`."""
    row = conn.execute(
        "SELECT count(*) FROM contacts "
        "WHERE account_id = %s AND deleted_at IS NULL AND tags @> ARRAY[%s]::text[]",
        (account_id, tag),
    ).fetchone()
    conn.commit()
    assert row is not None
    return int(row[0])
