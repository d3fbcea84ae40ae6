"""Stalled streamed uploads against a real uvicorn server on a loopback port (the TestClient cannot stall a
request body): they hold no database connection while they wait, are cut off by the idle timeout, leave
nothing stored, and never slow another account down; the upload caps answer 429; `/readyz` tells the truth
about the connection pool.

The server runs in a thread of the test process, so the test can also reach its `Resources` (to take every
pooled connection and see `/readyz` turn not ready).
"""

from __future__ import annotations

import contextlib
import socket
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime

import httpx
import polars as pl
import psycopg
import pytest
import uvicorn

from crm_bulk import kernels
from crm_bulk.actions.specs import BulkActionRequest
from crm_bulk.api import create_app, import_session
from crm_bulk.api.resources import Resources
from crm_bulk.auth.accounts import register
from crm_bulk.jobs.lifecycle import discard_abandoned_uploads
from crm_bulk.jobs.repository import create_job
from crm_bulk.planner import append_import_chunk
from crm_bulk.settings import API_POOL_SIZE
from tests.integration.api_support import PASSWORD, PROBLEM_JSON, make_settings, unique_email
from tests.integration.server_support import free_port, serving

pytestmark = pytest.mark.postgres

IDLE_TIMEOUT = 3.0
CHUNK_SIZE = 1000
MAX_UPLOADS = 8
PER_ACCOUNT = 2
STALLED = 2 * API_POOL_SIZE
STALL_BYTES = 1024 * 1024
ROW = "{i}@stall.example.com,First{i},Last{i},Acme\n"


@dataclass(frozen=True)
class Server:
    """The running API: its base URL, port and the app's shared resources."""

    base: str
    port: int
    resources: Resources


@dataclass
class Stalled:
    """One upload that sends its first bytes and then nothing: the answer it got and when."""

    status: int | None = None
    retry_after: str | None = None
    content_type: str | None = None
    answered_after: float | None = None


@pytest.fixture(scope="module")
def server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The API under uvicorn in a thread, with a short upload idle timeout and small chunks."""
    settings = make_settings(
        tmp_path_factory.mktemp("upload-stalls"),
        upload_idle_timeout_seconds=IDLE_TIMEOUT,
        chunk_size=CHUNK_SIZE,
        max_uploads=MAX_UPLOADS,
        max_uploads_per_account=PER_ACCOUNT,
        log_level="WARNING",
    ).resolved(database_url=database_url)
    app = create_app(settings)
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    with serving(config):
        yield Server(f"http://127.0.0.1:{port}", port, app.state.resources)


def _account(database_url: str, client: httpx.Client) -> tuple[int, dict[str, str]]:
    """A new account (made in the database: sign-up throttling is not under test) and its admin's header."""
    email = unique_email("stall")
    with psycopg.connect(database_url) as conn:
        made = register(conn, email=email, password=PASSWORD, account_name=f"Stall {uuid.uuid4().hex[:6]}")
    answer = client.post("/auth/login", json={"email": email, "password": PASSWORD})
    assert answer.status_code == 200, answer.text
    return made.account_id, {"Authorization": f"Bearer {answer.json()['access_token']}"}


def _csv(size: int) -> bytes:
    """A CSV of about `size` bytes: the header and whole rows."""
    lines = ["email,first_name,last_name,company\n"]
    total, i = len(lines[0]), 0
    while total < size:
        lines.append(ROW.format(i=i))
        total += len(lines[-1])
        i += 1
    return "".join(lines).encode()


def _upload_head(port: int, headers: dict[str, str]) -> bytes:
    """The request head of a streamed CSV import that declares a 50 MB body."""
    head = [
        "POST /bulk-actions/import HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Content-Type: text/csv",
        f"Content-Length: {50 * 1024 * 1024}",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode()


def _stall(port: int, headers: dict[str, str], body: bytes, found: Stalled) -> None:
    """Declare a 50 MB CSV, send `body`, then send nothing more and wait for the server's answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=IDLE_TIMEOUT + 15) as sock:
        sock.sendall(_upload_head(port, headers))
        started = time.monotonic()
        # Refused before its body is read (429), the server may close its side while this still sends.
        with contextlib.suppress(OSError):
            sock.sendall(body)
        answer = b""
        while b"\r\n\r\n" not in answer:
            try:
                piece = sock.recv(65536)
            except OSError:
                break
            if not piece:
                break
            answer += piece
    found.answered_after = time.monotonic() - started
    head_text = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    lines = head_text.split("\r\n")
    if lines and lines[0].startswith("HTTP/1.1 "):
        found.status = int(lines[0].split()[1])
    fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    found.retry_after = fields.get("retry-after")
    found.content_type = fields.get("content-type")


def _start_stalls(
    port: int, accounts: list[dict[str, str]], count: int, body: bytes
) -> tuple[list[Stalled], list[threading.Thread]]:
    results = [Stalled() for _ in range(count)]
    threads = [
        threading.Thread(
            target=_stall, args=(port, accounts[i % len(accounts)], body, results[i]), daemon=True
        )
        for i in range(count)
    ]
    for thread in threads:
        thread.start()
    return results, threads


def _latencies(call: Callable[[], httpx.Response], rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        answer = call()
        times.append(time.perf_counter() - started)
        assert answer.status_code == 200, (answer.status_code, answer.text)
    return times


def _stored(database_url: str, account_ids: list[int]) -> tuple[int, int, int]:
    """(jobs, chunks, idle-in-transaction sessions of this database) for these accounts."""
    with psycopg.connect(database_url) as conn:
        jobs = conn.execute(
            "SELECT count(*) FROM bulk_actions WHERE account_id = ANY(%s)", [account_ids]
        ).fetchone()
        chunks = conn.execute(
            "SELECT count(*) FROM bulk_action_chunks WHERE account_id = ANY(%s)", [account_ids]
        ).fetchone()
        idle = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND state LIKE 'idle in transaction%%'"
        ).fetchone()
    assert jobs is not None and chunks is not None and idle is not None
    return int(jobs[0]), int(chunks[0]), int(idle[0])


def _ready(client: httpx.Client) -> tuple[int, bool]:
    answer = client.get("/readyz")
    return answer.status_code, bool(answer.json()["backends"]["postgres_pool"]["ok"])


def test_stalled_uploads_hold_no_connection_and_leave_nothing(server: Server, database_url: str) -> None:
    """2x the pool size of uploads stall after their first MB: another account is served as fast as before,
    no connection idles in a transaction, the stalls are cut off by the idle timeout, nothing is stored."""
    with httpx.Client(base_url=server.base, timeout=30) as client:
        _, victim = _account(database_url, client)
        attackers = [_account(database_url, client) for _ in range(MAX_UPLOADS // PER_ACCOUNT)]
        attacker_ids = [account_id for account_id, _ in attackers]

        def victim_call() -> httpx.Response:
            return client.get("/bulk-actions", headers=victim)

        baseline = statistics.median(_latencies(victim_call, 30))
        assert _ready(client) == (200, True)

        results, threads = _start_stalls(
            server.port, [headers for _, headers in attackers], STALLED, _csv(STALL_BYTES)
        )
        _wait_stalling(server, database_url, results, attacker_ids)
        stalling = time.monotonic()
        during = _latencies(victim_call, 30)
        assert _ready(client) == (200, True)
        _assert_held_nowhere(client, database_url, attackers)
        assert time.monotonic() - stalling < IDLE_TIMEOUT, "the checks ran after the stalls were cut off"

        for thread in threads:
            thread.join(timeout=IDLE_TIMEOUT + 20)
        after = _latencies(victim_call, 10)
        assert _ready(client) == (200, True)

    statuses = sorted(r.status or 0 for r in results)
    assert statuses == [408] * MAX_UPLOADS + [429] * (STALLED - MAX_UPLOADS), statuses
    cut_off = [r.answered_after or 0.0 for r in results if r.status == 408]
    assert all(IDLE_TIMEOUT * 0.9 <= t < IDLE_TIMEOUT + 5 for t in cut_off), cut_off
    assert all(r.retry_after == "5" and r.content_type == PROBLEM_JSON for r in results if r.status == 429)
    assert _stored(database_url, attacker_ids) == (0, 0, 0)
    floor = max(baseline, 0.005)
    print(
        f"\nvictim GET /bulk-actions: baseline median {baseline * 1000:.1f} ms; "
        f"during {STALLED} stalled uploads median {statistics.median(during) * 1000:.1f} ms, "
        f"max {max(during) * 1000:.1f} ms; after median {statistics.median(after) * 1000:.1f} ms; "
        f"stalls cut off after {min(cut_off):.2f}-{max(cut_off):.2f} s"
    )
    assert statistics.median(during) < 5 * floor
    assert max(during) < 1.0, "a request waited for a pooled connection"


def _assert_held_nowhere(
    client: httpx.Client, database_url: str, uploaders: list[tuple[int, dict[str, str]]]
) -> None:
    """Stalled uploads have stored chunks, but hold no connection in a transaction, and their jobs are
    neither runnable (`uploading`, unplanned: no scheduler query matches) nor visible to their account."""
    account_ids = [account_id for account_id, _ in uploaders]
    jobs, chunks, idle = _stored(database_url, account_ids)
    assert idle == 0, "an upload holds a connection in a transaction"
    assert jobs > 0 and chunks > 0, "the stalled uploads stored their first chunks"
    with psycopg.connect(database_url) as conn:
        shown = conn.execute(
            "SELECT DISTINCT status, planned FROM bulk_actions WHERE account_id = ANY(%s)", [account_ids]
        ).fetchall()
    assert shown == [("uploading", False)], "a stalled upload is runnable"
    for _, headers in uploaders:
        assert client.get("/bulk-actions", headers=headers).json()["items"] == [], "an upload is visible"


def test_upload_caps_answer_429_until_a_slot_frees(server: Server, database_url: str) -> None:
    """Per account, then in total: one more upload answers 429 problem+json with Retry-After; once the
    stalled ones are cut off, uploads are admitted again."""
    small = _csv(200)  # less than a chunk: these stalls write nothing at all
    with httpx.Client(base_url=server.base, timeout=30) as client:
        accounts = [_account(database_url, client) for _ in range(MAX_UPLOADS // PER_ACCOUNT + 1)]
        first_id, first = accounts[0]
        held, held_threads = _start_stalls(server.port, [first], PER_ACCOUNT, small)
        _wait_in_use(server, PER_ACCOUNT)
        refused = client.post(
            "/bulk-actions/import", content=small, headers=first | {"Content-Type": "text/csv"}
        )
        assert refused.status_code == 429, refused.text
        assert refused.headers["content-type"].startswith(PROBLEM_JSON)
        assert refused.headers["retry-after"] == "5"
        assert "the account" in refused.json()["detail"]

        others = [headers for _, headers in accounts[1:-1]]
        more, more_threads = _start_stalls(server.port, others, PER_ACCOUNT * len(others), small)
        _wait_in_use(server, MAX_UPLOADS)
        last = accounts[-1][1] | {"Content-Type": "text/csv"}
        full = client.post("/bulk-actions/import", content=small, headers=last)
        assert full.status_code == 429, full.text
        assert "uploads are in progress" in full.json()["detail"]

        for thread in held_threads + more_threads:
            thread.join(timeout=IDLE_TIMEOUT + 20)
        assert [r.status for r in held + more] == [408] * MAX_UPLOADS
        assert server.resources.uploads.in_use == 0
        admitted = client.post(
            "/bulk-actions/import", content=small, headers=first | {"Content-Type": "text/csv"}
        )
        assert admitted.status_code == 202, admitted.text
        assert admitted.json()["status"] == "queued"
    jobs, chunks, _ = _stored(database_url, [first_id])
    assert (jobs, chunks) == (1, 1)
    _end_jobs(database_url, [account_id for account_id, _ in accounts])


def test_an_upload_whose_client_goes_away_leaves_nothing(server: Server, database_url: str) -> None:
    """The client closes its connection after its first MB (chunks already stored): all of it is discarded
    at once, without waiting for the idle timeout, and its slot is free again."""
    with httpx.Client(base_url=server.base, timeout=30) as client:
        account_id, headers = _account(database_url, client)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(_upload_head(server.port, headers) + _csv(STALL_BYTES))
        deadline = time.monotonic() + IDLE_TIMEOUT
        while _stored(database_url, [account_id])[1] == 0:
            assert time.monotonic() < deadline, "the upload stored no chunk"
            time.sleep(0.02)
    gone_at = time.monotonic()
    while _stored(database_url, [account_id])[:2] != (0, 0) or server.resources.uploads.in_use:
        assert time.monotonic() - gone_at < IDLE_TIMEOUT * 0.9, "the upload was not discarded at once"
        time.sleep(0.02)


def test_a_slow_upload_keeps_giving_signs_of_life(
    server: Server, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pieces that complete no chunk still refresh the job's `upload_seen_at` (every HEARTBEAT_SECONDS), so
    the scheduler never takes a slow but live upload for abandoned."""
    monkeypatch.setattr(import_session, "HEARTBEAT_SECONDS", 0.0)
    with httpx.Client(base_url=server.base, timeout=30) as client:
        account_id, headers = _account(database_url, client)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(_upload_head(server.port, headers) + _csv(STALL_BYTES))
        seen = _seen_at(database_url, account_id, after=None)
        for _ in range(2):
            time.sleep(IDLE_TIMEOUT / 4)
            sock.sendall(b"x")  # part of a row: no chunk completes
            seen = _seen_at(database_url, account_id, after=seen)


def _seen_at(database_url: str, account_id: int, *, after: datetime | None) -> datetime:
    """The account's upload's `upload_seen_at` once it is later than `after`."""
    deadline = time.monotonic() + IDLE_TIMEOUT / 2
    while True:
        with psycopg.connect(database_url) as conn:
            row = conn.execute(
                "SELECT upload_seen_at FROM bulk_actions WHERE account_id = %s AND status = 'uploading'",
                [account_id],
            ).fetchone()
        if row is not None and row[0] is not None and (after is None or row[0] > after):
            return row[0]  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, "the upload gave no sign of life"
        time.sleep(0.02)


def test_readyz_reports_an_exhausted_pool_and_its_recovery(server: Server) -> None:
    """Every pooled connection taken: /readyz answers 503 naming the pool; given back, 200 again."""
    with httpx.Client(base_url=server.base, timeout=30) as client:
        assert _ready(client) == (200, True)
        with ExitStack() as stack:
            for _ in range(API_POOL_SIZE):
                stack.enter_context(server.resources.connection())
            answer = client.get("/readyz")
            assert answer.status_code == 503, answer.text
            pool = answer.json()["backends"]["postgres_pool"]
            assert pool["ok"] is False and "no pooled connection free" in pool["error"]
            assert answer.json()["backends"]["postgres"]["ok"] is True
        assert _ready(client) == (200, True)


def test_an_abandoned_upload_is_discarded_by_the_scheduler(server: Server, database_url: str) -> None:
    """An `uploading` job whose API process went silent (it died mid-upload) is deleted with its chunks;
    one that still gives signs of life is kept."""
    with httpx.Client(base_url=server.base, timeout=30) as client:
        account_id, _ = _account(database_url, client)
    emails = pl.DataFrame({"email": [f"{i}@abandoned.example.com" for i in range(2500)]})
    with psycopg.connect(database_url, autocommit=True) as conn:
        job = create_job(
            conn,
            account_id=account_id,
            created_by=None,
            request=BulkActionRequest(action="import"),
            uploading=True,
        )
        append_import_chunk(conn, job.id, emails, seen=kernels.SeenKeys(), chunk_size=CHUNK_SIZE)
        assert _stored(database_url, [account_id])[:2] == (1, 3)
        assert discard_abandoned_uploads(conn, older_than_seconds=3600) == 0
        # As if the upload's process had died two hours ago: no sign of life since.
        conn.execute(
            "UPDATE bulk_actions SET upload_seen_at = now() - interval '2 hours' WHERE id = %s", [job.id]
        )
        assert discard_abandoned_uploads(conn, older_than_seconds=3600) == 1
    assert _stored(database_url, [account_id])[:2] == (0, 0)


def _wait_stalling(server: Server, database_url: str, results: list[Stalled], account_ids: list[int]) -> None:
    """Until the refused uploads have their 429 and the admitted ones have stored what they sent (their
    chunk count no longer grows): from then on these only wait for more."""
    deadline = time.monotonic() + IDLE_TIMEOUT
    chunks, steady_since = -1, time.monotonic()
    while True:
        assert time.monotonic() < deadline, "the uploads did not reach their stall"
        refused = sum(r.status == 429 for r in results)
        now_chunks = _stored(database_url, account_ids)[1]
        if now_chunks != chunks:
            chunks, steady_since = now_chunks, time.monotonic()
        admitted = server.resources.uploads.in_use == MAX_UPLOADS
        if admitted and refused == len(results) - MAX_UPLOADS and time.monotonic() - steady_since > 0.3:
            return
        time.sleep(0.02)


def _wait_in_use(server: Server, count: int) -> None:
    deadline = time.monotonic() + IDLE_TIMEOUT / 2
    while server.resources.uploads.in_use < count:
        assert time.monotonic() < deadline, f"{server.resources.uploads.in_use} uploads admitted, not {count}"
        time.sleep(0.01)


def _end_jobs(database_url: str, account_ids: list[int]) -> None:
    """Cancel these accounts' jobs, so a scheduler run by a later test module does not pick them up."""
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "UPDATE bulk_actions SET status = 'cancelled', finished_at = now() "
            "WHERE account_id = ANY(%s) AND status IN ('scheduled', 'queued', 'running')",
            [account_ids],
        )
