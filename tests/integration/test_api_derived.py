"""Jobs derived from jobs over HTTP (real PostgreSQL and chDB): dry runs (JSON and streamed imports), their
preview and promotion, reverts; roles, tenancy, 409s, problem+json. Jobs are driven with the pipeline's own
functions, as in test_api_bulk_actions."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
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
CHUNK_SIZE = 100


@pytest.fixture(scope="module")
def client(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient[Litestar]]:
    settings = make_settings(tmp_path_factory.mktemp("api-derived"), chunk_size=CHUNK_SIZE)
    yield from running_client(settings, database_url)


@pytest.fixture(scope="module", autouse=True)
def no_jobs_left_behind(database_url: str) -> Iterator[None]:
    before = newest_account_id(database_url)
    yield
    end_open_jobs(database_url, before)


@pytest.fixture(scope="module")
def tenant(client: TestClient[Litestar]) -> Tenant:
    return make_tenant(client, "Derived")


@pytest.fixture(scope="module")
def other(client: TestClient[Litestar]) -> Tenant:
    return make_tenant(client, "Elsewhere")


def _drive(client: TestClient[Litestar], database_url: str, job_id: str) -> None:
    """Plan, start, apply, ship and finish one job (planning a derived job, planned already, is a no-op)."""
    store = client.app.state.resources.store
    with psycopg.connect(database_url, autocommit=True) as conn:
        plan_job(conn, UUID(job_id), chunk_size=CHUNK_SIZE)
        start_planned_jobs(conn)
        chunks = conn.execute(
            "SELECT chunk_no FROM bulk_action_chunks WHERE job_id = %s AND state IN ('pending', 'released')",
            [job_id],
        ).fetchall()
        for (chunk_no,) in chunks:
            apply_chunk(conn, UUID(job_id), chunk_no, worker="test")
        while ship_outcomes(conn, store):
            pass
        finish_jobs(conn)


def _job(client: TestClient[Litestar], tenant: Tenant, job_id: str) -> dict[str, Any]:
    answer = client.get(f"/bulk-actions/{job_id}", headers=tenant.viewer)
    assert answer.status_code == 200, answer.text
    job: dict[str, Any] = answer.json()
    return job


def _contacts(client: TestClient[Litestar], tenant: Tenant, n: int, **fields: Any) -> list[int]:
    ids = []
    for _ in range(n):
        answer = client.post("/contacts", json={"email": unique_email("d")} | fields, headers=tenant.editor)
        assert answer.status_code == 201, answer.text
        ids.append(answer.json()["id"])
    return ids


def _create(client: TestClient[Litestar], tenant: Tenant, body: dict[str, Any]) -> dict[str, Any]:
    answer = client.post("/bulk-actions", json=body, headers=tenant.editor)
    assert answer.status_code == 202, answer.text
    job: dict[str, Any] = answer.json()
    return job


def _companies(client: TestClient[Litestar], tenant: Tenant, ids: list[int]) -> list[str | None]:
    return [client.get(f"/contacts/{i}", headers=tenant.viewer).json()["company"] for i in ids]


def test_a_dry_run_previews_then_runs_for_real_and_is_reverted(
    client: TestClient[Litestar], database_url: str, tenant: Tenant
) -> None:
    ids = _contacts(client, tenant, 3, company="Old")
    body = {"action": "update", "target": {"ids": ids}, "changes": {"set": {"company": "New"}}}
    dry = _create(client, tenant, {**body, "dry_run": True})
    assert dry["dry_run"] is True and dry["source_id"] is None
    _drive(client, database_url, dry["id"])
    finished = _job(client, tenant, dry["id"])
    assert (finished["status"], finished["succeeded"]) == ("completed", 3)
    assert _companies(client, tenant, ids) == ["Old", "Old", "Old"]

    preview = client.get(f"/bulk-actions/{dry['id']}/preview?limit=2", headers=tenant.viewer)
    assert preview.status_code == 200, preview.text
    assert preview.json()["items"] == [
        {
            "entity_id": ids[0],
            "line": 1,
            "before": {"company": "Old"},
            "after": {"company": "New"},
            "outcome": "succeeded",
            "code": "succeeded",
        },
        {
            "entity_id": ids[1],
            "line": 2,
            "before": {"company": "Old"},
            "after": {"company": "New"},
            "outcome": "succeeded",
            "code": "succeeded",
        },
    ]

    real = client.post(f"/bulk-actions/{dry['id']}/run", headers=tenant.editor)
    assert real.status_code == 202, real.text
    assert real.json()["source_id"] == dry["id"] and real.json()["dry_run"] is False
    assert real.json()["total"] == 3 and real.json()["action"] == "update"
    _drive(client, database_url, real.json()["id"])
    assert _companies(client, tenant, ids) == ["New", "New", "New"]
    client.patch(f"/contacts/{ids[2]}", json={"company": "Mine"}, headers=tenant.editor)

    revert = client.post(f"/bulk-actions/{real.json()['id']}/revert", headers=tenant.editor)
    assert revert.status_code == 202, revert.text
    assert revert.json()["action"] == "revert" and revert.json()["source_id"] == real.json()["id"]
    _drive(client, database_url, revert.json()["id"])
    reverted = _job(client, tenant, revert.json()["id"])
    assert (reverted["status"], reverted["succeeded"], reverted["skipped"]) == ("completed", 2, 1)
    assert _companies(client, tenant, ids) == ["Old", "Old", "Mine"]
    stats = client.get(f"/bulk-actions/{revert.json()['id']}/stats", headers=tenant.viewer).json()
    assert stats["skipped_by_reason"] == {"changed_since": 1}


def test_a_streamed_import_dry_run_creates_nothing(
    client: TestClient[Litestar], database_url: str, tenant: Tenant
) -> None:
    email = unique_email("imp")
    answer = client.post(
        "/bulk-actions/import?dry_run=true",
        content=f"email,first_name\n{email},Ann\nbad-email,Bob\n".encode(),
        headers=tenant.editor | {"Content-Type": "text/csv"},
    )
    assert answer.status_code == 202, answer.text
    assert answer.json()["dry_run"] is True
    _drive(client, database_url, answer.json()["id"])
    job = _job(client, tenant, answer.json()["id"])
    assert (job["total"], job["succeeded"], job["failed"]) == (2, 1, 1)
    listed = client.get(f"/contacts?email={email}", headers=tenant.viewer)
    assert listed.status_code == 200 and listed.json()["items"] == []
    items = client.get(f"/bulk-actions/{job['id']}/preview", headers=tenant.viewer).json()["items"]
    assert [(i["line"], i["code"], i["after"].get("first_name")) for i in items] == [
        (1, "succeeded", "Ann"),
        (2, "invalid_email", None),
    ]

    real = client.post(f"/bulk-actions/{job['id']}/run", headers=tenant.editor)
    assert real.status_code == 202, real.text
    assert real.json()["mapping_used"] == job["mapping_used"] and real.json()["total"] == 2
    _drive(client, database_url, real.json()["id"])
    created = client.get(f"/contacts?email={email}", headers=tenant.viewer).json()["items"]
    assert [c["first_name"] for c in created] == ["Ann"]


def test_reverting_a_running_job_conflicts(
    client: TestClient[Litestar], database_url: str, tenant: Tenant
) -> None:
    ids = _contacts(client, tenant, 1)
    job = _create(client, tenant, {"action": "add_tags", "target": {"ids": ids}, "tags": ["x"]})
    with psycopg.connect(database_url, autocommit=True) as conn:
        plan_job(conn, UUID(job["id"]), chunk_size=CHUNK_SIZE)
        start_planned_jobs(conn)
    assert _job(client, tenant, job["id"])["status"] == "running"
    body = assert_problem(client.post(f"/bulk-actions/{job['id']}/revert", headers=tenant.editor), 409)
    assert "has not ended" in body["detail"]


def test_promoting_what_is_not_a_finished_dry_run_conflicts(
    client: TestClient[Litestar], tenant: Tenant
) -> None:
    real = _create(client, tenant, {"action": "delete", "target": {"ids": [1]}})
    assert (
        "not a dry run"
        in assert_problem(client.post(f"/bulk-actions/{real['id']}/run", headers=tenant.editor), 409)[
            "detail"
        ]
    )
    assert_problem(client.get(f"/bulk-actions/{real['id']}/preview", headers=tenant.viewer), 409)
    dry = _create(client, tenant, {"action": "delete", "target": {"ids": [1]}, "dry_run": True})
    assert (
        "has not completed"
        in assert_problem(client.post(f"/bulk-actions/{dry['id']}/run", headers=tenant.editor), 409)["detail"]
    )
    assert (
        "dry run"
        in assert_problem(client.post(f"/bulk-actions/{dry['id']}/revert", headers=tenant.editor), 409)[
            "detail"
        ]
    )


@pytest.mark.parametrize(("method", "suffix"), [("POST", "/run"), ("POST", "/revert")])
def test_viewers_cannot_run_or_revert(
    client: TestClient[Litestar], tenant: Tenant, method: str, suffix: str
) -> None:
    dry = _create(client, tenant, {"action": "delete", "target": {"ids": [1]}, "dry_run": True})
    assert_problem(client.request(method, f"/bulk-actions/{dry['id']}{suffix}", headers=tenant.viewer), 403)


@pytest.mark.parametrize(("method", "suffix"), [("GET", "/preview"), ("POST", "/run"), ("POST", "/revert")])
def test_another_accounts_job_answers_404(
    client: TestClient[Litestar], tenant: Tenant, other: Tenant, method: str, suffix: str
) -> None:
    theirs = _create(client, other, {"action": "delete", "target": {"ids": [1]}, "dry_run": True})
    assert_problem(client.request(method, f"/bulk-actions/{theirs['id']}{suffix}", headers=tenant.admin), 404)
    assert_problem(client.request(method, f"/bulk-actions/{uuid.uuid4()}{suffix}", headers=tenant.admin), 404)
    assert_problem(client.request(method, f"/bulk-actions/not-a-uuid{suffix}", headers=tenant.admin), 404)


@pytest.mark.parametrize("query", ["limit=0", "limit=501", "limit=x"])
def test_the_preview_rejects_bad_limits(client: TestClient[Litestar], tenant: Tenant, query: str) -> None:
    dry = _create(client, tenant, {"action": "delete", "target": {"ids": [1]}, "dry_run": True})
    assert_problem(client.get(f"/bulk-actions/{dry['id']}/preview?{query}", headers=tenant.viewer), 422)


@pytest.mark.parametrize("value", ["yes", None, [True]])
def test_a_dry_run_flag_of_the_wrong_type_answers_422(
    client: TestClient[Litestar], tenant: Tenant, value: object
) -> None:
    body = {"action": "delete", "target": {"ids": [1]}, "dry_run": value}
    assert_problem(client.post("/bulk-actions", json=body, headers=tenant.editor), 422)
