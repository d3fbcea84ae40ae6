"""Requests at the edges of what the OpenAPI document allows answer as the document says: the largest id it
allows is looked up (404), one past it is refused (422); an email it allows at login is somebody's or nobody's
credentials (401), whatever characters it holds."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from tests.integration.api_support import Tenant, assert_problem, make_settings, make_tenant, running_client

pytestmark = [pytest.mark.postgres, pytest.mark.clickhouse]


@pytest.fixture(scope="module")
def client(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient[Litestar]]:
    yield from running_client(make_settings(tmp_path_factory.mktemp("api-document-edges")), database_url)


@pytest.fixture(scope="module")
def tenant(client: TestClient[Litestar]) -> Tenant:
    return make_tenant(client, "Edges")


def test_the_largest_documented_member_id_is_looked_up_and_the_next_refused(
    client: TestClient[Litestar], tenant: Tenant
) -> None:
    maximum = client.get("/schema/openapi.json").json()["paths"]["/accounts/me/members/{user_id}"]["delete"]
    assert maximum["parameters"][0]["schema"]["maximum"] == 2**63 - 1
    assert_problem(client.delete(f"/accounts/me/members/{2**63 - 1}", headers=tenant.admin), 404)
    refused = assert_problem(client.delete(f"/accounts/me/members/{2**63}", headers=tenant.admin), 422)
    assert refused["errors"][0]["field"] == "user_id"


@pytest.mark.parametrize("email", ["nul\u0000@example.com", "e\u0000\\,\f"])
def test_a_login_email_with_a_nul_character_is_nobodys(client: TestClient[Litestar], email: str) -> None:
    answer = client.post("/auth/login", json={"email": email, "password": "correct horse battery staple"})
    body = assert_problem(answer, 401)
    assert body["detail"] == "invalid email or password"
