"""Fair dispatch and entity pacing, end to end on real services.

- A small job submitted while a big one runs finishes within seconds, long before the big one. CI runs the
  big job at 200k entities; `CRM_BULK_TEST_FAIRNESS_ENTITIES=1000000` runs the full million.
- An account limited to E entities/s is processed at E (±10%), loses nothing, and another account's job
  runs at full speed beside it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import pytest

from crm_bulk.queue.kafka.admin import delete_topics
from crm_bulk.settings import Settings
from tests.integration.pipeline_support import (
    ledger_summary,
    log_discarded,
    make_account,
    own_database,
    pipeline_settings,
    scheduler,
    seed_contacts,
    submit_tagging,
    tagged_contacts,
    wait_terminal,
    worker_pool,
)

pytestmark = pytest.mark.postgres

BIG = int(os.environ.get("CRM_BULK_TEST_FAIRNESS_ENTITIES", "200000"))
SMALL = 1_000
PACED_RATE = 2_000
PACED_ENTITIES = 30_000
PACED_CHUNK = 1_000
FREE_ENTITIES = 60_000


@pytest.fixture(scope="module")
def fair_db(pg_server_url: str) -> Iterator[str]:
    with own_database(pg_server_url) as url:
        yield url


@pytest.fixture(params=["postgres", pytest.param("kafka", marks=[pytest.mark.kafka, pytest.mark.redis])])
def backends(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """Embedded (table queue, in-process limiter) or scale-out (Kafka, Redis) backends."""
    if request.param == "postgres":
        yield {"queue_url": None, "redis_url": None}
        return
    bootstrap = request.getfixturevalue("kafka_bootstrap")
    made: list[Settings] = []
    yield {
        "queue_url": f"kafka://{bootstrap}",
        "redis_url": request.getfixturevalue("redis_url"),
        "made": made,
    }
    for settings in made:
        delete_topics(bootstrap, prefix=settings.namespace)


def _settings(db: str, backends: dict[str, Any], **overrides: Any) -> Settings:
    settings = pipeline_settings(
        db, queue_url=backends["queue_url"], redis_url=backends["redis_url"], **overrides
    )
    backends.get("made", []).append(settings)
    return settings


def _times(conn: psycopg.Connection[Any], job_id: UUID) -> tuple[datetime, datetime, str]:
    row = conn.execute(
        "SELECT created_at, finished_at, status FROM bulk_actions WHERE id = %s", (job_id,)
    ).fetchone()
    conn.commit()
    assert row is not None
    return row[0], row[1], row[2]


def test_a_small_job_overtakes_a_big_one(fair_db: str, backends: dict[str, Any], tmp_path: Path) -> None:
    settings = _settings(fair_db, backends)
    with psycopg.connect(fair_db) as conn:
        big_account = make_account(conn)
        small_account = make_account(conn)
        seed_contacts(conn, big_account, BIG)
        seed_contacts(conn, small_account, SMALL)
        with scheduler(settings), log_discarded(settings), worker_pool(settings, 2, tmp_path):
            big = submit_tagging(conn, big_account, "big")
            big_started = time.monotonic()
            deadline = time.monotonic() + 120
            while ledger_summary(conn, big)["done"] < 2:
                assert time.monotonic() < deadline, "the big job did not start"
                time.sleep(0.05)
            small = submit_tagging(conn, small_account, "small")
            wait_terminal(conn, small_account, small, timeout=60)
            big_done_then = ledger_summary(conn, big)["done"]
            big_job = wait_terminal(conn, big_account, big, timeout=1800)
            big_elapsed = time.monotonic() - big_started
        small_created, small_finished, small_status = _times(conn, small)
        _, big_finished, _ = _times(conn, big)
        latency = (small_finished - small_created).total_seconds()
        chunks = ledger_summary(conn, big)["chunks"]
        print(
            f"{settings.queue_kind}: small job ({SMALL}) done {latency:.2f} s after submission, while the "
            f"big job ({BIG}) had {big_done_then}/{chunks} chunks done; big job took {big_elapsed:.1f} s "
            f"({BIG / big_elapsed:.0f}/s)"
        )
        assert small_status == "completed"
        assert small_finished < big_finished
        assert big_done_then < chunks
        assert latency < 10.0
        assert (big_job.status, big_job.succeeded) == ("completed", BIG)
        assert tagged_contacts(conn, small_account, "small") == SMALL


def test_a_rate_limited_account_is_paced_and_another_is_not_slowed(
    fair_db: str, backends: dict[str, Any], tmp_path: Path
) -> None:
    settings = _settings(fair_db, backends, chunk_size=PACED_CHUNK)
    with psycopg.connect(fair_db) as conn:
        paced_account = make_account(conn, entities_per_second=PACED_RATE)
        solo_account, free_account, warm_account = (make_account(conn) for _ in range(3))
        seed_contacts(conn, paced_account, PACED_ENTITIES)
        seed_contacts(conn, solo_account, FREE_ENTITIES)
        seed_contacts(conn, free_account, FREE_ENTITIES)
        seed_contacts(conn, warm_account, 10)
        with scheduler(settings), log_discarded(settings), worker_pool(settings, 2, tmp_path):
            # Measured on a running pool, not on its start-up.
            wait_terminal(conn, warm_account, submit_tagging(conn, warm_account, "warm-up"), timeout=60)
            # The unlimited account's speed alone, then beside the paced one.
            solo = submit_tagging(conn, solo_account, "solo")
            wait_terminal(conn, solo_account, solo, timeout=120)
            paced = submit_tagging(conn, paced_account, "paced")
            free = submit_tagging(conn, free_account, "free")
            free_job = wait_terminal(conn, free_account, free, timeout=120)
            paced_status_then = _times(conn, paced)[2]
            paced_job = wait_terminal(conn, paced_account, paced, timeout=120)
        steady = _rate(_applied(conn, paced))
        assert paced_job.started_at is not None and paced_job.finished_at is not None
        overall = PACED_ENTITIES / (paced_job.finished_at - paced_job.started_at).total_seconds()
        solo_rate, free_rate = _rate(_applied(conn, solo)), _rate(_applied(conn, free))
        print(
            f"{settings.queue_kind}: limit {PACED_RATE}/s -> steady {steady:.0f}/s, overall {overall:.0f}/s; "
            f"unlimited account alone {solo_rate:.0f}/s, beside the paced one {free_rate:.0f}/s"
        )
        assert PACED_RATE * 0.9 <= steady <= PACED_RATE * 1.1
        assert overall <= PACED_RATE * 1.1
        assert (paced_job.status, paced_job.succeeded, paced_job.total) == (
            "completed",
            PACED_ENTITIES,
            PACED_ENTITIES,
        )
        assert tagged_contacts(conn, paced_account, "paced") == PACED_ENTITIES
        assert paced_status_then == "running"
        assert (free_job.status, free_job.succeeded) == ("completed", FREE_ENTITIES)
        # Not slowed: as fast as alone, within the noise of a shared 2-core machine.
        assert free_rate >= 0.6 * solo_rate
        assert free_job.finished_at is not None and free_job.finished_at < paced_job.finished_at


def _rate(applied: list[tuple[datetime, int]]) -> float:
    """Entities per second from the first applied chunk to the last (start-up excluded)."""
    return sum(n for _, n in applied[1:]) / (applied[-1][0] - applied[0][0]).total_seconds()


def _applied(conn: psycopg.Connection[Any], job_id: UUID) -> list[tuple[datetime, int]]:
    """(applied_at, entities) of the job's chunks in apply order."""
    rows = conn.execute(
        "SELECT applied_at, entity_count FROM bulk_action_chunks WHERE job_id = %s ORDER BY applied_at",
        (job_id,),
    ).fetchall()
    conn.commit()
    return [(r[0], int(r[1])) for r in rows]
