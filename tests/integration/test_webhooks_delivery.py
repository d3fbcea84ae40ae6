"""Completion webhooks end to end on real PostgreSQL and a real HTTP receiver on loopback: events written
in the transaction of the job's start and end, delivered signed (checked with the Standard Webhooks
reference library), retried through an outage, 5xx answers and timeouts, never under two ids, refused when
the target turns internal, sent again on request.

Retry schedules here are short (settings), so that the outage test waits out a 30 s outage (set
CRM_BULK_TEST_WEBHOOK_OUTAGE_SECONDS to change it) rather than the default schedule's hours.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from standardwebhooks.webhooks import Webhook

from crm_bulk.actions.specs import BulkActionRequest, Target
from crm_bulk.apply.engine import apply_chunk
from crm_bulk.dispatch.release import release_chunks
from crm_bulk.jobs.control import cancel_job
from crm_bulk.jobs.lifecycle import finish_jobs, plan_next_job
from crm_bulk.jobs.repository import create_job, get_job
from crm_bulk.postgres import Conn
from crm_bulk.settings import Settings
from crm_bulk.webhooks import endpoints, outbox
from crm_bulk.webhooks.deliverer import DelivererCounters, run_deliverer
from crm_bulk.webhooks.delivery import (
    AttemptResult,
    RetrySchedule,
    WebhookSender,
    claim_due,
    prune_delivery_log,
    record_attempt,
)
from crm_bulk.webhooks.outbox import event_id_for
from crm_bulk.webhooks.sealing import SecretBox
from crm_bulk.webhooks.targets import AddressPolicy, IPAddress
from tests.databases import own_database, quiet_connection
from tests.integration.pipeline_support import (
    make_account,
    seed_contacts,
    settings_env,
    stamp_outboxes_shipped,
)
from tests.integration.server_support import free_port
from tests.integration.test_scheduler_lifecycle import RecordingPublisher
from tests.integration.webhook_receiver import Received, Script, receiving

pytestmark = pytest.mark.postgres

JWT_SECRET = "webhook-test-jwt-secret-" + "x" * 32
OUTAGE_SECONDS = float(os.environ.get("CRM_BULK_TEST_WEBHOOK_OUTAGE_SECONDS", "30"))


@pytest.fixture(scope="module")
def hooks_db(pg_server_url: str) -> Iterator[str]:
    with own_database(pg_server_url, prefix="crm_bulk_hooks") as url:
        yield url


@pytest.fixture
def conn(hooks_db: str) -> Iterator[Conn]:
    """An autocommit connection; earlier tests' jobs set aside, their endpoints disabled at the end."""
    with quiet_connection(hooks_db) as c:
        yield c
        c.execute("UPDATE webhook_endpoints SET enabled = false")


def _settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "jwt_secret": JWT_SECRET,
        "webhook_allowed_networks": "127.0.0.0/8",
        "webhook_retry_schedule": "0.2,0.2,0.2",
        "webhook_timeout_seconds": 2.0,
        "webhook_poll_seconds": 0.05,
    } | overrides
    return Settings(**values)


def _endpoint(
    conn: Conn, settings: Settings, account: int, url: str, events: Sequence[str] = endpoints.EVENTS
) -> tuple[UUID, str]:
    endpoint, secret = endpoints.create_endpoint(
        conn, account, url=url, events=events, description="test", box=SecretBox.from_settings(settings)
    )
    return endpoint.id, secret


def _job(conn: Conn, account: int) -> UUID:
    request = BulkActionRequest(action="add_tags", target=Target(all=True), tags=["hooked"])
    return create_job(conn, account_id=account, created_by=None, request=request).id


def _started_and_cancelled(conn: Conn, account: int) -> UUID:
    """A job that starts (no contacts: no chunks to wait for) and is then cancelled: two events."""
    job_id = _job(conn, account)
    assert plan_next_job(conn, chunk_size=100) == job_id
    cancel_job(conn, account, job_id)
    return job_id


def _deliveries(conn: Conn, endpoint_id: UUID) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT id, event_id, event, job_id, status, attempts, last_status_code, last_error, payload "
        "FROM webhook_deliveries WHERE endpoint_id = %s ORDER BY id",
        (endpoint_id,),
    ).fetchall()
    names = (
        "id",
        "event_id",
        "event",
        "job_id",
        "status",
        "attempts",
        "last_status_code",
        "last_error",
        "payload",
    )
    return [dict(zip(names, row, strict=True)) for row in rows]


@contextmanager
def delivering(settings: Settings, count: int = 1) -> Iterator[list[DelivererCounters]]:
    """`count` deliverers running in threads, as `crm-bulk webhooks` runs one, until the block ends."""
    stop = threading.Event()
    results: list[DelivererCounters] = []
    threads = [
        threading.Thread(target=lambda: results.append(run_deliverer(settings, stop)), name=f"deliverer-{n}")
        for n in range(count)
    ]
    for thread in threads:
        thread.start()
    try:
        yield results
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        assert all(not t.is_alive() for t in threads), "a deliverer did not stop"


def _wait_status(
    conn: Conn, endpoint_id: UUID, status: str, *, count: int, timeout: float
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        rows = _deliveries(conn, endpoint_id)
        if len(rows) >= count and all(r["status"] == status for r in rows):
            return rows
        assert time.monotonic() < deadline, f"deliveries not all {status} in {timeout} s: {rows}"
        time.sleep(0.05)


def _verified(secret: str, request: Received) -> dict[str, Any]:
    """The body, after the reference library verified its signature (it raises otherwise)."""
    body: dict[str, Any] = Webhook(secret).verify(request.body, request.headers)
    return body


class _RollbackError(Exception):
    pass


def test_start_and_end_are_written_in_the_transaction_of_the_change(conn: Conn, hooks_db: str) -> None:
    settings = _settings(hooks_db)
    account = make_account(conn)
    seed_contacts(conn, account, 25)
    every, _ = _endpoint(conn, settings, account, "http://127.0.0.1:9/every")
    only_end, _ = _endpoint(conn, settings, account, "http://127.0.0.1:9/end", ["job.completed"])
    off, _ = _endpoint(conn, settings, account, "http://127.0.0.1:9/off")
    endpoints.update_endpoint(conn, account, off, enabled=False)
    job_id = _job(conn, account)

    # A start that rolls back announces nothing.
    with pytest.raises(_RollbackError), conn.transaction():
        assert plan_next_job(conn, chunk_size=10) == job_id
        raise _RollbackError
    assert get_job(conn, account, job_id).status == "queued"
    assert _deliveries(conn, every) == []

    assert plan_next_job(conn, chunk_size=10) == job_id
    (started,) = _deliveries(conn, every)
    assert (started["event"], started["status"], started["attempts"]) == ("job.started", "pending", 0)
    assert started["event_id"] == event_id_for(job_id, "job.started")
    body = json.loads(started["payload"])
    assert body["type"] == "job.started"
    assert (body["data"]["id"], body["data"]["status"], body["data"]["total"]) == (str(job_id), "running", 25)
    assert _deliveries(conn, only_end) == []

    release_chunks(conn, RecordingPublisher(), window=8)
    for chunk_no in range(3):
        apply_chunk(conn, job_id, chunk_no)
    stamp_outboxes_shipped(conn, job_id)
    assert [f.job_id for f in finish_jobs(conn)] == [job_id]
    events = {d["event"]: d for d in _deliveries(conn, every)}
    assert set(events) == {"job.started", "job.completed"}
    (completed,) = _deliveries(conn, only_end)
    assert (
        completed["event_id"] == events["job.completed"]["event_id"] == event_id_for(job_id, "job.completed")
    )
    data = json.loads(completed["payload"])["data"]
    assert (data["status"], data["succeeded"], data["total"]) == ("completed", 25, 25)
    assert data["finished_at"] is not None
    assert _deliveries(conn, off) == []

    # Writing the event again adds nothing: one event, one row per endpoint, one id.
    job = get_job(conn, account, job_id)
    assert (
        outbox.enqueue_job_event(conn, account_id=account, job_id=job_id, event="job.completed", job=job) == 0
    )


def test_deliveries_are_signed_as_the_specification_says(conn: Conn, hooks_db: str) -> None:
    settings = _settings(hooks_db)
    account = make_account(conn)
    with receiving() as receiver:
        endpoint_id, secret = _endpoint(conn, settings, account, receiver.url("/crm?source=test"))
        job_id = _started_and_cancelled(conn, account)
        with delivering(settings):
            requests = receiver.wait_for(2, timeout=30)
        rows = _wait_status(conn, endpoint_id, "succeeded", count=2, timeout=10)
    by_id = {r["event_id"]: r for r in rows}
    for request in requests:
        assert request.path == "/crm?source=test"
        assert request.headers["content-type"] == "application/json"
        assert abs(int(request.headers["webhook-timestamp"]) - time.time()) < 60
        body = _verified(secret, request)
        row = by_id[request.headers["webhook-id"]]
        assert request.body.decode() == row["payload"]
        assert body["type"] == row["event"]
        assert body["data"]["id"] == str(job_id)
        assert (row["attempts"], row["last_status_code"]) == (1, 200)
    assert sorted(r.headers["webhook-id"] for r in requests) == sorted(
        event_id_for(job_id, e) for e in ("job.started", "job.cancelled")
    )
    types = {json.loads(r.body)["type"]: json.loads(r.body)["data"]["status"] for r in requests}
    assert types == {"job.started": "running", "job.cancelled": "cancelled"}


def test_a_receiver_down_for_30_seconds_gets_the_event_once_it_is_up(conn: Conn, hooks_db: str) -> None:
    # Waits of 1, 2, 4 s, then every 4 s: attempts go on through the outage and past it.
    settings = _settings(hooks_db, webhook_retry_schedule="1,2,4" + ",4" * 12)
    account = make_account(conn)
    port = free_port()
    endpoint_id, secret = _endpoint(conn, settings, account, f"http://127.0.0.1:{port}/hook", ["job.started"])
    job_id = _job(conn, account)
    plan_next_job(conn, chunk_size=100)
    with delivering(settings):
        down_since = time.monotonic()
        time.sleep(OUTAGE_SECONDS)
        (during,) = _deliveries(conn, endpoint_id)
        assert during["status"] == "pending"
        assert during["attempts"] >= 3
        assert "ConnectError" in during["last_error"]
        with receiving(port=port) as receiver:
            (request,) = receiver.wait_for(1, timeout=30)
            (row,) = _wait_status(conn, endpoint_id, "succeeded", count=1, timeout=10)
            time.sleep(0.5)
            assert len(receiver.received) == 1
    assert request.at - down_since >= OUTAGE_SECONDS
    assert request.headers["webhook-id"] == event_id_for(job_id, "job.started") == row["event_id"]
    assert _verified(secret, request)["data"]["id"] == str(job_id)
    assert row["attempts"] > during["attempts"]
    assert row["last_error"] is None


def test_a_5xx_is_retried_under_the_same_id_until_it_succeeds(conn: Conn, hooks_db: str) -> None:
    settings = _settings(hooks_db)
    account = make_account(conn)
    with receiving(Script(answers=[(500, 0.0), (503, 0.0)])) as receiver:
        endpoint_id, secret = _endpoint(conn, settings, account, receiver.url(), ["job.started"])
        job_id = _job(conn, account)
        plan_next_job(conn, chunk_size=100)
        with delivering(settings):
            requests = receiver.wait_for(3, timeout=30)
            (row,) = _wait_status(conn, endpoint_id, "succeeded", count=1, timeout=10)
    assert {r.headers["webhook-id"] for r in requests} == {event_id_for(job_id, "job.started")}
    assert len({r.body for r in requests}) == 1
    for request in requests:
        _verified(secret, request)
    assert (row["attempts"], row["last_status_code"]) == (3, 200)


def test_a_receiver_that_keeps_failing_ends_failed_after_the_schedule(conn: Conn, hooks_db: str) -> None:
    settings = _settings(hooks_db, webhook_retry_schedule="0.1,0.1")
    account = make_account(conn)
    with receiving(Script(default=(502, 0.0))) as receiver:
        endpoint_id, _ = _endpoint(conn, settings, account, receiver.url(), ["job.started"])
        _job(conn, account)
        plan_next_job(conn, chunk_size=100)
        with delivering(settings):
            (row,) = _wait_status(conn, endpoint_id, "failed", count=1, timeout=30)
            time.sleep(0.5)
        assert len(receiver.received) == 3
    assert (row["attempts"], row["last_status_code"], row["last_error"]) == (3, 502, "HTTP 502")


def test_a_redirect_is_a_failed_attempt_and_never_followed(conn: Conn, hooks_db: str) -> None:
    settings = _settings(hooks_db, webhook_retry_schedule="0.1")
    account = make_account(conn)
    with receiving(Script(default=(307, 0.0))) as receiver:
        endpoint_id, _ = _endpoint(conn, settings, account, receiver.url(), ["job.started"])
        _job(conn, account)
        plan_next_job(conn, chunk_size=100)
        with delivering(settings):
            (row,) = _wait_status(conn, endpoint_id, "failed", count=1, timeout=30)
            time.sleep(0.3)
        assert [r.path for r in receiver.received] == ["/hook", "/hook"]
    assert (row["attempts"], row["last_status_code"]) == (2, 307)
    assert "redirects are not followed" in row["last_error"]


def test_a_slow_receiver_is_timed_out_and_retried(conn: Conn, hooks_db: str) -> None:
    settings = _settings(hooks_db, webhook_timeout_seconds=0.5)
    account = make_account(conn)
    with receiving(Script(answers=[(200, 3.0)])) as receiver:
        endpoint_id, secret = _endpoint(conn, settings, account, receiver.url(), ["job.started"])
        job_id = _job(conn, account)
        plan_next_job(conn, chunk_size=100)
        with delivering(settings):
            first = receiver.wait_for(1, timeout=30)[0]
            # The slow answer is still being written when the sender has given up and recorded why.
            deadline = time.monotonic() + 2.0
            while (row := _deliveries(conn, endpoint_id)[0])["last_error"] is None:
                assert time.monotonic() < deadline, row
                time.sleep(0.02)
            assert row["last_error"].startswith("timed out after 0.5 s")
            assert row["status"] == "pending"
            second = receiver.wait_for(2, timeout=30)[1]
            (done,) = _wait_status(conn, endpoint_id, "succeeded", count=1, timeout=10)
    assert second.at - first.at < 3.0  # retried before the slow answer would have come
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == event_id_for(job_id, "job.started")
    _verified(secret, second)
    assert (done["attempts"], done["last_status_code"]) == (2, 200)


def test_two_deliverers_never_send_an_event_under_two_ids(conn: Conn, hooks_db: str) -> None:
    settings = _settings(hooks_db, webhook_concurrency=4)
    account = make_account(conn)
    jobs = 15
    # Answers take 0.1 s, so neither deliverer can empty the outbox before the other has started.
    with receiving(Script(default=(200, 0.1))) as receiver:
        a, secret_a = _endpoint(conn, settings, account, receiver.url("/a"))
        b, secret_b = _endpoint(conn, settings, account, receiver.url("/b"))
        job_ids = [_started_and_cancelled(conn, account) for _ in range(jobs)]
        with delivering(settings, count=2) as counters:
            requests = receiver.wait_for(4 * jobs, timeout=60)
            _wait_status(conn, a, "succeeded", count=2 * jobs, timeout=10)
            _wait_status(conn, b, "succeeded", count=2 * jobs, timeout=10)
            time.sleep(0.5)
            assert len(receiver.received) == 4 * jobs
    assert sum(c.delivered for c in counters) == 4 * jobs
    assert all(c.attempts > 0 for c in counters), counters  # both took part
    ids_of_event: dict[tuple[str, str], set[str]] = defaultdict(set)
    per_endpoint: dict[str, list[str]] = defaultdict(list)
    for request in requests:
        body = _verified(secret_a if request.path == "/a" else secret_b, request)
        ids_of_event[(body["data"]["id"], body["type"])].add(request.headers["webhook-id"])
        per_endpoint[request.path].append(request.headers["webhook-id"])
    assert len(ids_of_event) == 2 * jobs
    assert all(len(ids) == 1 for ids in ids_of_event.values())
    assert {job for job, _ in ids_of_event} == {str(j) for j in job_ids}
    for path in ("/a", "/b"):
        assert len(per_endpoint[path]) == len(set(per_endpoint[path])) == 2 * jobs


def _resolver(answers: dict[str, list[str]]) -> Any:
    def resolve(host: str, port: int) -> list[IPAddress]:
        return [ipaddress.ip_address(a) for a in answers[host]]

    return resolve


def test_the_attempt_connects_to_the_checked_address_and_refuses_a_rebound_name(
    conn: Conn, hooks_db: str
) -> None:
    settings = _settings(hooks_db)
    account = make_account(conn)
    box = SecretBox.from_settings(settings)
    answers = {"hooks.example.test": ["127.0.0.1"]}
    policy = AddressPolicy(allowed=settings.webhook_allowed_network_list(), resolver=_resolver(answers))
    sender = WebhookSender(policy=policy, box=box, timeout_seconds=2.0)
    with receiving() as receiver:
        url = f"http://hooks.example.test:{receiver.port}/in"
        endpoint_id, secret = _endpoint(conn, settings, account, url, ["job.started", "job.cancelled"])
        _started_and_cancelled(conn, account)
        first, second = sorted(claim_due(conn, limit=10, lease_seconds=30), key=lambda d: d.id)
        result = sender.attempt(first)
        assert result.ok, result
        (request,) = receiver.received
        # Connected to 127.0.0.1, the address checked; the receiver still sees the URL's host name.
        assert request.headers["host"] == f"hooks.example.test:{receiver.port}"
        _verified(secret, request)
        # The name now resolves to the metadata address: refused without a connection.
        answers["hooks.example.test"] = ["127.0.0.1", "169.254.169.254"]
        refused = sender.attempt(second)
        assert not refused.ok
        assert (
            refused.error is not None
            and "169.254.169.254, a link-local (cloud metadata) address" in refused.error
        )
        assert len(receiver.received) == 1
    sender.close()
    assert endpoint_id


def test_redelivery_sends_the_same_body_under_the_same_id_and_410_disables(conn: Conn, hooks_db: str) -> None:
    settings = _settings(hooks_db)
    account = make_account(conn)
    with receiving(Script(answers=[(200, 0.0), (410, 0.0)])) as receiver:
        endpoint_id, secret = _endpoint(conn, settings, account, receiver.url(), ["job.started"])
        _job(conn, account)
        plan_next_job(conn, chunk_size=100)
        with delivering(settings):
            receiver.wait_for(1, timeout=30)
            (row,) = _wait_status(conn, endpoint_id, "succeeded", count=1, timeout=10)
            again = outbox.redeliver(conn, account, endpoint_id, row["id"])
            assert (again.status, again.event_id) == ("pending", row["event_id"])
            first, second = receiver.wait_for(2, timeout=30)
            (gone,) = _wait_status(conn, endpoint_id, "failed", count=1, timeout=10)
    assert first.body == second.body
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == row["event_id"]
    _verified(secret, second)
    assert (gone["attempts"], gone["last_status_code"]) == (2, 410)
    assert endpoints.get_endpoint(conn, account, endpoint_id).enabled is False
    with pytest.raises(Exception, match="disabled"):
        outbox.redeliver(conn, account, endpoint_id, row["id"])


def test_a_lapsed_claim_is_delivered_by_another_deliverer_and_its_late_answer_dropped(
    conn: Conn, hooks_db: str
) -> None:
    settings = _settings(hooks_db)
    account = make_account(conn)
    with receiving() as receiver:
        endpoint_id, secret = _endpoint(conn, settings, account, receiver.url(), ["job.started"])
        job_id = _job(conn, account)
        plan_next_job(conn, chunk_size=100)
        # A deliverer claims the delivery for 1 s and dies before it answers.
        (abandoned,) = claim_due(conn, limit=10, lease_seconds=1.0)
        assert claim_due(conn, limit=10, lease_seconds=1.0) == []  # held while the lease lasts
        with delivering(settings):
            (request,) = receiver.wait_for(1, timeout=30)
            (row,) = _wait_status(conn, endpoint_id, "succeeded", count=1, timeout=10)
    assert request.headers["webhook-id"] == abandoned.event_id == event_id_for(job_id, "job.started")
    _verified(secret, request)
    assert row["attempts"] == 2
    # The dead deliverer's answer, arriving late, changes nothing.
    record_attempt(
        conn, abandoned, AttemptResult(ok=False, status_code=500, error="HTTP 500"), RetrySchedule((1.0,))
    )
    (after,) = _deliveries(conn, endpoint_id)
    assert (after["status"], after["last_status_code"], after["attempts"]) == ("succeeded", 200, 2)


def test_the_webhooks_command_delivers_and_stops_on_sigterm(conn: Conn, hooks_db: str) -> None:
    settings = _settings(hooks_db)
    account = make_account(conn)
    with receiving() as receiver:
        endpoint_id, secret = _endpoint(conn, settings, account, receiver.url(), ["job.started"])
        job_id = _job(conn, account)
        plan_next_job(conn, chunk_size=100)
        process = subprocess.Popen(
            [sys.executable, "-m", "crm_bulk.cli", "webhooks"],
            env=settings_env(settings),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            (request,) = receiver.wait_for(1, timeout=60)
            _wait_status(conn, endpoint_id, "succeeded", count=1, timeout=10)
        finally:
            process.send_signal(signal.SIGTERM)
            output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output.decode()
    assert request.headers["webhook-id"] == event_id_for(job_id, "job.started")
    _verified(secret, request)
    assert secret not in output.decode()


def _certificate(name: str, directory: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A self-signed certificate for `name`: the receiver's TLS context and a client context trusting it."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    (directory / "cert.pem").write_bytes(cert_pem)
    (directory / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(directory / "cert.pem", directory / "key.pem")
    client = ssl.create_default_context(cadata=cert_pem.decode())
    return server, client


@pytest.mark.parametrize("certified", ["hooks.example.test", "other.example.test"])
def test_https_connects_to_the_checked_address_and_verifies_the_urls_host(
    conn: Conn, hooks_db: str, tmp_path: Path, certified: str
) -> None:
    settings = _settings(hooks_db)
    account = make_account(conn)
    server_tls, client_tls = _certificate(certified, tmp_path)
    policy = AddressPolicy(
        allowed=settings.webhook_allowed_network_list(),
        resolver=_resolver({"hooks.example.test": ["127.0.0.1"]}),
    )
    sender = WebhookSender(
        policy=policy, box=SecretBox.from_settings(settings), timeout_seconds=2.0, verify=client_tls
    )
    with receiving(tls=server_tls) as receiver:
        url = f"https://hooks.example.test:{receiver.port}/in"
        _, secret = _endpoint(conn, settings, account, url, ["job.started"])
        _job(conn, account)
        plan_next_job(conn, chunk_size=100)
        (claimed,) = claim_due(conn, limit=10, lease_seconds=30)
        result = sender.attempt(claimed)
        time.sleep(0.2)
        received = list(receiver.received)
    sender.close()
    if certified == "hooks.example.test":
        assert result.ok, result
        (request,) = received
        assert request.headers["host"] == f"hooks.example.test:{receiver.port}"
        _verified(secret, request)
    else:
        # The certificate names another host: refused, though the address is the checked one.
        assert not result.ok
        assert result.error is not None and "certificate" in result.error.lower()
        assert received == []


def test_finished_deliveries_past_retention_leave_the_log_and_pending_ones_stay(
    conn: Conn, hooks_db: str
) -> None:
    settings = _settings(hooks_db)
    account = make_account(conn)
    endpoint_id, _ = _endpoint(conn, settings, account, "http://127.0.0.1:9/old")
    for _ in range(3):
        _started_and_cancelled(conn, account)
    rows = _deliveries(conn, endpoint_id)
    old_done, old_failed, old_pending, recent_done = (r["id"] for r in rows[:4])
    conn.execute(
        "UPDATE webhook_deliveries SET status = 'succeeded', delivered_at = now() - interval '31 days' "
        "WHERE id = %s",
        (old_done,),
    )
    conn.execute(
        "UPDATE webhook_deliveries SET status = 'failed', last_attempt_at = now() - interval '31 days' "
        "WHERE id = %s",
        (old_failed,),
    )
    conn.execute(
        "UPDATE webhook_deliveries SET created_at = now() - interval '90 days' WHERE id = %s", (old_pending,)
    )
    conn.execute(
        "UPDATE webhook_deliveries SET status = 'succeeded', delivered_at = now() - interval '29 days' "
        "WHERE id = %s",
        (recent_done,),
    )
    assert prune_delivery_log(conn, older_than_days=30, batch=1) == 2
    left = {r["id"] for r in _deliveries(conn, endpoint_id)}
    assert left == {r["id"] for r in rows} - {old_done, old_failed}
    assert prune_delivery_log(conn, older_than_days=30) == 0
