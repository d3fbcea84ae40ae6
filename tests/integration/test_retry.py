"""Retry of what failed: POST /bulk-actions/{id}/retry over a finished job's failed (and cancelled) entities.

An import with known bad lines is retried with corrected records matched by line, and those records then
succeed; a cancelled tagging job is retried over its cancelled entities; the refusals answer problems.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from uuid import UUID

import psycopg
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from crm_bulk.entitylog.shipper import ship_outcomes
from crm_bulk.planner import plan_job
from tests.integration.api_support import (
    Tenant,
    assert_problem,
    end_open_jobs,
    make_settings,
    make_tenant,
    newest_account_id,
    running_client,
)
from tests.integration.report_support import created_job
from tests.integration.results_support import bad_line, csv_rows, import_csv, run_to_end, uploaded

pytestmark = [pytest.mark.postgres, pytest.mark.clickhouse]

ROWS = 700
EVERY = 25
CHUNK = 200


@pytest.fixture(scope="module")
def client(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient[Litestar]]:
    before = newest_account_id(database_url)
    settings = make_settings(tmp_path_factory.mktemp("api-retry"), chunk_size=CHUNK)
    yield from running_client(settings, database_url)
    end_open_jobs(database_url, before)


@pytest.fixture(scope="module")
def tenant(client: TestClient[Litestar]) -> Tenant:
    return make_tenant(client, "Retries")


@pytest.fixture(scope="module")
def imported(client: TestClient[Litestar], tenant: Tenant, database_url: str) -> dict[str, Any]:
    job = uploaded(client, tenant.editor, import_csv(ROWS, every=EVERY, tag="rt"))
    run_to_end(client, database_url, job["id"])
    return dict(client.get(f"/bulk-actions/{job['id']}", headers=tenant.viewer).json())


def _retry(client: TestClient[Litestar], headers: dict[str, str], job_id: str, body: Any = None) -> Any:
    return client.post(f"/bulk-actions/{job_id}/retry", json=body, headers=headers)


def _failed_lines() -> list[int]:
    return [line for line in range(1, ROWS + 1) if bad_line(line, EVERY)]


def test_refusals_answer_problems(
    client: TestClient[Litestar], tenant: Tenant, imported: dict[str, Any], database_url: str
) -> None:
    job_id = imported["id"]
    assert_problem(_retry(client, tenant.viewer, job_id), 403)
    other = make_tenant(client, "Other")
    assert_problem(_retry(client, other.editor, job_id), 404)
    not_failed = _retry(client, tenant.editor, job_id, {"records": [{"line": 2, "email": "x@example.com"}]})
    assert "line 2" in assert_problem(not_failed, 422)["detail"]
    twice = [{"line": EVERY, "email": "a@example.com"}, {"line": EVERY, "email": "b@example.com"}]
    assert (
        "more than once"
        in assert_problem(_retry(client, tenant.editor, job_id, {"records": twice}), 422)["detail"]
    )
    assert_problem(_retry(client, tenant.editor, job_id, {"records": [{"line": 0}]}), 422)
    assert_problem(_retry(client, tenant.editor, job_id, {"include_cancelled": "yes"}), 422)
    malformed = client.post(
        f"/bulk-actions/{job_id}/retry",
        content=b"{not json",
        headers=tenant.editor | {"Content-Type": "application/json"},
    )
    assert_problem(malformed, 422)
    # A correction that fails the retry discards the retry whole: no job of it is left behind.
    with psycopg.connect(database_url) as conn:
        derived = conn.execute("SELECT count(*) FROM bulk_actions WHERE source_id = %s", [job_id]).fetchone()
    assert derived == (0,)

    pending = created_job(
        client, tenant.editor, {"action": "add_tags", "target": {"all": True}, "tags": ["later"]}
    )
    assert "ended" in assert_problem(_retry(client, tenant.editor, pending), 409)["detail"]
    run_to_end(client, database_url, pending)
    nothing = assert_problem(_retry(client, tenant.editor, pending), 422)
    assert nothing["detail"].endswith("no failed entities to retry")


def test_an_import_retried_with_corrected_records_succeeds_on_exactly_those_lines(
    client: TestClient[Litestar], tenant: Tenant, imported: dict[str, Any], database_url: str
) -> None:
    lines = _failed_lines()
    assert imported["failed"] == len(lines)
    # Every failed line corrected but the last, which is retried as it was sent and fails again.
    corrected = [
        {"line": line, "email": f"fixed-{line}@example.com", "company": "Fixed"} for line in lines[:-1]
    ]
    answer = _retry(client, tenant.editor, imported["id"], {"records": corrected})
    assert answer.status_code == 202, answer.text
    retry = answer.json()
    assert (retry["action"], retry["source_id"], retry["total"]) == ("import", imported["id"], len(lines))
    run_to_end(client, database_url, retry["id"])
    done = client.get(f"/bulk-actions/{retry['id']}", headers=tenant.viewer).json()
    assert (done["status"], done["succeeded"], done["failed"]) == ("completed_with_errors", len(lines) - 1, 1)

    rows = csv_rows(client.get(f"/bulk-actions/{retry['id']}/results", headers=tenant.viewer).text)
    # The retry keeps the lines of the file the records came from.
    assert [int(r["line"]) for r in rows] == lines
    assert [r["email"] for r in rows[:-1]] == [f"fixed-{line}@example.com" for line in lines[:-1]]
    assert {r["outcome"] for r in rows[:-1]} == {"succeeded"}
    assert (rows[-1]["email"], rows[-1]["outcome"]) == (f"broken-rt-{lines[-1]}", "failed")

    # A retry of the retry corrects the last record by that same line.
    again = _retry(
        client, tenant.editor, retry["id"], {"records": [{"line": lines[-1], "email": "last@example.com"}]}
    )
    assert again.status_code == 202, again.text
    run_to_end(client, database_url, again.json()["id"])
    last = csv_rows(client.get(f"/bulk-actions/{again.json()['id']}/results", headers=tenant.viewer).text)
    assert [(int(r["line"]), r["email"], r["outcome"]) for r in last] == [
        (lines[-1], "last@example.com", "succeeded")
    ]
    with psycopg.connect(database_url) as conn:
        stored = conn.execute(
            "SELECT count(*) FROM contacts WHERE account_id = %s AND company = 'Fixed'", [tenant.account_id]
        ).fetchone()
    assert stored == (len(lines) - 1,)


def test_a_cancelled_tagging_job_is_retried_over_its_cancelled_entities_when_asked(
    client: TestClient[Litestar], tenant: Tenant, imported: dict[str, Any], database_url: str
) -> None:
    job_id = created_job(
        client,
        tenant.editor,
        {"action": "add_tags", "target": {"filter": {"company": {"eq": "Co 3"}}}, "tags": ["again"]},
    )
    with psycopg.connect(database_url, autocommit=True) as conn:
        plan_job(conn, UUID(job_id), chunk_size=CHUNK)  # planned, so its entities are counted cancelled
    cancelled = client.post(f"/bulk-actions/{job_id}/cancel", headers=tenant.editor)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    with psycopg.connect(database_url, autocommit=True) as conn:
        while ship_outcomes(conn, client.app.state.resources.store):
            pass
    assert cancelled.json()["cancelled"] == 1
    refused = assert_problem(_retry(client, tenant.editor, job_id), 422)
    assert refused["detail"].endswith("1 were cancelled: send include_cancelled to retry them")
    records = {"include_cancelled": True, "records": [{"line": 1, "email": "a@example.com"}]}
    assert assert_problem(_retry(client, tenant.editor, job_id, records), 422)["detail"].startswith("records")

    answer = _retry(client, tenant.editor, job_id, {"include_cancelled": True})
    assert answer.status_code == 202, answer.text
    retry = answer.json()
    assert (retry["action"], retry["source_id"]) == ("add_tags", job_id)
    run_to_end(client, database_url, retry["id"])
    done = client.get(f"/bulk-actions/{retry['id']}", headers=tenant.viewer).json()
    assert (done["status"], done["total"], done["succeeded"]) == ("completed", 1, 1)
    with psycopg.connect(database_url) as conn:
        tagged = conn.execute(
            "SELECT count(*) FROM contacts WHERE account_id = %s AND 'again' = ANY(tags)", [tenant.account_id]
        ).fetchone()
    assert tagged == (1,)
    assert UUID(retry["id"]) != UUID(job_id)
