"""Shared by the result-file and retry tests: an import with known bad lines, carried to its end in process,
and result files read back."""

from __future__ import annotations

import csv
import io
import json
from typing import Any
from uuid import UUID

import psycopg
from litestar import Litestar
from litestar.testing import TestClient

from crm_bulk.apply.engine import apply_chunk
from crm_bulk.entitylog.shipper import ship_outcomes
from crm_bulk.jobs.lifecycle import finish_jobs, start_planned_jobs
from crm_bulk.planner import plan_job

NDJSON = {"Accept": "application/x-ndjson"}


def bad_line(line: int, every: int) -> bool:
    """Whether record `line` (1-based) of `import_csv` carries an invalid email."""
    return line % every == 0


def import_csv(rows: int, *, every: int, tag: str) -> bytes:
    """A CSV of `rows` records whose every `every`-th record has an invalid email; emails in mixed case (as
    sent, before normalisation), a quoted line break in the first record's company."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["email", "first_name", "company", "tags"])
    for line in range(1, rows + 1):
        email = f"broken-{tag}-{line}" if bad_line(line, every) else f"User.{tag}.{line}@Example.com"
        company = "Two\nLines Inc" if line == 1 else f"Co {line}"
        writer.writerow([email, f"Name {line}", company, "a;b"])
    return out.getvalue().encode()


def run_to_end(client: TestClient[Litestar], database_url: str, job_id: UUID | str) -> None:
    """Plan (unless the upload did), start, apply every chunk, ship the log into the app's store, finish."""
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
        finish_jobs(conn)


def uploaded(client: TestClient[Litestar], headers: dict[str, str], body: bytes) -> dict[str, Any]:
    """POST /bulk-actions/import of a CSV body; the job."""
    answer = client.post("/bulk-actions/import", content=body, headers=headers | {"Content-Type": "text/csv"})
    assert answer.status_code == 202, answer.text
    job: dict[str, Any] = answer.json()
    return job


def csv_rows(text: str) -> list[dict[str, str]]:
    """A CSV answer's rows as dicts."""
    return list(csv.DictReader(io.StringIO(text)))


def ndjson_rows(text: str) -> list[dict[str, Any]]:
    """An NDJSON answer's rows."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]
