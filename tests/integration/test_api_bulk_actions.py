"""Bulk actions over HTTP against real PostgreSQL and chDB: create (JSON and streamed uploads), idempotency,
listing, progress, stats, logs, errors (JSON and CSV), cancel; roles and tenancy.

Jobs are carried through planning, applying and log shipping by calling the pipeline's own functions
(`plan_job`, `apply_chunk`, `finish_jobs`, `ship_outcomes`), which is what the scheduler and workers run.
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from crm_bulk.apply.engine import apply_chunk
from crm_bulk.entitylog.shipper import ship_outcomes
from crm_bulk.jobs.lifecycle import finish_jobs, start_planned_jobs
from crm_bulk.planner import plan_job
from tests.integration.api_support import (
    Tenant,
    assert_problem,
    end_open_jobs,
    make_settings,
    make_tenant,
    newest_account_id,
    running_client,
    unique_email,
)

pytestmark = [pytest.mark.postgres, pytest.mark.clickhouse]

CHUNK_SIZE = 1000


@pytest.fixture(scope="module")
def client(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient[Litestar]]:
    settings = make_settings(tmp_path_factory.mktemp("api-bulk"), chunk_size=CHUNK_SIZE)
    yield from running_client(settings, database_url)


@pytest.fixture(scope="module", autouse=True)
def no_jobs_left_behind(database_url: str) -> Iterator[None]:
    """Jobs this module leaves unfinished are cancelled at its end (the database is shared by the session)."""
    before = newest_account_id(database_url)
    yield
    end_open_jobs(database_url, before)


@pytest.fixture(scope="module")
def tenant(client: TestClient[Litestar]) -> Tenant:
    return make_tenant(client)


@pytest.fixture(scope="module")
def other(client: TestClient[Litestar]) -> Tenant:
    return make_tenant(client, "Globex")


def drive(client: TestClient[Litestar], database_url: str, *job_ids: str) -> None:
    """Plan, start, apply every chunk, ship the outcomes and finish these jobs (a job ends once its log is
    complete)."""
    ids = [UUID(j) for j in job_ids]
    store = client.app.state.resources.store
    with psycopg.connect(database_url, autocommit=True) as conn:
        for job_id in ids:
            plan_job(conn, job_id, chunk_size=CHUNK_SIZE)
        start_planned_jobs(conn)
        chunks = conn.execute(
            "SELECT job_id, chunk_no FROM bulk_action_chunks WHERE job_id = ANY(%s) AND state IN ('pending', "
            "'released') ORDER BY job_id, chunk_no",
            [ids],
        ).fetchall()
        for job_id, chunk_no in chunks:
            apply_chunk(conn, job_id, chunk_no, worker="test")
        while ship_outcomes(conn, store):
            pass
        finish_jobs(conn)


def _contacts(client: TestClient[Litestar], tenant: Tenant, n: int, **fields: Any) -> list[int]:
    ids = []
    for _ in range(n):
        answer = client.post("/contacts", json={"email": unique_email("c")} | fields, headers=tenant.editor)
        assert answer.status_code == 201, answer.text
        ids.append(answer.json()["id"])
    return ids


def _create(
    client: TestClient[Litestar], tenant: Tenant, body: dict[str, Any], **headers: str
) -> dict[str, Any]:
    answer = client.post("/bulk-actions", json=body, headers=tenant.editor | headers)
    assert answer.status_code == 202, answer.text
    job: dict[str, Any] = answer.json()
    return job


def test_create_answers_202_with_a_queued_job(client: TestClient[Litestar], tenant: Tenant) -> None:
    job = _create(client, tenant, {"action": "add_tags", "target": {"all": True}, "tags": ["vip"]})
    assert job["status"] == "queued"
    assert job["action"] == "add_tags"
    assert (job["total"], job["succeeded"], job["failed"], job["skipped"], job["cancelled"]) == (
        0,
        0,
        0,
        0,
        0,
    )
    assert job["progress"] == 0.0
    assert job["created_by"] == tenant.user_ids["editor"]
    assert client.get(f"/bulk-actions/{job['id']}", headers=tenant.viewer).json()["id"] == job["id"]


def test_a_future_job_waits_as_scheduled(client: TestClient[Litestar], tenant: Tenant) -> None:
    when = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    job = _create(client, tenant, {"action": "delete", "target": {"ids": [1]}, "scheduled_for": when})
    assert job["status"] == "scheduled"
    assert datetime.fromisoformat(job["scheduled_for"]) == datetime.fromisoformat(when)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"action": "explode", "target": {"all": True}}, "action"),
        ({"action": "delete"}, "target"),
        ({"action": "delete", "target": {"ids": [1], "all": True}}, "target"),
        ({"action": "update", "target": {"all": True}}, "changes"),
        (
            {
                "action": "update",
                "target": {"filter": {"nickname": {"eq": "x"}}},
                "changes": {"set": {"company": "X"}},
            },
            "target.filter.nickname",
        ),
        ({"action": "add_tags", "target": {"all": True}}, "tags"),
        (
            {"action": "delete", "target": {"all": True}, "scheduled_for": "2020-01-01T00:00:00Z"},
            "scheduled_for",
        ),
        ({"action": "import", "records": []}, "records"),
        ({"action": "delete", "target": {"ids": ["a"]}}, "target.ids"),
    ],
)
def test_invalid_requests_answer_422(
    client: TestClient[Litestar], tenant: Tenant, body: dict[str, Any], field: str
) -> None:
    problem = assert_problem(client.post("/bulk-actions", json=body, headers=tenant.editor), 422)
    assert problem["errors"][0]["field"].startswith(field)


def test_idempotency_key_returns_the_same_job(
    client: TestClient[Litestar], tenant: Tenant, other: Tenant
) -> None:
    key = uuid.uuid4().hex
    body = {"action": "add_tags", "target": {"ids": [3, 1, 2]}, "tags": ["a"]}
    first = _create(client, tenant, body, **{"Idempotency-Key": key})
    again = _create(client, tenant, body, **{"Idempotency-Key": key})
    assert again["id"] == first["id"]
    changed = client.post(
        "/bulk-actions", json=body | {"tags": ["b"]}, headers=tenant.editor | {"Idempotency-Key": key}
    )
    assert assert_problem(changed, 409)["existing_id"] == first["id"]
    theirs = _create(client, other, body, **{"Idempotency-Key": key})
    assert theirs["id"] != first["id"]
    fresh = _create(client, tenant, body)
    assert fresh["id"] != first["id"]


def test_list_is_newest_first_paged_and_filtered(client: TestClient[Litestar]) -> None:
    own = make_tenant(client, "Lister")
    made = [_create(client, own, {"action": "delete", "target": {"ids": [i + 1]}})["id"] for i in range(5)]
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = client.get("/bulk-actions", params=params, headers=own.viewer).json()
        seen += [j["id"] for j in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == made[::-1]
    queued = client.get("/bulk-actions?status=queued", headers=own.viewer).json()["items"]
    assert len(queued) == 5
    assert client.get("/bulk-actions?status=completed", headers=own.viewer).json()["items"] == []


@pytest.mark.parametrize("query", ["status=exploded", "limit=0", "limit=201", "cursor=%25%25"])
def test_list_rejects_bad_parameters(client: TestClient[Litestar], tenant: Tenant, query: str) -> None:
    assert_problem(client.get(f"/bulk-actions?{query}", headers=tenant.viewer), 422)


def test_an_update_by_filter_runs_to_completion_with_stats_logs_and_errors(
    client: TestClient[Litestar], database_url: str
) -> None:
    own = make_tenant(client, "Pipeline")
    acme = _contacts(client, own, 4, company="Acme")
    _contacts(client, own, 2, company="Other")
    job = _create(
        client,
        own,
        {
            "action": "update",
            "target": {"filter": {"company": {"eq": "Acme"}}},
            "changes": {"set": {"company": "Acme Inc"}, "custom_fields": {"plan": "gold"}},
        },
    )
    tagged = _create(
        client, own, {"action": "add_tags", "target": {"ids": [*acme[:2], 999_999_999]}, "tags": ["vip"]}
    )
    drive(client, database_url, job["id"], tagged["id"])

    done = client.get(f"/bulk-actions/{job['id']}", headers=own.viewer).json()
    assert done["status"] == "completed"
    assert (done["total"], done["succeeded"], done["failed"], done["skipped"]) == (4, 4, 0, 0)
    assert done["progress"] == 1.0 and done["eta_seconds"] == 0.0
    assert done["started_at"] and done["finished_at"]
    contact = client.get(f"/contacts/{acme[0]}", headers=own.viewer).json()
    assert contact["company"] == "Acme Inc" and contact["custom_fields"] == {"plan": "gold"}

    second = client.get(f"/bulk-actions/{tagged['id']}", headers=own.viewer).json()
    assert (second["total"], second["succeeded"], second["skipped"]) == (3, 2, 1)
    assert second["total"] == second["succeeded"] + second["failed"] + second["skipped"] + second["cancelled"]

    stats = client.get(f"/bulk-actions/{tagged['id']}/stats", headers=own.viewer).json()
    assert stats["outcomes"]["succeeded"] == 2 and stats["outcomes"]["skipped"] == 1
    assert stats["skipped_by_reason"] == {"not_found": 1}
    assert stats["errors_by_code"] == {}
    assert sum(p["entities"] for p in stats["throughput"]) == 3
    assert stats["chunk_latency_ms"]["p50"] is not None

    logs = client.get(f"/bulk-actions/{tagged['id']}/logs?limit=2", headers=own.viewer).json()
    assert len(logs["items"]) == 2 and logs["next_cursor"]
    rest = client.get(
        f"/bulk-actions/{tagged['id']}/logs", params={"cursor": logs["next_cursor"]}, headers=own.viewer
    )
    assert len(rest.json()["items"]) == 1 and rest.json()["next_cursor"] is None
    skipped = client.get(f"/bulk-actions/{tagged['id']}/logs?outcome=skipped", headers=own.viewer).json()[
        "items"
    ]
    assert [(i["entity_id"], i["code"]) for i in skipped] == [(999_999_999, "not_found")]
    one = client.get(f"/bulk-actions/{tagged['id']}/logs?entity_id={acme[0]}", headers=own.viewer).json()[
        "items"
    ]
    assert [(i["entity_id"], i["outcome"]) for i in one] == [(acme[0], "succeeded")]

    errors = client.get(f"/bulk-actions/{tagged['id']}/errors", headers=own.viewer).json()
    assert errors["summary"] == {"not_found": 1}
    assert [i["entity_id"] for i in errors["items"]] == [999_999_999]
    as_csv = client.get(f"/bulk-actions/{tagged['id']}/errors", headers=own.viewer | {"Accept": "text/csv"})
    assert as_csv.status_code == 200
    assert as_csv.headers["content-type"].startswith("text/csv")
    assert "attachment" in as_csv.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert [(r["entity_id"], r["outcome"], r["code"]) for r in rows] == [
        ("999999999", "skipped", "not_found")
    ]


def test_an_inline_import_reports_invalid_and_duplicate_rows(
    client: TestClient[Litestar], database_url: str
) -> None:
    own = make_tenant(client, "Importer")
    email = unique_email("dup")
    records = [
        {"email": email},
        {"email": email.upper()},
        {"email": "not-an-email"},
        {"email": unique_email()},
    ]
    job = _create(client, own, {"action": "import", "records": records})
    drive(client, database_url, job["id"])
    done = client.get(f"/bulk-actions/{job['id']}", headers=own.viewer).json()
    assert done["status"] == "completed_with_errors"
    assert (done["total"], done["succeeded"], done["failed"], done["skipped"]) == (4, 2, 1, 1)
    errors = client.get(f"/bulk-actions/{job['id']}/errors", headers=own.viewer).json()
    assert errors["summary"] == {"invalid_email": 1, "duplicate_in_input": 1}
    empty_csv = client.get(
        f"/bulk-actions/{job['id']}/errors", headers=own.viewer | {"Accept": "text/csv"}
    ).text
    assert empty_csv.splitlines()[0] == "entity_id,email,outcome,code,message,at"
    assert len(empty_csv.splitlines()) == 3


def _csv_upload(n: int, *, bad_every: int = 0) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["email", "first_name", "company", "tags", "custom_fields.plan", "custom_fields.note"])
    run = uuid.uuid4().hex[:8]
    for i in range(n):
        email = f"bad-{i}.example.com" if bad_every and i % bad_every == 0 else f"u{i}-{run}@example.com"
        note = 'line one\nline two, with "quotes"' if i % 7 == 0 else ""
        writer.writerow([email, f"N{i}", "Acme", "vip; beta" if i % 2 else "", "gold" if i % 3 else "", note])
    return out.getvalue().encode()


def test_a_streamed_csv_import_is_chunked_and_completes_with_exact_counts(
    client: TestClient[Litestar], database_url: str
) -> None:
    own = make_tenant(client, "Uploader")
    n = 2_345
    body = _csv_upload(n, bad_every=100)
    answer = client.post(
        "/bulk-actions/import?on_duplicate=skip",
        content=body,
        headers=own.editor | {"Content-Type": "text/csv"},
    )
    assert answer.status_code == 202, answer.text
    job = answer.json()
    assert job["action"] == "import" and job["status"] == "queued" and job["total"] == n
    with psycopg.connect(database_url) as conn:
        counts = conn.execute(
            "SELECT count(*), sum(entity_count), bool_and(planned) FROM bulk_action_chunks c "
            "JOIN bulk_actions j ON j.id = c.job_id WHERE c.job_id = %s",
            [job["id"]],
        ).fetchone()
    assert counts == (3, n, True)
    drive(client, database_url, job["id"])
    done = client.get(f"/bulk-actions/{job['id']}", headers=own.viewer).json()
    bad = len(range(0, n, 100))
    assert (done["status"], done["total"], done["succeeded"], done["failed"]) == (
        "completed_with_errors",
        n,
        n - bad,
        bad,
    )
    listed = client.get("/contacts?limit=1000&tags.contains=vip", headers=own.viewer).json()["items"]
    sample = next(c for c in listed if c["first_name"] == "N7")
    assert sample["tags"] == ["beta", "vip"]
    assert sample["custom_fields"] == {"plan": "gold", "note": 'line one\nline two, with "quotes"'}


def test_a_streamed_ndjson_import(client: TestClient[Litestar], database_url: str) -> None:
    own = make_tenant(client, "Ndjson")
    lines = [
        json.dumps({"email": unique_email(), "tags": ["a"], "custom_fields": {"n": i, "deep": {"x": [i]}}})
        for i in range(30)
    ]
    body = ("\n".join(lines) + "\n\n").encode()
    answer = client.post(
        "/bulk-actions/import", content=body, headers=own.editor | {"Content-Type": "application/x-ndjson"}
    )
    assert answer.status_code == 202, answer.text
    drive(client, database_url, answer.json()["id"])
    done = client.get(f"/bulk-actions/{answer.json()['id']}", headers=own.viewer).json()
    assert (done["status"], done["total"], done["succeeded"]) == ("completed", 30, 30)
    items = client.get("/contacts?custom_fields.n.gte=29", headers=own.viewer).json()["items"]
    assert [i["custom_fields"] for i in items] == [{"n": 29, "deep": {"x": [29]}}]


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b"email,first_name\na@example.com,A\n", "application/pdf", 415),
        (b"email,first_name\na@example.com,A\n", "", 415),
        (b"", "text/csv", 422),
        (b"email,first_name\n", "text/csv", 422),
        (b"first_name\nAda\n", "text/csv", 422),
        (b"email,first_name\na@example.com\n", "text/csv", 422),
        (b"email,first_name\na@example.com,A,extra,fields\n", "text/csv", 422),
        (b"email,first_name\n\xff\xfe,\x00\n", "text/csv", 422),
        (b'email,first_name\n"a@example.com,A\n', "text/csv", 422),
        (b'{"email": "a@example.com"\n', "application/x-ndjson", 422),
        (b'{"email": "a@example.com", "nickname": "A"}\n', "application/x-ndjson", 422),
        (b"[1, 2]\n", "application/x-ndjson", 422),
        (b'{"email": "a@example.com", "tags": "vip"}\n', "application/x-ndjson", 422),
    ],
)
def test_malformed_uploads_answer_4xx_and_leave_nothing(
    client: TestClient[Litestar], database_url: str, body: bytes, content_type: str, status: int
) -> None:
    own = make_tenant(client, "BadUploads")
    headers = own.editor | ({"Content-Type": content_type} if content_type else {})
    assert_problem(client.post("/bulk-actions/import", content=body, headers=headers), status)
    assert client.get("/bulk-actions", headers=own.viewer).json()["items"] == []


def test_an_upload_over_the_size_limit_answers_413_and_leaves_nothing(
    database_url: str, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, max_upload_bytes=2_000)
    for client in running_client(settings, database_url):
        own = make_tenant(client, "Oversized")
        body = _csv_upload(100, bad_every=1000)
        assert len(body) > 2_000
        headers = own.editor | {"Content-Type": "text/csv"}
        # Declared length over the limit: refused before reading; streamed without one: refused when crossed.
        assert_problem(client.post("/bulk-actions/import", content=body, headers=headers), 413)
        chunked = client.post(
            "/bulk-actions/import", content=iter([body[:1500], body[1500:]]), headers=headers
        )
        assert_problem(chunked, 413)
        assert "2000 bytes" in chunked.json()["detail"]
        assert client.get("/bulk-actions", headers=own.viewer).json()["items"] == []
        small = client.post("/bulk-actions/import", content=_csv_upload(5, bad_every=1000), headers=headers)
        assert small.status_code == 202, small.text


def test_an_upload_repeated_with_its_idempotency_key_answers_the_same_job(
    client: TestClient[Litestar], database_url: str
) -> None:
    own = make_tenant(client, "Retrier")
    body = _csv_upload(30, bad_every=1000)
    headers = own.editor | {"Content-Type": "text/csv", "Idempotency-Key": "upload-1"}
    first = client.post("/bulk-actions/import", content=body, headers=headers)
    assert first.status_code == 202, first.text
    again = client.post("/bulk-actions/import", content=iter([body[:100], body[100:]]), headers=headers)
    assert again.status_code == 202, again.text
    assert again.json()["id"] == first.json()["id"]
    with psycopg.connect(database_url) as conn:
        chunks = conn.execute(
            "SELECT count(*) FROM bulk_action_chunks WHERE job_id = %s", [first.json()["id"]]
        ).fetchone()
    assert chunks == (1,)
    # Another body, or other parameters, under the same key: 409 naming the job that holds it.
    other = client.post("/bulk-actions/import", content=_csv_upload(3, bad_every=1000), headers=headers)
    assert_problem(other, 409)
    assert other.json()["existing_id"] == first.json()["id"]
    skip = client.post("/bulk-actions/import?on_duplicate=update", content=body, headers=headers)
    assert_problem(skip, 409)
    # A JSON request with the key another upload holds is another request too.
    held = client.post(
        "/bulk-actions",
        json={"action": "delete", "target": {"ids": [1]}},
        headers=own.editor | {"Idempotency-Key": "upload-1"},
    )
    assert_problem(held, 409)
    listed = client.get("/bulk-actions", headers=own.viewer).json()["items"]
    assert [j["id"] for j in listed] == [first.json()["id"]]


def test_a_failed_upload_leaves_its_idempotency_key_free(client: TestClient[Litestar]) -> None:
    own = make_tenant(client, "Retried")
    headers = own.editor | {"Content-Type": "text/csv", "Idempotency-Key": "after-a-failure"}
    broken = client.post(
        "/bulk-actions/import?unknown_columns=reject",
        content=b"email,nickname\na@example.com,A\n",
        headers=headers,
    )
    assert_problem(broken, 422)
    fixed = client.post("/bulk-actions/import", content=_csv_upload(4, bad_every=1000), headers=headers)
    assert fixed.status_code == 202, fixed.text
    assert fixed.json()["total"] == 4


def test_cancel_stops_a_job_and_a_second_cancel_conflicts(
    client: TestClient[Litestar], database_url: str
) -> None:
    own = make_tenant(client, "Canceller")
    ids = _contacts(client, own, 3)
    job = _create(client, own, {"action": "add_tags", "target": {"ids": ids}, "tags": ["x"]})
    with psycopg.connect(database_url, autocommit=True) as conn:
        plan_job(conn, UUID(job["id"]), chunk_size=CHUNK_SIZE)
    cancelled = client.post(f"/bulk-actions/{job['id']}/cancel", headers=own.editor)
    assert cancelled.status_code == 200
    body = cancelled.json()
    assert body["status"] == "cancelled"
    assert (body["total"], body["cancelled"], body["succeeded"]) == (3, 3, 0)
    assert_problem(client.post(f"/bulk-actions/{job['id']}/cancel", headers=own.editor), 409)


def test_viewers_cannot_create_upload_or_cancel(client: TestClient[Litestar], tenant: Tenant) -> None:
    job = _create(client, tenant, {"action": "delete", "target": {"ids": [1]}})
    assert_problem(
        client.post(
            "/bulk-actions", json={"action": "delete", "target": {"ids": [1]}}, headers=tenant.viewer
        ),
        403,
    )
    upload = client.post(
        "/bulk-actions/import",
        content=b"email\na@example.com\n",
        headers=tenant.viewer | {"Content-Type": "text/csv"},
    )
    assert_problem(upload, 403)
    assert_problem(client.post(f"/bulk-actions/{job['id']}/cancel", headers=tenant.viewer), 403)
    assert client.get(f"/bulk-actions/{job['id']}", headers=tenant.viewer).json()["status"] == "queued"


@pytest.mark.parametrize(
    ("method", "suffix"),
    [("GET", ""), ("GET", "/stats"), ("GET", "/logs"), ("GET", "/errors"), ("POST", "/cancel")],
)
def test_another_accounts_job_answers_404(
    client: TestClient[Litestar], tenant: Tenant, other: Tenant, method: str, suffix: str
) -> None:
    theirs = _create(client, other, {"action": "delete", "target": {"ids": [1]}})
    assert_problem(client.request(method, f"/bulk-actions/{theirs['id']}{suffix}", headers=tenant.admin), 404)
    assert_problem(client.request(method, f"/bulk-actions/{uuid.uuid4()}{suffix}", headers=tenant.admin), 404)
    assert client.get(f"/bulk-actions/{theirs['id']}", headers=other.viewer).json()["status"] == "queued"


@pytest.mark.parametrize("path", ["/bulk-actions/not-a-uuid", "/bulk-actions/123/stats"])
def test_malformed_job_ids_answer_404(client: TestClient[Litestar], tenant: Tenant, path: str) -> None:
    assert_problem(client.get(path, headers=tenant.viewer), 404)


@pytest.mark.parametrize(
    "query", ["outcome=exploded", "limit=0", "limit=1001", "entity_id=0", "cursor=bm9wZQ"]
)
def test_logs_reject_bad_parameters(client: TestClient[Litestar], tenant: Tenant, query: str) -> None:
    job = _create(client, tenant, {"action": "delete", "target": {"ids": [1]}})
    assert_problem(client.get(f"/bulk-actions/{job['id']}/logs?{query}", headers=tenant.viewer), 422)


@pytest.mark.parametrize("key", ["a\u0000b", "x" * 201])
def test_unusable_idempotency_keys_answer_422(client: TestClient[Litestar], tenant: Tenant, key: str) -> None:
    body = {"action": "delete", "target": {"ids": [1]}}
    answer = client.post("/bulk-actions", json=body, headers=tenant.editor | {"Idempotency-Key": key})
    assert_problem(answer, 422)
