"""Test-only faults inside worker processes: a worker pool whose workers SIGKILL themselves when they start
applying a chosen chunk, as a chunk that crashes its worker (a segfault in a kernel, the OOM killer) would.

The hook lives here, outside the package: it is read from `KILL_ON_CHUNK_ENV` only by `killing_worker_main`,
the entry point this module's pool script substitutes for `crm_bulk.worker.pool.worker_process_main`. No
setting, API call or command of crm-bulk can reach it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from uuid import UUID

from crm_bulk.settings import Settings

# `<job uuid>/<chunk no>[,<job uuid>/<chunk no>...]`: chunks whose apply kills the worker process.
KILL_ON_CHUNK_ENV = "TEST_KILL_ON_CHUNK"
# Where each killing worker appends `<pid> <job>/<chunk>` before it dies, so a test can count the deaths.
KILL_LOG_ENV = "TEST_KILL_LOG"
ROOT = Path(__file__).resolve().parents[2]

FAULTY_POOL_SCRIPT = (
    "import logging, os, sys\n"
    "from crm_bulk.settings import Settings\n"
    "from crm_bulk.worker import pool\n"
    "from tests.integration import fault_hooks\n"
    "settings = Settings.from_env()\n"
    "logging.basicConfig(level=settings.log_level,\n"
    "                    format='%(asctime)s %(levelname)s %(processName)s %(name)s %(message)s')\n"
    "pool.worker_process_main = fault_hooks.killing_worker_main\n"
    "sys.exit(pool.run_worker_pool(settings, int(os.environ['TEST_POOL_PROCESSES'])))\n"
)


def kill_on(chunks: list[tuple[UUID, int]]) -> str:
    """The `KILL_ON_CHUNK_ENV` value naming `chunks`."""
    return ",".join(f"{job}/{chunk_no}" for job, chunk_no in chunks)


def _doomed() -> set[tuple[str, int]]:
    doomed: set[tuple[str, int]] = set()
    for item in os.environ.get(KILL_ON_CHUNK_ENV, "").split(","):
        if item.strip():
            job, _, chunk_no = item.strip().partition("/")
            doomed.add((job, int(chunk_no)))
    return doomed


def killing_worker_main(settings: Settings, slot: int, burst: bool) -> None:
    """`worker_process_main`, with the apply of each chunk named in `KILL_ON_CHUNK_ENV` replaced by this
    process SIGKILLing itself (after the worker counted the delivery, before any of the apply commits)."""
    from crm_bulk.worker import ledger_access, pool

    doomed = _doomed()
    real_apply = getattr(ledger_access, "apply_chunk")  # noqa: B009 - the name is replaced below

    def apply_or_die(conn: Any, job_id: UUID, chunk_no: int, **kwargs: Any) -> Any:
        if (str(job_id), chunk_no) in doomed:
            log_path = os.environ.get(KILL_LOG_ENV)
            if log_path:
                with open(log_path, "a", encoding="utf-8") as out:
                    out.write(f"{os.getpid()} {job_id}/{chunk_no}\n")
            os.kill(os.getpid(), signal.SIGKILL)
        return real_apply(conn, job_id, chunk_no, **kwargs)

    setattr(ledger_access, "apply_chunk", apply_or_die)  # noqa: B010 - as the retry tests patch it
    pool.worker_process_main(settings, slot, burst)


def kills_logged(path: Path) -> list[str]:
    """The `<job>/<chunk>` of every self-kill recorded in `path`, in order."""
    if not path.exists():
        return []
    return [line.split()[1] for line in path.read_text().splitlines() if line.strip()]


@contextmanager
def faulty_worker_pool(
    settings: Settings,
    processes: int,
    log_dir: Path,
    *,
    kill_chunks: list[tuple[UUID, int]],
    kill_log: Path,
    env: dict[str, str],
) -> Iterator[Any]:
    """A `run_worker_pool` supervisor in a subprocess whose workers die on `kill_chunks`; `env` is the
    environment of `settings` (`pipeline_support.settings_env`). Yields a `pipeline_support.WorkerPool`."""
    from tests.integration.pipeline_support import WorkerPool

    child_env = env | {
        "TEST_POOL_PROCESSES": str(processes),
        KILL_ON_CHUNK_ENV: kill_on(kill_chunks),
        KILL_LOG_ENV: str(kill_log),
        # The spawned workers import this module by name to run `killing_worker_main`.
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "python")]),
    }
    log_path = log_dir / f"faulty-pool-{uuid.uuid4().hex[:6]}.log"
    with log_path.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", FAULTY_POOL_SCRIPT], env=child_env, stdout=out, stderr=out, cwd=ROOT
        )
    pool = WorkerPool(process=process, log_path=log_path)
    try:
        yield pool
    finally:
        pool.stop()
