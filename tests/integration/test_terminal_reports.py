"""A job that reads terminal has a complete report: its errors, stats and logs, read the instant its status
turns terminal, count every entity the job's counters count. The finaliser waits until every outbox of the
job is in ClickHouse; until then the job stays `running`, even with all its chunks applied.

Real PostgreSQL and chDB: the API app (its store host ships the log), a scheduler thread and a worker pool.
"""

from __future__ import annotations

import csv
import io
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from crm_bulk.apply.engine import apply_chunk
from crm_bulk.entitylog.shipper import ship_outcomes
from crm_bulk.jobs.lifecycle import finish_jobs, start_planned_jobs
from crm_bulk.jobs.repository import TERMINAL_STATUSES, get_job
from crm_bulk.planner import plan_job
from tests.integration.api_support import Tenant, make_settings, make_tenant, running_client
from tests.integration.pipeline_support import (
    make_account,
    own_database,
    pipeline_settings,
    scheduler,
    seed_contacts,
    submit_tagging,
    worker_pool,
)
from tests.integration.report_support import created_job

pytestmark = [pytest.mark.postgres, pytest.mark.clickhouse]

JOBS = 100
WAVE = 10  # jobs in flight at once: each is polled every few milliseconds
# Per job: 4 succeeded, 2 failed (invalid email, invalid phone), 1 skipped (duplicate in input).
COUNTS = {"total": 7, "succeeded": 4, "failed": 2, "skipped": 1, "cancelled": 0}


@pytest.fixture(scope="module")
def report_db(pg_server_url: str) -> Iterator[str]:
    """A database of the module's own: its scheduler and workers see only these jobs."""
    with own_database(pg_server_url) as url:
        yield url


@pytest.fixture(scope="module")
def client(report_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient[Litestar]]:
    yield from running_client(make_settings(tmp_path_factory.mktemp("api-reports")), report_db)


def _records() -> list[dict[str, Any]]:
    tag = uuid.uuid4().hex[:10]
    emails = [f"r{i}-{tag}@reports.example" for i in range(4)]
    return [
        *({"email": e, "first_name": "Ada"} for e in emails),
        {"email": "not-an-email"},
        {"email": f"phone-{tag}@reports.example", "phone": "not a phone"},
        {"email": emails[0].upper()},
    ]


def _assert_complete(client: TestClient[Litestar], tenant: Tenant, job: dict[str, Any]) -> None:
    """The job's reads, made right after its status read terminal, cover every entity it counts."""
    path = f"/bulk-actions/{job['id']}"
    errors = client.get(f"{path}/errors", headers=tenant.viewer).json()
    stats = client.get(f"{path}/stats", headers=tenant.viewer).json()
    logs = client.get(f"{path}/logs", params={"limit": 1000}, headers=tenant.viewer).json()
    as_csv = client.get(f"{path}/errors", headers=tenant.viewer | {"Accept": "text/csv"}).text
    assert {k: job[k] for k in COUNTS} == COUNTS, job
    outcomes = stats["outcomes"]
    assert (outcomes["succeeded"], outcomes["failed"], outcomes["skipped"]) == (
        job["succeeded"],
        job["failed"],
        job["skipped"],
    ), stats
    unsuccessful = job["failed"] + job["skipped"]
    assert sum(errors["summary"].values()) == unsuccessful, errors
    assert len(errors["items"]) == unsuccessful, errors
    assert len(logs["items"]) == job["total"], logs
    assert len(list(csv.DictReader(io.StringIO(as_csv)))) == unsuccessful, as_csv


def test_reads_the_instant_a_job_turns_terminal_are_complete(
    client: TestClient[Litestar], report_db: str, tmp_path: Path
) -> None:
    tenant = make_tenant(client, "Reports")
    with psycopg.connect(report_db) as conn:
        # The test polls far faster than a client is allowed to; the limit is not under test here.
        conn.execute(
            "UPDATE accounts SET api_requests_per_minute = 1000000 WHERE id = %s", [tenant.account_id]
        )
    settings = pipeline_settings(report_db, queue_url=None, scheduler_interval_seconds=0.05)
    checked = 0
    deadline = time.monotonic() + 120
    with scheduler(settings), worker_pool(settings, 2, tmp_path):
        for _ in range(JOBS // WAVE):
            pending = {
                created_job(client, tenant.editor, {"action": "import", "records": _records()})
                for _ in range(WAVE)
            }
            while pending:
                assert time.monotonic() < deadline, f"{len(pending)} jobs did not end"
                for job_id in sorted(pending):
                    job = client.get(f"/bulk-actions/{job_id}", headers=tenant.viewer).json()
                    if job["status"] in TERMINAL_STATUSES:
                        _assert_complete(client, tenant, job)
                        pending.discard(job_id)
                        checked += 1
    assert checked == JOBS


def test_a_job_whose_outcomes_are_not_shipped_stays_running_until_they_are(
    client: TestClient[Litestar], pg_server_url: str
) -> None:
    # A database no shipper watches: the outcomes move only when this test ships them.
    store = client.app.state.resources.store
    with own_database(pg_server_url) as url, psycopg.connect(url, autocommit=True) as conn:
        account = make_account(conn)
        seed_contacts(conn, account, 30)
        job_id: UUID = submit_tagging(conn, account, "unshipped")
        plan_job(conn, job_id, chunk_size=10)
        start_planned_jobs(conn)
        for chunk_no in range(3):
            apply_chunk(conn, job_id, chunk_no, worker="test")
        assert finish_jobs(conn) == []
        waiting = get_job(conn, account, job_id)
        assert (waiting.status, waiting.succeeded, waiting.finished_at) == ("running", 30, None)
        assert ship_outcomes(conn, store, batch_chunks=2) == 2
        assert finish_jobs(conn) == []  # one outbox still on its way
        assert ship_outcomes(conn, store) == 1
        (finished,) = finish_jobs(conn)
        assert (finished.job_id, finished.status, finished.succeeded) == (job_id, "completed", 30)
        stats = store.stats(job_id, account)
        assert stats.outcomes["succeeded"] == 30
