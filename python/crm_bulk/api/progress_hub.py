"""One reader of job progress per API process, fanned out to every event stream that watches.

Listeners never query PostgreSQL themselves: the hub reads all watched jobs in one statement per tick (on a
worker thread, a pooled connection held only for that statement) and wakes the listeners of the jobs whose
counts or status changed. A job nobody watches any more is dropped from the next tick, and the polling task
ends once nothing is watched, so an idle process reads nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from uuid import UUID

import anyio
import anyio.to_thread
import psycopg

from crm_bulk.errors import CrmBulkError
from crm_bulk.jobs.repository import TERMINAL_STATUSES, Job

log = logging.getLogger(__name__)

# (account_id, job_id): a job is watched within the account that subscribed to it.
WatchKey = tuple[int, UUID]
ReadJobs = Callable[[list[WatchKey]], dict[UUID, Job]]


def job_changed(before: Job, after: Job) -> bool:
    """Whether a listener has something new to show: counts, status or timestamps (the rate and ETA alone
    drift with the clock at every read)."""
    return _signature(before) != _signature(after)


def _signature(job: Job) -> tuple[object, ...]:
    return (
        job.status,
        job.total,
        job.succeeded,
        job.failed,
        job.skipped,
        job.cancelled,
        job.started_at,
        job.finished_at,
    )


def is_terminal(job: Job) -> bool:
    """Whether the job has ended (no more progress will come)."""
    return job.status in TERMINAL_STATUSES


@dataclass
class _Watched:
    """One watched job: its latest state, a version bumped at each change, and who listens."""

    job: Job
    version: int = 0
    listeners: int = 0
    gone: bool = False
    changed: anyio.Event = field(default_factory=anyio.Event)

    def update(self, job: Job) -> None:
        if not job_changed(self.job, job):
            return
        self.job = job
        self._wake()

    def vanish(self) -> None:
        self.gone = True
        self._wake()

    def _wake(self) -> None:
        self.version += 1
        changed, self.changed = self.changed, anyio.Event()
        changed.set()


@dataclass
class Watch:
    """A listener's view of one watched job."""

    _entry: _Watched
    seen: int = -1

    @property
    def gone(self) -> bool:
        """The job can no longer be read (deleted with its account)."""
        return self._entry.gone

    async def next_state(self, *, timeout: float) -> Job | None:
        """The job's state once it differs from the one this listener last got (at once on the first call),
        or None after `timeout` seconds without a change (time for a keep-alive) or when the job is gone."""
        entry = self._entry
        if entry.version == self.seen and not entry.gone:
            with anyio.move_on_after(timeout):
                await entry.changed.wait()
        if entry.version == self.seen or entry.gone:
            return None
        self.seen = entry.version
        return entry.job


class ProgressHub:
    """Watched jobs of this process, read together every `interval` seconds by `read_jobs` (blocking: it
    runs on a worker thread)."""

    def __init__(self, read_jobs: ReadJobs, *, interval: float) -> None:
        self._read_jobs = read_jobs
        self._interval = interval
        self._watched: dict[WatchKey, _Watched] = {}
        self._poller: asyncio.Task[None] | None = None
        self.reads = 0  # ticks that read PostgreSQL, for tests and /metrics-minded operators

    def __repr__(self) -> str:
        return f"ProgressHub(watched={len(self._watched)}, reads={self.reads})"

    def watched(self, account_id: int, job_id: UUID) -> Job | None:
        """The latest state of a job this process already watches for the account, else None."""
        entry = self._watched.get((account_id, job_id))
        return None if entry is None or entry.gone else entry.job

    @asynccontextmanager
    async def watch(self, account_id: int, job: Job) -> AsyncIterator[Watch]:
        """Listen to `job` (already read within `account_id`) until the block ends."""
        key = (account_id, job.id)
        entry = self._watched.get(key)
        if entry is None or entry.gone:
            entry = self._watched[key] = _Watched(job)
        else:
            entry.update(job)
        entry.listeners += 1
        self._ensure_polling()
        try:
            yield Watch(entry)
        finally:
            entry.listeners -= 1
            if entry.listeners == 0 and self._watched.get(key) is entry:
                del self._watched[key]

    def _ensure_polling(self) -> None:
        if self._poller is None or self._poller.done():
            self._poller = asyncio.get_running_loop().create_task(self._poll(), name="progress-hub")

    async def _poll(self) -> None:
        while self._watched:
            await anyio.sleep(self._interval)
            keys = [key for key, entry in self._watched.items() if not is_terminal(entry.job)]
            if not keys:
                continue
            try:
                found = await anyio.to_thread.run_sync(self._read_jobs, keys)
            except (psycopg.Error, CrmBulkError) as exc:
                # PostgreSQL away or the pool exhausted (PoolTimeout is a psycopg error): listeners keep the
                # last state and get keep-alives; the next tick tries again.
                log.warning("progress read of %d jobs failed: %s", len(keys), exc)
                continue
            except Exception:
                # A bug must not end the polling for every listener of the process: logged whole, retried.
                log.exception("progress read of %d jobs failed", len(keys))
                continue
            self.reads += 1
            self._apply(keys, found)

    def _apply(self, keys: list[WatchKey], found: dict[UUID, Job]) -> None:
        for key in keys:
            entry = self._watched.get(key)
            if entry is None:
                continue  # its last listener left during the read
            job = found.get(key[1])
            if job is None:
                entry.vanish()
            else:
                entry.update(job)
