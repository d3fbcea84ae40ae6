"""Carrying one job through the pipeline's own functions in an HTTP test: plan, start, apply every chunk,
ship its outcomes into the app's entity log, finish it."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import psycopg
from litestar import Litestar
from litestar.testing import TestClient

from crm_bulk.apply.engine import apply_chunk
from crm_bulk.entitylog.shipper import ship_outcomes
from crm_bulk.jobs.lifecycle import finish_jobs, start_planned_jobs
from crm_bulk.planner import plan_job


def drive_job(client: TestClient[Litestar], database_url: str, job_id: UUID | str) -> None:
    """Run the job to its end as the scheduler, a worker and the shipper would, in that order."""
    job = UUID(str(job_id))
    store = client.app.state.resources.store
    with psycopg.connect(database_url, autocommit=True) as conn:
        plan_job(conn, job, chunk_size=1000)
        start_planned_jobs(conn)
        chunks = conn.execute(
            "SELECT chunk_no FROM bulk_action_chunks WHERE job_id = %s ORDER BY chunk_no", [job]
        ).fetchall()
        for (chunk_no,) in chunks:
            apply_chunk(conn, job, chunk_no, worker="test")
        while ship_outcomes(conn, store):
            pass
        assert job in [j.job_id for j in finish_jobs(conn)]


def created_job(client: TestClient[Litestar], headers: dict[str, str], body: dict[str, Any]) -> str:
    """POST /bulk-actions; the new job's id."""
    answer = client.post("/bulk-actions", json=body, headers=headers)
    assert answer.status_code == 202, answer.text
    job_id: str = answer.json()["id"]
    return job_id
