"""`/bulk-actions/{id}/events`: a job's progress as Server-Sent Events, fed by the process's `ProgressHub`.

`event: progress` carries the job as `GET /bulk-actions/{id}` shows it, sent at once and then whenever its
counts or status change; `event: end` carries the terminal job, and the stream ends. Each event's `id` names
the state it shows (`<entities done>-<status>`), the same on every API process. A client that reconnects
(with `Last-Event-ID`, as browsers do) gets the current state next, or `end` at once when the job has ended
meanwhile. A stream holds no pooled connection while it waits.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any
from uuid import UUID

import anyio.to_thread
import msgspec
from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.params import FromPath, HeaderParameter
from litestar.response import ServerSentEvent, ServerSentEventMessage

from crm_bulk.api.problems import AUTHENTICATED, problem_responses
from crm_bulk.api.progress_hub import ProgressHub, is_terminal
from crm_bulk.api.resources import Resources
from crm_bulk.api.security import viewer
from crm_bulk.auth.accounts import Principal
from crm_bulk.jobs import repository as jobs
from crm_bulk.jobs.repository import Job

# What an EventSource waits before reconnecting after the stream drops, in milliseconds.
RECONNECT_MS = 2000


def progress_hub_for(resources: Resources) -> ProgressHub:
    """The process's hub, reading the watched jobs on a short transaction of the API's pool."""

    def read_jobs(keys: list[tuple[int, UUID]]) -> dict[UUID, Job]:
        return resources.in_transaction(jobs.get_jobs, keys)

    return ProgressHub(read_jobs, interval=resources.settings.events_interval_seconds)


def event_id(job: Job) -> str:
    """The id of the event showing this state of the job."""
    done = job.succeeded + job.failed + job.skipped + job.cancelled
    return f"{done}-{job.status}"


def job_event(job: Job, *, retry: int | None = None) -> ServerSentEventMessage:
    """`progress`, or `end` for a terminal job, with the job as its JSON data."""
    return ServerSentEventMessage(
        data=msgspec.json.encode(job).decode(),
        event="end" if is_terminal(job) else "progress",
        id=event_id(job),
        retry=retry,
    )


async def job_events(
    hub: ProgressHub, account_id: int, job: Job, *, keepalive: float
) -> AsyncIterator[ServerSentEventMessage]:
    """The stream's events: the current state, its changes, keep-alives in between, `end` last."""
    if is_terminal(job):
        yield job_event(job, retry=RECONNECT_MS)
        return
    async with hub.watch(account_id, job) as watch:
        first = True
        while True:
            state = await watch.next_state(timeout=keepalive)
            if watch.gone:
                return
            if state is None:
                yield ServerSentEventMessage(data=None, comment="keep-alive")
                continue
            yield job_event(state, retry=RECONNECT_MS if first else None)
            first = False
            if is_terminal(state):
                return


def _read_job(resources: Resources, account_id: int, job_id: UUID) -> Job:
    return resources.in_transaction(jobs.get_job, account_id, job_id)


class EventController(Controller):
    """Live progress of the caller's account's jobs; viewers may listen."""

    path = "/bulk-actions"
    tags = ["bulk-actions"]  # noqa: RUF012 - Litestar reads it as a class attribute
    guards = [viewer]  # noqa: RUF012

    @get(
        "/{job_id:uuid}/events",
        summary="A bulk action's progress as Server-Sent Events",
        media_type="text/event-stream",
        responses=problem_responses(*AUTHENTICATED, 404),
    )
    async def stream_events(
        self,
        job_id: FromPath[UUID],
        request: Request[Any, Any, Any],
        principal: NamedDependency[Principal],
        resources: NamedDependency[Resources],
        last_event_id: Annotated[
            str | None,
            HeaderParameter(
                name="Last-Event-ID",
                max_length=200,
                description="Sent by a reconnecting client: the stream goes on from the job's current state.",
            ),
        ] = None,
    ) -> ServerSentEvent:
        """`event: progress` (the job, as `GET /bulk-actions/{id}`) whenever it changes, a `: keep-alive`
        comment every CRM_BULK_EVENTS_KEEPALIVE_SECONDS meanwhile, `event: end` with the terminal job last.
        404 for unknown ids and other accounts' jobs alike."""
        hub: ProgressHub = request.app.state.progress_hub
        account_id = principal.account_id
        # A job this process already watches for the account needs no read: 200 listeners joining cost one.
        job = hub.watched(account_id, job_id)
        if job is None:
            job = await anyio.to_thread.run_sync(_read_job, resources, account_id, job_id)
        keepalive = resources.settings.events_keepalive_seconds
        return ServerSentEvent(
            job_events(hub, account_id, job, keepalive=keepalive),
            # Proxies must pass each event on as it comes, not buffer the stream.
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
