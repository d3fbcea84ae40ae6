"""The whole path on real services: scheduler → queue (Postgres table or Kafka) → worker pool → Postgres →
outbox → chDB, with exact counts in the job, the ledger, the data and the log."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from crm_bulk.entitylog.store import ClickHouseStore
from crm_bulk.queue.kafka.admin import delete_topics
from tests.integration.entitylog_support import in_process_store, plain
from tests.integration.pipeline_support import (
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

ENTITIES = 100_000


@pytest.fixture(scope="module")
def pipe_db(pg_server_url: str) -> Iterator[str]:
    with own_database(pg_server_url) as url:
        yield url


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClickHouseStore]:
    """chDB hosts one data path per process: one store for the module, closed before the next module's."""
    ch = in_process_store(f"chdb://{tmp_path_factory.mktemp('chdb')}")
    ch.migrate()
    yield ch
    ch.close()


@pytest.fixture(params=["postgres", pytest.param("kafka", marks=[pytest.mark.kafka, pytest.mark.redis])])
def backends(request: pytest.FixtureRequest) -> Iterator[dict[str, str | None]]:
    """Embedded (table queue, in-process limiter) or scale-out (Kafka, Redis) backends."""
    if request.param == "postgres":
        yield {"queue_url": None, "redis_url": None}
        return
    bootstrap = request.getfixturevalue("kafka_bootstrap")
    yield {"queue_url": f"kafka://{bootstrap}", "redis_url": request.getfixturevalue("redis_url")}


def test_a_100k_entity_job_completes_exactly_once_on_both_queues(
    pipe_db: str, store: ClickHouseStore, backends: dict[str, str | None], tmp_path: Path
) -> None:
    settings = pipeline_settings(pipe_db, **backends)
    with psycopg.connect(pipe_db) as conn:
        account = make_account(conn)
        seed_contacts(conn, account, ENTITIES)
        job_id = submit_tagging(conn, account, "hundred-k")
        try:
            with scheduler(settings), shipper(settings, store), worker_pool(settings, 2, tmp_path) as pool:
                started = time.monotonic()
                job = wait_terminal(conn, account, job_id, timeout=240)
                elapsed = time.monotonic() - started
                wait_shipped(conn, job_id, timeout=60)
                assert pool.process.poll() is None, pool.log()
        finally:
            if settings.queue_kind == "kafka":
                delete_topics(settings.kafka_bootstrap, prefix=settings.namespace)
        print(f"{settings.queue_kind}: {ENTITIES} entities in {elapsed:.1f} s ({ENTITIES / elapsed:.0f}/s)")
        assert (job.status, job.total, job.succeeded, job.failed, job.skipped, job.cancelled) == (
            "completed",
            ENTITIES,
            ENTITIES,
            0,
            0,
            0,
        )
        assert job.started_at is not None and job.finished_at is not None
        ledger = ledger_summary(conn, job_id)
        assert ledger == {
            "chunks": ENTITIES // settings.chunk_size,
            "done": ENTITIES // settings.chunk_size,
            "failed_chunks": 0,
            "cancelled_chunks": 0,
            "entities": ENTITIES,
            "succeeded": ENTITIES,
            "failed": 0,
            "skipped": 0,
        }
        assert tagged_contacts(conn, account, "hundred-k") == ENTITIES
        assert clickhouse_counts(store, job_id, account) == (ENTITIES, ENTITIES, ENTITIES)
        events = [e["event"] for e in plain(store.job_events(job_id, account))]
        assert events.count("planned") == 1
        assert events.count("started") == 1
        assert events.count("finished") == 1


def test_the_pool_serves_prometheus_metrics(pipe_db: str, store: ClickHouseStore, tmp_path: Path) -> None:
    settings = pipeline_settings(pipe_db, queue_url=None, worker_metrics_port=free_port())
    with psycopg.connect(pipe_db) as conn:
        account = make_account(conn)
        seed_contacts(conn, account, 12_000)
        job_id = submit_tagging(conn, account, "metered")
        with scheduler(settings), shipper(settings, store), worker_pool(settings, 2, tmp_path):
            wait_terminal(conn, account, job_id, timeout=120)
            deadline = time.monotonic() + 20
            text = ""
            while time.monotonic() < deadline:
                text = _scrape(settings.worker_metrics_port)
                if 'crm_bulk_worker_entities_total{outcome="succeeded"} 12000.0' in text:
                    break
                time.sleep(0.5)
    assert 'crm_bulk_worker_entities_total{outcome="succeeded"} 12000.0' in text
    assert 'crm_bulk_worker_chunks_total{result="applied"} 3.0' in text
    assert "crm_bulk_worker_chunk_duration_seconds_bucket" in text
    assert "crm_bulk_worker_pacing_wait_seconds_count" in text
    assert "crm_bulk_worker_queue_lag_messages" in text
    assert "crm_bulk_worker_restarts_total 0.0" in text


def _scrape(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return str(response.read().decode())
    except OSError:
        return ""
