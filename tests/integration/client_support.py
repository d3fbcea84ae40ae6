"""The whole platform for command-line client tests: `crm-bulk up` in a process of its own (API, scheduler,
worker pool, the log shipped to chDB) on a database of its own, and the client run as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.integration.server_support import free_port

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Stack:
    """A running `crm-bulk up`: its API's base URL and pid."""

    base: str
    pid: int
    database_url: str


@contextmanager
def platform(
    database_url: str,
    data_dir: Path,
    *,
    chunk_size: int = 500,
    events_interval: float = 0.2,
    workers: int = 1,
) -> Iterator[Stack]:
    """`crm-bulk up` with `workers` worker processes until the block ends (then stopped with SIGTERM: it
    drains)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRM_BULK_")} | {
        "CRM_BULK_DATABASE_URL": database_url,
        "CRM_BULK_JWT_SECRET": "client tests secret, certainly long enough",
        "CRM_BULK_DATA_DIR": str(data_dir),
        "CRM_BULK_API_PORT": str(port),
        "CRM_BULK_WORKER_PROCESSES": str(workers),
        "CRM_BULK_WORKER_METRICS_PORT": "0",
        "CRM_BULK_SCHEDULER_HEALTH_PORT": "0",
        "CRM_BULK_SCHEDULER_INTERVAL_SECONDS": "0.1",
        "CRM_BULK_CHUNK_SIZE": str(chunk_size),
        "CRM_BULK_EVENTS_INTERVAL_SECONDS": str(events_interval),
        "CRM_BULK_NAMESPACE": f"cli-{uuid.uuid4().hex[:8]}",
        "CRM_BULK_REGISTRATION_BURST": "1000",
        "CRM_BULK_LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT / "python"),
    }
    log_path = data_dir / "up.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "crm_bulk.cli", "up"], env=env, stdout=log, stderr=log, cwd=data_dir
        )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(base, process, log_path)
        yield Stack(base, process.pid, database_url)
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def _wait_healthy(base: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert process.poll() is None, f"crm-bulk up exited: {log_path.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"crm-bulk up did not start: {log_path.read_text()[-3000:]}"
        time.sleep(0.3)


def run_client(
    args: list[str], *, home: Path, api: str | None, timeout: float = 180, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`crm-bulk ARGS` as a person runs it, its config folder under `home`, its API `api`."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CRM_BULK_")}
    clean |= {"XDG_CONFIG_HOME": str(home), "PYTHONPATH": str(ROOT / "python"), "COLUMNS": "120"}
    if api is not None:
        clean["CRM_BULK_API_URL"] = api
    return subprocess.run(
        [sys.executable, "-m", "crm_bulk.cli", *args],
        env=clean | (env or {}),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
