"""Shared by the result-file and retry tests: an import with known bad lines, carried to its end in process,
and result files read back."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import psycopg
from litestar import Litestar
from litestar.testing import TestClient

from crm_bulk.apply.engine import apply_chunk
from crm_bulk.entitylog.shipper import ship_outcomes
from crm_bulk.jobs.lifecycle import finish_jobs, start_planned_jobs
from crm_bulk.jobs.repository import TERMINAL_STATUSES
from crm_bulk.planner import plan_job
from tests.integration.server_support import free_port

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


# How long `run_to_end` waits for the job to turn terminal once its chunks are applied.
RUN_TO_END_SECONDS = 30.0


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
        # Another shipper (the app's own, or one of an earlier test on this database) may hold some of the
        # outboxes mid-shipment: a job is finished only once all of its are in, so go on until it is.
        deadline = time.monotonic() + RUN_TO_END_SECONDS
        while True:
            while ship_outcomes(conn, store):
                pass
            finish_jobs(conn)
            status = conn.execute("SELECT status FROM bulk_actions WHERE id = %s", [job]).fetchone()
            if status is not None and status[0] in TERMINAL_STATUSES:
                return
            assert time.monotonic() < deadline, f"job {job} still {status} after {RUN_TO_END_SECONDS} s"
            time.sleep(0.1)


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


def status_mb(pid: int, field: str) -> float:
    """A memory figure of /proc/<pid>/status in MB (`VmHWM`: the resident-set peak since the start)."""
    for row in Path(f"/proc/{pid}/status").read_text().splitlines():
        if row.startswith(f"{field}:"):
            return int(row.split()[1]) / 1024
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def children(pid: int) -> list[int]:
    """The child processes of `pid` (the API's chDB store host)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


@contextmanager
def api_process(database_url: str, data_dir: Path) -> Iterator[tuple[str, int]]:
    """`crm-bulk api` in a process of its own on a free port, with its chDB store under `data_dir` (one
    process at a time may own it); yields (base URL, pid)."""
    port = free_port()
    env = os.environ | {
        "CRM_BULK_DATABASE_URL": database_url,
        "CRM_BULK_JWT_SECRET": "a test secret that is certainly long enough",
        "CRM_BULK_DATA_DIR": str(data_dir),
        "CRM_BULK_API_PORT": str(port),
        "CRM_BULK_LOG_LEVEL": "WARNING",
    }
    env.pop("CRM_BULK_REDIS_URL", None)
    process = subprocess.Popen([sys.executable, "-m", "crm_bulk.cli", "api"], env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, "the API process exited"
            assert time.monotonic() < deadline, "the API process did not start"
            time.sleep(0.2)
        yield base, process.pid
    finally:
        process.terminate()
        process.wait(timeout=60)
