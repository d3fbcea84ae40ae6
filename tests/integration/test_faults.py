"""Faults mid-job — a worker SIGKILLed, the Kafka broker stopped and restarted, PostgreSQL restarted,
ClickHouse unreachable — and each time the job completes with every entity applied and logged exactly once."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import pytest

from crm_bulk.entitylog.store import ClickHouseStore
from crm_bulk.jobs.repository import get_job
from crm_bulk.local_postgres import LocalPostgres
from crm_bulk.queue.kafka.admin import delete_topics
from crm_bulk.settings import Settings
from crm_bulk.store.migrate import migrate
from tests.integration.entitylog_support import in_process_store
from tests.integration.pipeline_support import (
    ROOT,
    clickhouse_counts,
    ledger_summary,
    make_account,
    own_database,
    pipeline_settings,
    scheduler,
    seed_contacts,
    shipper,
    submit_tagging,
    tagged_contacts,
    wait_shipped,
    wait_terminal,
    worker_pool,
)
from tests.integration.server_support import free_port

pytestmark = [pytest.mark.postgres, pytest.mark.clickhouse]

ENTITIES = 40_000
CHUNK = 2_000


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClickHouseStore]:
    """chDB hosts one data path per process: one store for the module."""
    ch = in_process_store(f"chdb://{tmp_path_factory.mktemp('chdb')}")
    ch.migrate()
    yield ch
    ch.close()


@pytest.fixture(scope="module")
def fault_db(pg_server_url: str) -> Iterator[str]:
    with own_database(pg_server_url) as url:
        yield url


@pytest.fixture
def kafka_settings_cleanup(kafka_bootstrap: str) -> Iterator[list[Settings]]:
    """Settings registered here get their Kafka topics deleted after the test."""
    made: list[Settings] = []
    yield made
    for settings in made:
        delete_topics(kafka_bootstrap, prefix=settings.namespace)


def _wait_chunks_done(
    conn: psycopg.Connection[Any], job_id: UUID, at_least: int, timeout: float = 120
) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = ledger_summary(conn, job_id)["done"]
        if done >= at_least:
            return done
        time.sleep(0.05)
    raise AssertionError(f"fewer than {at_least} chunks done after {timeout} s")


def _assert_exactly_once(
    conn: psycopg.Connection[Any],
    store: ClickHouseStore,
    account: int,
    job_id: UUID,
    *,
    tag: str,
    entities: int,
) -> None:
    job = wait_terminal(conn, account, job_id, timeout=5)
    assert (job.status, job.total, job.succeeded, job.failed, job.skipped, job.cancelled) == (
        "completed",
        entities,
        entities,
        0,
        0,
        0,
    )
    ledger = ledger_summary(conn, job_id)
    assert ledger["done"] == ledger["chunks"] == entities // CHUNK
    assert (ledger["succeeded"], ledger["failed"], ledger["skipped"]) == (entities, 0, 0)
    assert tagged_contacts(conn, account, tag) == entities
    assert clickhouse_counts(store, job_id, account) == (entities, entities, entities)


@pytest.mark.parametrize("queue", ["postgres", pytest.param("kafka", marks=pytest.mark.kafka)])
def test_a_worker_killed_mid_job_is_replaced_and_nothing_is_lost_or_doubled(
    fault_db: str, store: ClickHouseStore, tmp_path: Path, queue: str, request: pytest.FixtureRequest
) -> None:
    queue_url = None
    if queue == "kafka":
        queue_url = f"kafka://{request.getfixturevalue('kafka_bootstrap')}"
    settings = pipeline_settings(fault_db, queue_url=queue_url, chunk_size=CHUNK)
    cleanup = request.getfixturevalue("kafka_settings_cleanup") if queue == "kafka" else []
    cleanup.append(settings)
    with psycopg.connect(fault_db) as conn:
        account = make_account(conn)
        seed_contacts(conn, account, ENTITIES)
        job_id = submit_tagging(conn, account, "survivor")
        with scheduler(settings), shipper(settings, store), worker_pool(settings, 2, tmp_path) as pool:
            before = pool.wait_for_workers(2)
            _wait_chunks_done(conn, job_id, at_least=3)
            victim = before[0]
            pool.kill_worker(victim)
            wait_terminal(conn, account, job_id, timeout=180)
            after = pool.wait_for_workers(2)
            wait_shipped(conn, job_id, timeout=60)
            log = pool.log()
        assert victim not in after, "the killed worker was not replaced"
        assert "died with exit code -9" in log
        _assert_exactly_once(conn, store, account, job_id, tag="survivor", entities=ENTITIES)


@pytest.mark.kafka
def test_the_kafka_broker_stopped_for_ten_seconds_mid_job(
    fault_db: str,
    store: ClickHouseStore,
    tmp_path: Path,
    kafka_bootstrap: str,
    kafka_settings_cleanup: list[Settings],
) -> None:
    settings = pipeline_settings(
        fault_db, queue_url=f"kafka://{kafka_bootstrap}", chunk_size=CHUNK, dispatch_window_chunks=4
    )
    kafka_settings_cleanup.append(settings)
    with psycopg.connect(fault_db) as conn:
        account = make_account(conn, entities_per_second=5_000)
        seed_contacts(conn, account, ENTITIES)
        job_id = submit_tagging(conn, account, "broker-outage")
        with scheduler(settings), shipper(settings, store), worker_pool(settings, 2, tmp_path) as pool:
            _wait_chunks_done(conn, job_id, at_least=3)
            _services("stop", "kafka")
            try:
                stopped_at = time.monotonic()
                done_during = ledger_summary(conn, job_id)["done"]
                time.sleep(10)
            finally:
                _services("start", "kafka")
            print(f"broker down {time.monotonic() - stopped_at:.1f} s; chunks done before: {done_during}")
            job = wait_terminal(conn, account, job_id, timeout=240)
            wait_shipped(conn, job_id, timeout=60)
            assert pool.process.poll() is None, pool.log()
        assert job.status == "completed", job
        _assert_exactly_once(conn, store, account, job_id, tag="broker-outage", entities=ENTITIES)


@pytest.fixture
def own_server() -> Iterator[LocalPostgres]:
    """A PostgreSQL server of this test's own (the shared one is never restarted), stopped and removed after.

    Its folder is world-traversable: under root the server runs as a system user whose primary group is
    root's, so pytest's 0700-for-group temp folders would lock it out."""
    parent = Path(tempfile.mkdtemp(prefix="crm-bulk-pg-"))
    parent.chmod(0o755)
    server = LocalPostgres(parent / "data", free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(parent, ignore_errors=True)


def test_postgres_restarted_mid_job(
    store: ClickHouseStore, tmp_path: Path, own_server: LocalPostgres
) -> None:
    server = own_server
    migrate(server.dsn)
    settings = pipeline_settings(server.dsn, queue_url=None, chunk_size=CHUNK)
    with psycopg.connect(server.dsn) as conn:
        account = make_account(conn, entities_per_second=10_000)
        seed_contacts(conn, account, ENTITIES)
        job_id = submit_tagging(conn, account, "pg-restart")
    with scheduler(settings), shipper(settings, store), worker_pool(settings, 2, tmp_path) as pool:
        with psycopg.connect(server.dsn) as conn:
            _wait_chunks_done(conn, job_id, at_least=3)
        server.stop()
        time.sleep(3)
        server.start()
        with psycopg.connect(server.dsn) as conn:
            wait_terminal(conn, account, job_id, timeout=240)
            wait_shipped(conn, job_id, timeout=120)
        assert pool.process.poll() is None, pool.log()
    with psycopg.connect(server.dsn) as conn:
        _assert_exactly_once(conn, store, account, job_id, tag="pg-restart", entities=ENTITIES)


def test_clickhouse_unreachable_mid_job_delays_the_log_but_loses_nothing(
    fault_db: str, store: ClickHouseStore, tmp_path: Path
) -> None:
    # Workers ship when ClickHouse is a server: point them at one that does not answer.
    unreachable = f"http://127.0.0.1:{free_port()}"
    settings = pipeline_settings(fault_db, queue_url=None, chunk_size=CHUNK, clickhouse_url=unreachable)
    with psycopg.connect(fault_db) as conn:
        account = make_account(conn, entities_per_second=10_000)
        seed_contacts(conn, account, ENTITIES)
        job_id = submit_tagging(conn, account, "log-outage")
        with scheduler(settings), worker_pool(settings, 2, tmp_path) as pool:
            with shipper(settings, store):
                _wait_chunks_done(conn, job_id, at_least=3)
            # The chDB shipper is gone from here on too: nothing reaches the log, processing goes on, and
            # the job, every chunk applied, stays running until its log is complete.
            _wait_chunks_done(conn, job_id, at_least=ENTITIES // CHUNK, timeout=240)
            time.sleep(1.0)  # several finishing passes of the scheduler
            waiting = get_job(conn, account, job_id)
            conn.commit()
            log = pool.log()
            row = conn.execute(
                "SELECT count(*) FROM bulk_action_chunks WHERE job_id = %s AND outcomes IS NOT NULL",
                (job_id,),
            ).fetchone()
            conn.commit()
            with shipper(settings, store):
                job = wait_terminal(conn, account, job_id, timeout=120)
        assert (waiting.status, waiting.succeeded, waiting.finished_at) == ("running", ENTITIES, None)
        assert job.status == "completed"
        assert "shipper waits" in log
        assert row is not None and row[0] > 0, "expected outboxes waiting for ClickHouse"
        wait_shipped(conn, job_id, timeout=5)
        _assert_exactly_once(conn, store, account, job_id, tag="log-outage", entities=ENTITIES)


def _services(action: str, service: str) -> None:
    subprocess.run(["bash", str(ROOT / "scripts" / "services.sh"), action, service], check=True, timeout=180)
