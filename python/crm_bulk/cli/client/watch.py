"""Following a job to its end through its event stream, reconnecting (with `Last-Event-ID`) when it drops."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx

from crm_bulk.cli.client.exits import EXIT_UNREACHABLE, ClientError
from crm_bulk.cli.client.http import ApiClient

# Consecutive failed connections before giving up; a stream that delivered events starts the count again.
MAX_RECONNECTS = 5
RECONNECT_WAIT_SECONDS = 1.0

Job = dict[str, Any]


def follow_job(client: ApiClient, job_id: str, on_progress: Callable[[Job], None]) -> Job:
    """Call `on_progress` with each state the server sends; return the terminal job (`event: end`)."""
    last_id: str | None = None
    failures = 0
    while True:
        try:
            for event in client.events(f"/bulk-actions/{job_id}/events", last_event_id=last_id):
                if event.event not in ("progress", "end"):
                    continue  # keep-alives
                failures = 0
                last_id = event.id or last_id
                job: Job = json.loads(event.data)
                on_progress(job)
                if event.event == "end":
                    return job
        except httpx.TransportError as exc:
            failures += 1
            if failures > MAX_RECONNECTS:
                raise ClientError(
                    f"lost the event stream of job {job_id} ({exc or type(exc).__name__}); "
                    f"follow it again with `crm-bulk job {job_id} --watch`",
                    EXIT_UNREACHABLE,
                ) from None
        else:
            failures += 1  # the stream ended without `end`: reconnect
        time.sleep(RECONNECT_WAIT_SECONDS)
