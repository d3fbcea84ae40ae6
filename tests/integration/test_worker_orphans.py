"""A worker pool whose supervisor is SIGKILLed leaves no worker behind: each drains and exits on its own."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.pipeline_support import own_database, pipeline_settings, worker_pool

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def orphan_db(pg_server_url: str) -> Iterator[str]:
    with own_database(pg_server_url) as url:
        yield url


def _gone(pid: int) -> bool:
    """True once `pid` has exited (a zombie waiting for its new parent to reap it counts as exited)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    return "\nState:\tZ" in status


def _wait_gone(pids: list[int], timeout: float) -> list[int]:
    """The pids still running after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        alive = [pid for pid in alive if not _gone(pid)]
        time.sleep(0.05)
    return alive


def test_workers_exit_when_their_supervisor_is_killed(orphan_db: str, tmp_path: Path) -> None:
    settings = pipeline_settings(orphan_db, queue_url=None)
    with worker_pool(settings, 2, tmp_path) as pool:
        workers = pool.wait_for_workers(2)
        # Consuming (the queue is polled) before the supervisor goes.
        time.sleep(1.0)
        killed_at = time.monotonic()
        os.kill(pool.process.pid, signal.SIGKILL)
        pool.process.wait(10)
        alive = _wait_gone(workers, timeout=5.0)
        took = time.monotonic() - killed_at
        log = pool.log()
        for pid in alive:  # leave nothing running behind a failure
            os.kill(pid, signal.SIGKILL)
    assert alive == [], f"workers {alive} outlived their supervisor: {log}"
    assert "the supervisor is gone, draining" in log or "received SIGTERM, draining" in log, log
    print(f"workers gone {took:.2f} s after the supervisor's SIGKILL")
