"""Many listeners on one running job: 200 event streams follow a real bulk action through the whole platform
(`crm-bulk up`: API, scheduler, a worker pool, the log shipped to chDB) while other API requests keep being
answered quickly, and PostgreSQL sees one progress read per tick, counted by pg_stat_statements.

The shared test PostgreSQL does not preload pg_stat_statements, so this test starts a PostgreSQL of its own
(`crm_bulk.local_postgres`, which preloads it) on a free port and stops it at the end.

Sizes: `CRM_BULK_SSE_LISTENERS` (default 200; 0 for a control run: the job and the requests alone)
listeners, `CRM_BULK_SSE_ENTITIES` (default 20,000; by hand
1,000,000) contacts updated by the job, paced at `CRM_BULK_SSE_RATE` entities a second (default 1,000, so the
CI job runs about 20 s; 0 leaves the account's default limit). The job is scheduled, and brought forward once
every listener is connected, so all of them follow it from its start.
The p99 bound (100 ms) is asserted with `CRM_BULK_SSE_ASSERT_P99=1`; the latencies are printed either way,
beside those of the same requests before the listeners connected.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from crm_bulk.auth.limits import MAX_REQUESTS_PER_MINUTE
from crm_bulk.cli.client.sse import parse_events
from crm_bulk.local_postgres import LocalPostgres
from crm_bulk.store.migrate import migrate
from tests.integration.api_support import PASSWORD, unique_email
from tests.integration.client_support import Stack, platform
from tests.integration.pipeline_support import seed_contacts
from tests.integration.server_support import free_port

pytestmark = pytest.mark.postgres

LISTENERS = int(os.environ.get("CRM_BULK_SSE_LISTENERS", "200"))
ENTITIES = int(os.environ.get("CRM_BULK_SSE_ENTITIES", "20000"))
RATE = int(os.environ.get("CRM_BULK_SSE_RATE", "1000"))
INTERVAL = 1.0
P99_LIMIT_MS = 100.0
BASELINE_SECONDS = 3.0
PROGRESS_QUERY = "%FROM unnest(%bulk_actions b%"


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[str]:
    """A PostgreSQL of this module's own with pg_stat_statements; the application database's URL. Its folder
    is outside pytest's (owner-only) temporary root: the server may run as another user, who must reach it."""
    folder = Path(tempfile.mkdtemp(prefix="crm-bulk-pg-stat-"))
    server = LocalPostgres(data_dir=folder / "data", port=free_port())
    try:
        server.start()
        migrate(server.dsn)
        with psycopg.connect(server.dsn, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        yield server.dsn
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


@dataclass
class Listener:
    """What one event stream received."""

    progress: int = 0
    ended: dict[str, Any] | None = None
    connected: asyncio.Event = field(default_factory=asyncio.Event)


async def _listen(client: httpx.AsyncClient, path: str, listener: Listener) -> None:
    async with client.stream("GET", path) as response:
        assert response.status_code == 200
        lines: list[str] = []
        async for line in response.aiter_lines():
            lines.append(line)
            if line:
                continue
            for event in parse_events(lines):
                if event.event == "progress":
                    listener.progress += 1
                    listener.connected.set()
                elif event.event == "end":
                    listener.ended = json.loads(event.data)
                    listener.connected.set()
                    return
            lines = []


# Other requests of the account, from a process of their own (the listeners' event loop must not delay them):
# the job, a page of contacts, the account, in turn, until the job has ended or `seconds` have passed.
PROBE = """
import json, sys, time, httpx
base, token, job_path, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
paths = [job_path, "/contacts?limit=20", "/accounts/me"]
latencies, i, deadline = [], 0, time.monotonic() + seconds
with httpx.Client(base_url=base, headers={"Authorization": "Bearer " + token}, timeout=60) as client:
    while time.monotonic() < deadline:
        started = time.perf_counter()
        answer = client.get(paths[i % 3])
        latencies.append((time.perf_counter() - started) * 1000)
        answer.raise_for_status()
        if i % 3 == 0 and answer.json()["finished_at"] is not None:
            break
        i += 1
        time.sleep(0.02)
print(json.dumps(latencies))
"""


async def _probe(base: str, token: str, job_path: str, seconds: float) -> list[float]:
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PROBE, base, token, job_path, str(seconds), stdout=asyncio.subprocess.PIPE
    )
    out, _ = await child.communicate()
    assert child.returncode == 0
    latencies: list[float] = json.loads(out)
    return latencies


def _progress_reads(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE query LIKE %s", [PROGRESS_QUERY]
        ).fetchone()
    return int(row[0]) if row else 0


def _run_now(database_url: str, job_id: str) -> None:
    """Bring the scheduled job forward, as if its time had come: it starts with every listener connected."""
    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE bulk_actions SET scheduled_for = now() WHERE id = %s", [job_id])


def _reset_statements(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute("SELECT pg_stat_statements_reset()")


async def _run(stack: Stack, token: str, job_id: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=LISTENERS + 10, max_keepalive_connections=LISTENERS + 10)
    timeout = httpx.Timeout(60.0)
    path = f"/bulk-actions/{job_id}"
    async with httpx.AsyncClient(
        base_url=stack.base, headers=headers, limits=limits, timeout=timeout
    ) as streams:
        # The same requests first without listeners (the job waits, scheduled): what the machine gives anyway.
        baseline = await _probe(stack.base, token, path, BASELINE_SECONDS)
        listeners = [Listener() for _ in range(LISTENERS)]
        tasks = [asyncio.create_task(_listen(streams, f"{path}/events", one)) for one in listeners]
        await asyncio.wait_for(asyncio.gather(*(one.connected.wait() for one in listeners)), 120)
        _reset_statements(stack.database_url)
        _run_now(stack.database_url, job_id)
        started = time.monotonic()
        prober = asyncio.create_task(_probe(stack.base, token, path, 3600))
        await asyncio.wait_for(asyncio.gather(*tasks), 3600)
        latencies = (
            await prober
        )  # it stops once the job has ended (at once, for a control run of 0 listeners)
        elapsed = time.monotonic() - started
    return {
        "elapsed": elapsed,
        "listeners": listeners,
        "latencies": latencies,
        "baseline": baseline,
        "reads": _progress_reads(stack.database_url),
    }


def _p99(sorted_ms: list[float]) -> float:
    return sorted_ms[min(len(sorted_ms) - 1, int(len(sorted_ms) * 0.99))]


def test_many_listeners_one_read_per_tick_and_quick_other_requests(own_postgres: str, tmp_path: Path) -> None:
    with platform(own_postgres, tmp_path, chunk_size=5000, events_interval=INTERVAL) as stack:
        email = unique_email("listen")
        made = httpx.post(
            f"{stack.base}/auth/register", json={"email": email, "password": PASSWORD, "account_name": "L"}
        )
        assert made.status_code == 201, made.text
        account_id = made.json()["account_id"]
        with psycopg.connect(own_postgres) as conn:
            conn.execute(
                "UPDATE accounts SET api_requests_per_minute = %s, "
                "entities_per_second = CASE WHEN %s > 0 THEN %s ELSE entities_per_second END WHERE id = %s",
                [MAX_REQUESTS_PER_MINUTE, RATE, RATE, account_id],
            )
            conn.commit()
            seed_contacts(conn, account_id, ENTITIES)
        login = httpx.post(f"{stack.base}/auth/login", json={"email": email, "password": PASSWORD})
        token = login.json()["access_token"]
        later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        body = {
            "action": "update",
            "target": {"all": True},
            "changes": {"set": {"company": "Listened"}},
            "scheduled_for": later,
        }
        job = httpx.post(
            f"{stack.base}/bulk-actions", json=body, headers={"Authorization": f"Bearer {token}"}
        ).json()
        result = asyncio.run(_run(stack, token, job["id"]))

    listeners: list[Listener] = result["listeners"]
    latencies: list[float] = sorted(result["latencies"])
    p99 = _p99(latencies)
    ticks = result["elapsed"] / INTERVAL
    baseline = sorted(result["baseline"])
    print(
        f"\nwithout listeners: {len(baseline)} requests, p50 {statistics.median(baseline):.1f} ms, p99 "
        f"{_p99(baseline):.1f} ms; with {LISTENERS} listeners ({ENTITIES} entities, the job ran "
        f"{result['elapsed']:.1f} s after all had connected): {len(latencies)} requests, p50 "
        f"{statistics.median(latencies):.1f} ms, p99 "
        f"{p99:.1f} ms, max {latencies[-1]:.1f} ms; progress reads in PostgreSQL: {result['reads']} over "
        f"{ticks:.1f} ticks; progress events per listener: "
        f"{min((one.progress for one in listeners), default=0)}-"
        f"{max((one.progress for one in listeners), default=0)}"
    )
    ends = [one.ended for one in listeners]
    assert all(end is not None and end["status"] == "completed" for end in ends)
    assert all(end is not None and end["succeeded"] == ENTITIES for end in ends)
    assert ticks >= 5, "the job ended before the listeners had a few ticks: slow it down (CRM_BULK_SSE_RATE)"
    assert result["reads"] <= ticks + 2  # one read per tick for the job, not one per listener
    if os.environ.get("CRM_BULK_SSE_ASSERT_P99") == "1":
        # By hand, on a machine of its own: on a shared CI runner the baseline alone may exceed the bound.
        assert p99 < P99_LIMIT_MS
