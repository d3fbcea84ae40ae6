"""A bounded API load run on loopback: locust, headless, for a fixed time and user count.

Users (`crm_bulk/bench/locustfile.py`) alternate `GET /bulk-actions/{id}` and `POST /contacts` with no think
time; locust's CSV summary gives requests per second and the median and 99th-percentile latency per
endpoint. Locust runs in a process of its own (gevent must not patch the bench) and its own core competes
with the API's on a small machine, so the numbers are a floor for what the API serves.
"""

from __future__ import annotations

import csv
import logging
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from crm_bulk.errors import CrmBulkError

log = logging.getLogger(__name__)

LOCUSTFILE = Path(__file__).with_name("locustfile.py")


@dataclass(frozen=True)
class EndpointLoad:
    """One endpoint's (or the aggregate's) figures over the run."""

    name: str
    requests: int
    failures: int
    requests_per_second: float
    p50_ms: float
    p99_ms: float


def run_load(
    api_url: str, *, token: str, job_id: str, users: int, seconds: float, workdir: Path
) -> dict[str, Any]:
    """Run locust against `api_url` for `seconds` with `users` users; the figures per endpoint."""
    prefix = workdir / "locust"
    env = os.environ | {"CRM_BULK_BENCH_TOKEN": token, "CRM_BULK_BENCH_JOB_ID": job_id}
    command = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--users",
        str(users),
        "--spawn-rate",
        str(users),
        "--run-time",
        f"{max(1, round(seconds))}s",
        "--stop-timeout",
        "5",
        "--host",
        api_url,
        "--csv",
        str(prefix),
        "--only-summary",
        "--loglevel",
        "WARNING",
        "--exit-code-on-error",
        "0",
    ]
    result = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=seconds + 120, check=False
    )
    if result.returncode != 0:
        raise CrmBulkError(f"locust failed ({result.returncode}): {result.stderr[-2000:]}")
    endpoints = _read_stats(prefix.with_name(prefix.name + "_stats.csv"))
    return {
        "tool": "locust (FastHttpUser, headless)",
        "users": users,
        "seconds": seconds,
        "endpoints": [asdict(e) for e in endpoints],
    }


def _read_stats(path: Path) -> list[EndpointLoad]:
    if not path.exists():
        raise CrmBulkError(f"locust wrote no statistics ({path})")
    endpoints = []
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            endpoints.append(
                EndpointLoad(
                    name=row["Name"] if row["Type"] else "all",
                    requests=int(row["Request Count"]),
                    failures=int(row["Failure Count"]),
                    requests_per_second=float(row["Requests/s"]),
                    p50_ms=_number(row["50%"]),
                    p99_ms=_number(row["99%"]),
                )
            )
    return endpoints


def _number(text: str) -> float:
    return float(text) if text not in ("", "N/A") else 0.0
