"""The worker fleet churning under two jobs at once — an update and an import — on a Kafka broker of the
test's own: worker processes go 1 → 4 → 2 (the last two leave by SIGTERM), one worker is SIGKILLed, one of
the two schedulers is SIGKILLed, and the broker restarts once. Both jobs complete, every entity is applied
exactly once (the data, the exact counts, no `no_change` or duplicate skips), and the log holds exactly one
final outcome row per entity.

CI runs a small size (rate-limited, so the churn happens while the jobs run); `CRM_BULK_TEST_CHURN_SIZE=large`
runs a 1M-entity update beside a 200k-record import. The test prints how long each new worker took to get
partitions and to apply its first chunk, and how long each SIGTERMed worker took to leave.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import pytest

from crm_bulk.actions.specs import BulkActionRequest, Changes, ImportRecord, Target
from crm_bulk.entitylog.store import ClickHouseStore
from crm_bulk.jobs.repository import create_job
from crm_bulk.settings import Settings
from tests.integration.entitylog_support import in_process_store
from tests.integration.kafka_broker_support import OwnBroker, own_broker
from tests.integration.pipeline_support import (
    ROOT,
    WorkerPool,
    clickhouse_counts,
    ledger_summary,
    make_account,
    own_database,
    pipeline_settings,
    seed_contacts,
    settings_env,
    shipper,
    wait_shipped,
    wait_terminal,
    worker_pool,
)

pytestmark = [pytest.mark.postgres, pytest.mark.clickhouse, pytest.mark.kafka]

LARGE = os.environ.get("CRM_BULK_TEST_CHURN_SIZE") == "large"
UPDATES = 1_000_000 if LARGE else 16_000
IMPORTS = 200_000 if LARGE else 8_000
CHUNK = 5_000 if LARGE else 500
# Small runs are paced so the jobs outlast the churn (about a minute); large runs go flat out.
RATE = 1_000_000 if LARGE else 300
SCHEDULER_SCRIPT = (
    "import logging, signal, sys, threading\n"
    "from crm_bulk.settings import Settings\n"
    "from crm_bulk.dispatch import run_scheduler\n"
    "settings = Settings.from_env()\n"
    "logging.basicConfig(level=settings.log_level,\n"
    "                    format='%(asctime)s %(levelname)s %(processName)s %(name)s %(message)s')\n"
    "stop = threading.Event()\n"
    "signal.signal(signal.SIGTERM, lambda *_: stop.set())\n"
    "run_scheduler(settings, stop)\n"
)
_ASSIGNED = re.compile(r"^(\S+ \S+) INFO .* assigned ", re.MULTILINE)


@pytest.fixture(scope="module")
def churn_db(pg_server_url: str) -> Iterator[str]:
    with own_database(pg_server_url) as url:
        yield url


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClickHouseStore]:
    ch = in_process_store(f"chdb://{tmp_path_factory.mktemp('chdb')}")
    ch.migrate()
    yield ch
    ch.close()


@pytest.fixture(scope="module")
def broker() -> Iterator[OwnBroker]:
    with own_broker() as started:
        yield started


def _submit(conn: psycopg.Connection[Any], account: int, request: BulkActionRequest) -> UUID:
    job = create_job(conn, account_id=account, created_by=None, request=request)
    conn.commit()
    return job.id


def _import_records(count: int) -> list[ImportRecord]:
    return [
        ImportRecord(email=f"imp{n}@churn.example.com", first_name=f"First{n}", company="Imported")
        for n in range(count)
    ]


def _start_scheduler(settings: Settings, log_dir: Path, name: str) -> subprocess.Popen[bytes]:
    with (log_dir / f"{name}.log").open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-c", SCHEDULER_SCRIPT],
            env=settings_env(settings),
            stdout=out,
            stderr=out,
            cwd=ROOT,
        )


def _chunks_done(conn: psycopg.Connection[Any], jobs: list[UUID]) -> tuple[int, int]:
    row = conn.execute(
        "SELECT count(*) FILTER (WHERE state IN ('done', 'failed')), count(*) FROM bulk_action_chunks "
        "WHERE job_id = ANY(%s)",
        (jobs,),
    ).fetchone()
    conn.commit()
    assert row is not None
    return int(row[0]), int(row[1])


def _wait_progress(conn: psycopg.Connection[Any], jobs: list[UUID], fraction: float, timeout: float) -> None:
    """Until `fraction` of the jobs' planned chunks are final (both jobs must be planned by then)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, planned = _chunks_done(conn, jobs)
        if planned >= UPDATES // CHUNK + IMPORTS // CHUNK and done >= fraction * planned:
            return
        time.sleep(0.2)
    raise AssertionError(f"progress {fraction} not reached in {timeout} s: {_chunks_done(conn, jobs)}")


def _first_chunk_after(conn: psycopg.Connection[Any], pid: int, started: datetime, timeout: float) -> float:
    """Seconds from `started` until the worker process `pid` applied its first chunk."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = conn.execute(
            "SELECT min(applied_at) FROM bulk_action_chunks WHERE worker LIKE %s AND state = 'done'",
            (f"%:{pid}:w%",),
        ).fetchone()
        conn.commit()
        if row is not None and row[0] is not None:
            return float((row[0] - started).total_seconds())
        time.sleep(0.1)
    raise AssertionError(f"worker {pid} applied nothing within {timeout} s")


def _assigned_after(pool: WorkerPool, started: datetime, timeout: float) -> float:
    """Seconds from `started` until the pool's worker logged its first partition assignment."""
    deadline = time.monotonic() + timeout
    while (found := _ASSIGNED.search(pool.log_path.read_text(errors="replace"))) is None:
        assert time.monotonic() < deadline, f"no partitions within {timeout} s: {pool.log()}"
        time.sleep(0.1)
    at = datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S,%f").astimezone(UTC)
    return (at - started).total_seconds()


@dataclass(frozen=True)
class ChurnJobs:
    """The two jobs under churn and their accounts."""

    update: UUID
    updated_account: int
    imported: UUID
    imported_account: int

    @property
    def ids(self) -> list[UUID]:
        return [self.update, self.imported]


def _submit_jobs(conn: psycopg.Connection[Any]) -> ChurnJobs:
    conn.execute(
        "UPDATE bulk_actions SET status = 'failed' WHERE status IN ('scheduled', 'queued', 'running')"
    )
    conn.commit()
    updated_account = make_account(conn, entities_per_second=RATE)
    seed_contacts(conn, updated_account, UPDATES)
    imported_account = make_account(conn, entities_per_second=RATE)
    changes = Changes(set={"company": "Churned"})
    update = _submit(
        conn, updated_account, BulkActionRequest(action="update", target=Target(all=True), changes=changes)
    )
    records = _import_records(IMPORTS)
    imported = _submit(
        conn, imported_account, BulkActionRequest(action="import", records=records, on_duplicate="skip")
    )
    return ChurnJobs(update, updated_account, imported, imported_account)


def test_jobs_complete_exactly_once_while_the_fleet_churns(
    churn_db: str, store: ClickHouseStore, broker: OwnBroker, tmp_path: Path
) -> None:
    settings = pipeline_settings(
        churn_db,
        queue_url=f"kafka://{broker.bootstrap}",
        chunk_size=CHUNK,
        kafka_partitions=8,
        scheduler_health_port=0,
    )
    timeout = 1800 if LARGE else 300
    with psycopg.connect(churn_db) as conn, ExitStack() as stack:
        jobs = _submit_jobs(conn)
        started_at = time.monotonic()
        schedulers = [_start_scheduler(settings, tmp_path, f"scheduler-{n}") for n in range(2)]
        stack.callback(_stop_schedulers, schedulers)
        stack.enter_context(shipper(settings, store))
        timings, pools, victim = _churn(
            conn,
            settings,
            jobs=jobs,
            broker=broker,
            schedulers=schedulers,
            stack=stack,
            log_dir=tmp_path,
            timeout=timeout,
        )
        finished = {
            job_id: wait_terminal(conn, account, job_id, timeout=timeout)
            for job_id, account in (
                (jobs.update, jobs.updated_account),
                (jobs.imported, jobs.imported_account),
            )
        }
        elapsed = time.monotonic() - started_at
        for job_id in jobs.ids:
            wait_shipped(conn, job_id, timeout=120)
        assert schedulers[1].poll() is None, "the surviving scheduler died"
        assert all(p.process.poll() is None for p in (pools[0], pools[1])), pools[1].log()
        assert "died with exit code -9" in pools[1].log_path.read_text(errors="replace")
        assert victim not in pools[1].workers()

    print(f"\nchurn: {UPDATES} updates + {IMPORTS} imports in {elapsed:.1f} s")
    for what, seconds in timings.items():
        print(f"  {what}: {seconds:.1f} s")
    _assert_exactly_once(churn_db, store, finished, jobs)


def _churn(
    conn: psycopg.Connection[Any],
    settings: Settings,
    *,
    jobs: ChurnJobs,
    broker: OwnBroker,
    schedulers: list[subprocess.Popen[bytes]],
    stack: ExitStack,
    log_dir: Path,
    timeout: float,
) -> tuple[dict[str, float], list[WorkerPool], int]:
    """Workers 1 → 4, a worker and a scheduler SIGKILLed, the broker restarted, workers 4 → 2 by SIGTERM;
    return the timings, the pools, and the pid of the SIGKILLed worker."""
    ids = jobs.ids
    timings: dict[str, float] = {}
    spawned = datetime.now(UTC)
    first = stack.enter_context(worker_pool(settings, 1, log_dir))
    (first_pid,) = first.wait_for_workers(1)
    timings["worker 1 to first chunk (planning included)"] = _first_chunk_after(conn, first_pid, spawned, 120)

    _wait_progress(conn, ids, 0.05, timeout)
    pools = [first]
    for n in range(2, 5):
        spawned = datetime.now(UTC)
        pool = stack.enter_context(worker_pool(settings, 1, log_dir))
        (pid,) = pool.wait_for_workers(1)
        pools.append(pool)
        timings[f"worker {n} to partitions"] = _assigned_after(pool, spawned, 180)
        timings[f"worker {n} to first chunk"] = _first_chunk_after(conn, pid, spawned, 180)

    _wait_progress(conn, ids, 0.25, timeout)
    victim = pools[1].workers()[0]
    pools[1].kill_worker(victim)
    schedulers[0].send_signal(signal.SIGKILL)
    assert schedulers[0].wait(30) == -signal.SIGKILL

    _wait_progress(conn, ids, 0.4, timeout)
    restart_started = time.monotonic()
    broker.run("restart")
    timings["broker restart"] = time.monotonic() - restart_started

    _wait_progress(conn, ids, 0.55, timeout)
    for n in (3, 4):
        leaving = time.monotonic()
        assert pools[n - 1].stop(timeout=120) == 0
        timings[f"worker {n} SIGTERM to exit"] = time.monotonic() - leaving
    return timings, pools, victim


def _stop_schedulers(schedulers: list[subprocess.Popen[bytes]]) -> None:
    for process in schedulers:
        if process.poll() is None:
            process.terminate()
    for process in schedulers:
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def _assert_exactly_once(
    url: str, store: ClickHouseStore, finished: dict[UUID, Any], jobs: ChurnJobs
) -> None:
    """Exact counts on the jobs and the ledger, the data as applied once, one log row per entity."""
    update, imported = jobs.update, jobs.imported
    updated_account, imported_account = jobs.updated_account, jobs.imported_account
    for job_id, entities in ((update, UPDATES), (imported, IMPORTS)):
        job = finished[job_id]
        assert (job.status, job.total, job.succeeded, job.failed, job.skipped, job.cancelled) == (
            "completed",
            entities,
            entities,
            0,
            0,
            0,
        ), job
    with psycopg.connect(url) as conn:
        for job_id, entities in ((update, UPDATES), (imported, IMPORTS)):
            summary = ledger_summary(conn, job_id)
            assert summary["done"] == summary["chunks"] == entities // CHUNK
            assert (summary["entities"], summary["succeeded"], summary["failed"], summary["skipped"]) == (
                entities,
                entities,
                0,
                0,
            )
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE company = 'Churned'), count(*) FROM contacts "
            "WHERE account_id = %s",
            (updated_account,),
        ).fetchone()
        assert row == (UPDATES, UPDATES)
        row = conn.execute(
            "SELECT count(*), count(DISTINCT email_normalized), "
            "count(*) FILTER (WHERE first_name = 'First' || substring(email FROM 'imp([0-9]+)@') "
            "AND company = 'Imported' AND last_import_job = %s) "
            "FROM contacts WHERE account_id = %s AND deleted_at IS NULL",
            (imported, imported_account),
        ).fetchone()
        assert row == (IMPORTS, IMPORTS, IMPORTS)
    assert clickhouse_counts(store, update, updated_account) == (UPDATES, UPDATES, UPDATES)
    assert clickhouse_counts(store, imported, imported_account) == (IMPORTS, IMPORTS, IMPORTS)
