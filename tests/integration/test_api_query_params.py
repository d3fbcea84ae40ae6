"""One rule for query parameters: a name the route does not declare answers 422, naming it and the allowed
ones, on every route (reads, writes, uploads, operations); declared names and the contacts' filters pass."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from tests.integration.api_support import Tenant, assert_problem, make_settings, make_tenant, running_client

pytestmark = [pytest.mark.postgres, pytest.mark.clickhouse]


@pytest.fixture(scope="module")
def client(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient[Litestar]]:
    yield from running_client(make_settings(tmp_path_factory.mktemp("api-query-params")), database_url)


@pytest.fixture(scope="module")
def tenant(client: TestClient[Litestar]) -> Tenant:
    return make_tenant(client, "Params")


@pytest.fixture(scope="module")
def job_id(client: TestClient[Litestar], tenant: Tenant) -> str:
    contact = client.post("/contacts", json={"email": "params@example.com"}, headers=tenant.admin)
    assert contact.status_code == 201, contact.text
    job = client.post(
        "/bulk-actions",
        json={"action": "add_tags", "target": {"ids": [contact.json()["id"]]}, "tags": ["vip"]},
        headers=tenant.admin,
    )
    assert job.status_code == 202, job.text
    return str(job.json()["id"])


def _refused(response: Any, *unknown: str) -> dict[str, Any]:
    body = assert_problem(response, 422)
    assert [e["field"] for e in body["errors"]] == sorted(unknown)
    assert {e["code"] for e in body["errors"]} == {"unknown_parameter"}
    return body


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("/bulk-actions", "cursor, limit, status"),
        ("/bulk-actions/{job}/logs", "cursor, entity_id, limit, outcome"),
        ("/bulk-actions/{job}/errors", "limit"),
        ("/accounts/me", "no query parameters"),
        ("/bulk-actions/{job}/stats", "no query parameters"),
    ],
)
def test_a_read_refuses_an_undeclared_parameter_and_names_the_allowed_ones(
    client: TestClient[Litestar], tenant: Tenant, job_id: str, path: str, allowed: str
) -> None:
    url = path.format(job=job_id)
    assert client.get(
        url, params={"limit": 5} if "limit" in allowed else {}, headers=tenant.viewer
    ).is_success
    body = _refused(client.get(url, params={"limt": "5"}, headers=tenant.viewer), "limt")
    assert body["errors"][0]["message"].endswith(allowed)
    assert "limt" in body["detail"]


def test_several_unknown_parameters_are_all_named(client: TestClient[Litestar], tenant: Tenant) -> None:
    answer = client.get(
        "/bulk-actions", params={"zeta": "1", "alpha": "2", "limit": "3"}, headers=tenant.viewer
    )
    _refused(answer, "alpha", "zeta")


def test_a_write_refuses_an_undeclared_parameter_and_does_nothing(
    client: TestClient[Litestar], tenant: Tenant
) -> None:
    before = client.get("/bulk-actions", params={"limit": 200}, headers=tenant.editor).json()["items"]
    answer = client.post(
        "/bulk-actions",
        params={"dry_rum": "true"},
        json={"action": "delete", "target": {"all": True}},
        headers=tenant.editor,
    )
    _refused(answer, "dry_rum")
    after = client.get("/bulk-actions", params={"limit": 200}, headers=tenant.editor).json()["items"]
    assert after == before
    created = client.post(
        "/contacts", params={"upsert": "1"}, json={"email": "never@example.com"}, headers=tenant.editor
    )
    _refused(created, "upsert")
    assert (
        client.get("/contacts", params={"email": "never@example.com"}, headers=tenant.viewer).json()["items"]
        == []
    )


def test_an_upload_refuses_an_undeclared_parameter_before_reading_the_body(
    client: TestClient[Litestar], tenant: Tenant
) -> None:
    answer = client.post(
        "/bulk-actions/import",
        params={"on_duplicate": "update", "on_dup": "skip"},
        content=b"email\nupload@example.com\n",
        headers={**tenant.editor, "Content-Type": "text/csv"},
    )
    _refused(answer, "on_dup")
    assert (
        client.get("/contacts", params={"email": "upload@example.com"}, headers=tenant.viewer).json()["items"]
        == []
    )


def test_public_and_operations_routes_follow_the_rule(client: TestClient[Litestar]) -> None:
    _refused(client.get("/healthz", params={"verbose": "1"}), "verbose")
    _refused(
        client.post("/auth/login", params={"remember": "1"}, json={"email": "a@b.c", "password": "x"}),
        "remember",
    )


def test_contacts_take_filter_conditions_but_not_other_names(
    client: TestClient[Litestar], tenant: Tenant
) -> None:
    listed = client.get(
        "/contacts",
        params={
            "company.is_null": "true",
            "custom_fields.plan.in": "free,gold",
            "tags.contains": "x",
            "limit": 5,
        },
        headers=tenant.viewer,
    )
    assert listed.status_code == 200, listed.text
    body = _refused(
        client.get("/contacts", params={"colour": "red", "limit": 5}, headers=tenant.viewer), "colour"
    )
    message = body["errors"][0]["message"]
    assert "cursor, " in message and "filter conditions (field, field.op)" in message
    # A filterable field with an operator the field lacks is the filter language's refusal, by name.
    wrong_op = assert_problem(
        client.get("/contacts", params={"id.starts_with": "1"}, headers=tenant.viewer), 422
    )
    assert wrong_op["errors"][0] == {
        "field": "id.starts_with",
        "code": "unknown_operator",
        "message": "unsupported filter operator 'starts_with'",
    }


def test_an_unauthenticated_request_is_401_whatever_its_parameters(client: TestClient[Litestar]) -> None:
    assert_problem(client.get("/contacts", params={"colour": "red"}), 401)
