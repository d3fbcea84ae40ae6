"""`GET /bulk-actions/{id}/events` against a real uvicorn server: progress when the job changes, `end` with
the terminal job, resumption with `Last-Event-ID`, keep-alives, tenancy, and one progress read per tick for
many listeners (the process's hub), which stops once nobody listens."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest

from crm_bulk.api.progress_hub import ProgressHub
from crm_bulk.cli.client.sse import StreamEvent, parse_events
from tests.integration.events_support import (
    LiveApi,
    Member,
    live_api,
    make_account,
    queued_job,
    set_progress,
)

pytestmark = pytest.mark.postgres

INTERVAL = 0.1
KEEPALIVE = 0.5


@pytest.fixture(scope="module")
def api(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApi]:
    """The API with a fast progress tick and keep-alive."""
    with live_api(
        database_url,
        tmp_path_factory.mktemp("events"),
        events_interval_seconds=INTERVAL,
        events_keepalive_seconds=KEEPALIVE,
    ) as served:
        yield served


@pytest.fixture(scope="module")
def account(api: LiveApi) -> dict[str, Member]:
    """An account with an admin, an editor and a viewer."""
    return make_account(api)


def _hub(api: LiveApi) -> ProgressHub:
    hub: ProgressHub = api.app.state.progress_hub
    return hub


def _events(response: httpx.Response, *, within: float = 15.0) -> Iterator[StreamEvent]:
    """The stream's events, keep-alive comments left out; fails when only keep-alives come for `within` s."""
    last = time.monotonic()
    for event in parse_events(response.iter_lines()):
        if event.event != "comment":
            last = time.monotonic()
            yield event
        assert time.monotonic() - last < within, "only keep-alives for too long"


def _stream(api: LiveApi, job_id: UUID | str, headers: dict[str, str]) -> Any:
    return httpx.stream(
        "GET", f"{api.base}/bulk-actions/{job_id}/events", headers=headers, timeout=httpx.Timeout(10.0)
    )


def test_progress_then_end_then_the_stream_closes(api: LiveApi, account: dict[str, Member]) -> None:
    job_id = queued_job(api.database_url, account["admin"].account_id, total=10)
    with _stream(api, job_id, account["viewer"].headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        events = _events(response)
        first = next(events)
        assert (first.event, first.id) == ("progress", "0-queued")
        assert json.loads(first.data)["status"] == "queued"
        set_progress(api.database_url, job_id, status="running", succeeded=4)
        second = next(events)
        body = json.loads(second.data)
        assert (second.event, second.id) == ("progress", "4-running")
        assert (body["succeeded"], body["progress"]) == (4, 0.4)
        assert body["entities_per_second"] > 0
        assert body["eta_seconds"] is not None
        set_progress(api.database_url, job_id, status="completed_with_errors", succeeded=9, failed=1)
        last = next(events)
        assert (last.event, last.id) == ("end", "10-completed_with_errors")
        final = json.loads(last.data)
        assert final["total"] == final["succeeded"] + final["failed"] + final["skipped"] + final["cancelled"]
        assert list(events) == []  # the server ended the stream


def test_the_same_numbers_as_the_job_route(api: LiveApi, account: dict[str, Member]) -> None:
    job_id = queued_job(api.database_url, account["admin"].account_id, total=3)
    set_progress(api.database_url, job_id, status="completed", succeeded=3)
    job = httpx.get(f"{api.base}/bulk-actions/{job_id}", headers=account["viewer"].headers).json()
    with _stream(api, job_id, account["viewer"].headers) as response:
        (end,) = list(_events(response))
    assert end.event == "end"
    assert json.loads(end.data) == job


def test_reconnecting_gets_the_current_state_next(api: LiveApi, account: dict[str, Member]) -> None:
    job_id = queued_job(api.database_url, account["admin"].account_id, total=8)
    headers = account["viewer"].headers
    with _stream(api, job_id, headers) as response:
        seen = next(_events(response))
    set_progress(api.database_url, job_id, status="running", succeeded=5)
    assert seen.id is not None
    with _stream(api, job_id, {**headers, "Last-Event-ID": seen.id}) as response:
        resumed = next(_events(response))
    assert (resumed.event, resumed.id) == ("progress", "5-running")
    set_progress(api.database_url, job_id, status="cancelled", succeeded=5)
    with _stream(api, job_id, {**headers, "Last-Event-ID": "5-running"}) as response:
        events = list(_events(response))
    assert [(e.event, e.id) for e in events] == [("end", "5-cancelled")]


def test_keep_alive_comments_while_nothing_changes(api: LiveApi, account: dict[str, Member]) -> None:
    job_id = queued_job(api.database_url, account["admin"].account_id, total=2)
    with _stream(api, job_id, account["viewer"].headers) as response:
        events = parse_events(response.iter_lines())
        assert next(events).event == "progress"
        started = time.monotonic()
        keepalive = next(events)
        waited = time.monotonic() - started
    assert (keepalive.event, keepalive.data) == ("comment", "keep-alive")
    assert waited >= KEEPALIVE * 0.8


@pytest.mark.parametrize("job", ["unknown", "other_account"])
def test_unknown_and_other_accounts_jobs_are_404(api: LiveApi, account: dict[str, Member], job: str) -> None:
    if job == "unknown":
        job_id = uuid4()
    else:
        other = make_account(api)
        job_id = queued_job(api.database_url, other["admin"].account_id, total=1)
    answer = httpx.get(f"{api.base}/bulk-actions/{job_id}/events", headers=account["viewer"].headers)
    assert answer.status_code == 404, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert str(job_id) in answer.json()["detail"]


def test_without_a_token_401(api: LiveApi, account: dict[str, Member]) -> None:
    job_id = queued_job(api.database_url, account["admin"].account_id, total=1)
    assert httpx.get(f"{api.base}/bulk-actions/{job_id}/events").status_code == 401


def _listen(api: LiveApi, job_id: UUID, headers: dict[str, str], got: list[StreamEvent]) -> None:
    with _stream(api, job_id, headers) as response:
        for event in _events(response):
            got.append(event)


def _wait_for(condition: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_many_listeners_share_one_read_per_tick_and_polling_stops_after(
    api: LiveApi, account: dict[str, Member]
) -> None:
    listeners = 40
    job_id = queued_job(api.database_url, account["admin"].account_id, total=100)
    hub = _hub(api)
    got: list[list[StreamEvent]] = [[] for _ in range(listeners)]
    threads = [
        threading.Thread(target=_listen, args=(api, job_id, account["viewer"].headers, got[i]), daemon=True)
        for i in range(listeners)
    ]
    for thread in threads:
        thread.start()
    _wait_for(lambda: all(len(g) >= 1 for g in got))
    reads_before, started = hub.reads, time.monotonic()
    for done in (10, 50, 90):
        set_progress(api.database_url, job_id, status="running", succeeded=done)
        _wait_for(lambda done=done: all(g[-1].id == f"{done}-running" for g in got))
    set_progress(api.database_url, job_id, status="completed", succeeded=100)
    for thread in threads:
        thread.join(timeout=15)
    elapsed = time.monotonic() - started
    assert all(g[-1].event == "end" and g[-1].id == "100-completed" for g in got)
    # One read per tick for the job, whatever the number of listeners (each listener polling would be 40x).
    assert hub.reads - reads_before <= elapsed / INTERVAL + 2
    _wait_for(lambda: hub.watched(account["admin"].account_id, job_id) is None)
    reads_after_end = hub.reads
    time.sleep(5 * INTERVAL)
    assert hub.reads == reads_after_end  # nobody watches: nothing is read


def test_a_listener_that_leaves_stops_its_jobs_reads(api: LiveApi, account: dict[str, Member]) -> None:
    job_id = queued_job(api.database_url, account["admin"].account_id, total=5)
    hub = _hub(api)
    with _stream(api, job_id, account["viewer"].headers) as response:
        next(_events(response))
        assert hub.watched(account["admin"].account_id, job_id) is not None
    _wait_for(lambda: hub.watched(account["admin"].account_id, job_id) is None, timeout=5)


def test_listeners_of_several_jobs_are_read_together(api: LiveApi, account: dict[str, Member]) -> None:
    hub = _hub(api)
    reads_before, started = hub.reads, time.monotonic()
    jobs = [queued_job(api.database_url, account["admin"].account_id, total=4) for _ in range(3)]
    got: list[list[StreamEvent]] = [[] for _ in jobs]
    threads = [
        threading.Thread(target=_listen, args=(api, j, account["viewer"].headers, got[i]), daemon=True)
        for i, j in enumerate(jobs)
    ]
    for thread in threads:
        thread.start()
    _wait_for(lambda: all(got))
    for job_id in jobs:
        set_progress(api.database_url, job_id, status="completed", succeeded=4)
    for thread in threads:
        thread.join(timeout=15)
    assert [g[-1].id for g in got] == ["4-completed"] * 3
    # One statement per tick reads all three (three would be read three times as often).
    assert hub.reads - reads_before <= (time.monotonic() - started) / INTERVAL + 2
