"""Where a job's time went, from its row and its ledger (`bulk_actions`, `bulk_action_chunks`).

Stages, in seconds, consecutive from the POST to the terminal status:
- `upload` (imports): the streamed request, the chunks written as the rows arrive;
- `planning` (other actions): from the job's creation to its start (the scheduler snapshots the target ids);
- `queue_wait`: from the start until a worker begins the first chunk (release, queue, pick-up);
- `apply`: from the first chunk's start to the last chunk's commit (all workers together);
- `finalise`: from the last chunk to the terminal status (the scheduler's finishing pass).
And beside them: `log_shipping`, how long after the last chunk its outcome log reached ClickHouse;
`chunk_apply_busy`, the chunks' own apply time summed and divided by the worker processes (how much of the
apply stage the workers were busy); `chunk_queue_wait_mean`, the mean time from a chunk's release to the
start of its apply.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from uuid import UUID

import psycopg

from crm_bulk.errors import CrmBulkError
from crm_bulk.sqlfiles import query


@dataclass(frozen=True)
class Timeline:
    """Epoch seconds of a job's milestones (None where not reached) and its ledger sums."""

    created: float
    started: float | None
    finished: float | None
    first_apply_start: float | None
    last_applied: float | None
    last_shipped: float | None
    apply_seconds_total: float
    chunks: int
    chunk_queue_wait_mean: float | None


def timeline(dsn: str, job_id: str) -> Timeline:
    """The job's milestones from PostgreSQL."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(query("postgres", "bench", "job_timeline"), {"job_id": UUID(job_id)}).fetchone()
    if row is None:
        raise CrmBulkError(f"job {job_id} not found in the bench database")
    return Timeline(*row)


def wait_shipped(dsn: str, job_id: str, *, timeout: float) -> None:
    """Block until every chunk of the job has its outcome log in ClickHouse."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(dsn, autocommit=True) as conn:
        while True:
            row = conn.execute(
                query("postgres", "bench", "unshipped_chunks"), {"job_id": UUID(job_id)}
            ).fetchone()
            if row is not None and int(row[0]) == 0:
                return
            if time.monotonic() > deadline:
                raise CrmBulkError(f"the log of job {job_id} was not shipped within {timeout:.0f} s")
            time.sleep(0.2)


def _span(start: float | None, end: float | None) -> float:
    return max(0.0, end - start) if start is not None and end is not None else 0.0


def stages(
    line: Timeline, *, posted_at: float, answered_at: float, upload: bool, processes: int
) -> dict[str, float]:
    """The stage durations of one job (see the module docstring)."""
    found: dict[str, float] = {}
    if upload:
        found["upload"] = _span(posted_at, answered_at)
    else:
        found["planning"] = _span(line.created, line.started)
    first = line.first_apply_start
    found["queue_wait"] = _span(line.started, first)
    found["apply"] = _span(first, line.last_applied)
    found["finalise"] = _span(line.last_applied, line.finished)
    found["log_shipping"] = _span(line.last_applied, line.last_shipped)
    found["chunk_apply_busy"] = line.apply_seconds_total / max(processes, 1)
    found["chunk_queue_wait_mean"] = line.chunk_queue_wait_mean or 0.0
    return found
