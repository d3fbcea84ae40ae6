"""Registration, login, tokens, the caller's account, limits and members, over HTTP on real PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from crm_bulk.auth.throttle import Bucket, LoginThrottle
from crm_bulk.ratelimit import InProcessLimiter
from tests.integration.api_support import (
    PASSWORD,
    Tenant,
    assert_problem,
    bearer,
    login,
    make_settings,
    make_tenant,
    running_client,
    unique_email,
)

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def client(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient[Litestar]]:
    settings = make_settings(tmp_path_factory.mktemp("api-auth"), max_body_bytes=64 * 1024)
    yield from running_client(settings, database_url)


@pytest.fixture(scope="module")
def tenant(client: TestClient[Litestar]) -> Tenant:
    return make_tenant(client)


@pytest.fixture(scope="module")
def other(client: TestClient[Litestar]) -> Tenant:
    return make_tenant(client, "Globex")


@pytest.fixture
def fresh_throttle(client: TestClient[Litestar], monkeypatch: pytest.MonkeyPatch) -> LoginThrottle:
    """A throttle of its own, so failures counted by one test never leak into another."""
    throttle = LoginThrottle(InProcessLimiter())
    monkeypatch.setattr(client.app.state.resources, "login_throttle", throttle)
    return throttle


def test_register_creates_an_account_and_its_admin(client: TestClient[Litestar]) -> None:
    email = unique_email()
    answer = client.post(
        "/auth/register", json={"email": email, "password": PASSWORD, "account_name": "Initech"}
    )
    assert answer.status_code == 201
    body = answer.json()
    assert body["role"] == "admin"
    headers = login(client, email)
    me = client.get("/accounts/me", headers=headers).json()
    assert me["id"] == body["account_id"]
    assert me["name"] == "Initech"
    assert me["role"] == "admin"
    assert me["limits"] == {"api_requests_per_minute": 600, "entities_per_second": 50000}


def test_register_refuses_a_taken_email_in_any_case(client: TestClient[Litestar]) -> None:
    email = unique_email()
    assert (
        client.post(
            "/auth/register", json={"email": email, "password": PASSWORD, "account_name": "A"}
        ).status_code
        == 201
    )
    again = client.post(
        "/auth/register", json={"email": email.upper(), "password": PASSWORD, "account_name": "B"}
    )
    assert_problem(again, 409)


@pytest.mark.parametrize(
    ("body", "field", "code"),
    [
        ({"email": "not-an-email", "password": PASSWORD, "account_name": "A"}, "email", "invalid_email"),
        ({"email": "a@example.com", "password": "short", "account_name": "A"}, "password", "too_short"),
        ({"email": "a@example.com", "password": PASSWORD}, "account_name", "required"),
        ({"email": "a@example.com", "password": PASSWORD, "account_name": ""}, "account_name", "too_short"),
        ({"email": "a@example.com", "password": PASSWORD, "account_name": "   "}, "account_name", "blank"),
        ({"email": 5, "password": PASSWORD, "account_name": "A"}, "email", "invalid_type"),
        (
            {"email": "a@example.com", "password": PASSWORD, "account_name": "A", "role": "x"},
            "role",
            "unknown_field",
        ),
        ({"email": "a@example.com", "password": "x" * 300, "account_name": "A"}, "password", "too_long"),
        (
            {"email": "a\u0000@example.com", "password": PASSWORD, "account_name": "A"},
            "email",
            "invalid_email",
        ),
        (
            {"email": "a@example.com", "password": PASSWORD, "account_name": "A\u0000"},
            "account_name",
            "invalid_value",
        ),
    ],
)
def test_register_validation_names_the_field(
    client: TestClient[Litestar], body: dict[str, Any], field: str, code: str
) -> None:
    problem = assert_problem(client.post("/auth/register", json=body), 422)
    assert {"field": field, "code": code} in [
        {"field": e["field"], "code": e["code"]} for e in problem["errors"]
    ]


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b'{"email": "a@example.com", ', "application/json"),
        (b"\xff\xfe", "application/json"),
        (b"[]", "application/json"),
    ],
)
def test_malformed_bodies_answer_4xx_problems(
    client: TestClient[Litestar], content: bytes, content_type: str
) -> None:
    answer = client.post("/auth/register", content=content, headers={"Content-Type": content_type})
    assert answer.status_code in {400, 422}
    assert_problem(answer, answer.status_code)


def test_oversized_body_answers_413(client: TestClient[Litestar]) -> None:
    huge = {"email": "a@example.com", "password": PASSWORD, "account_name": "A" * 100_000}
    assert_problem(client.post("/auth/register", json=huge), 413)


def test_login_returns_a_bearer_token(
    client: TestClient[Litestar], tenant: Tenant, fresh_throttle: LoginThrottle
) -> None:
    answer = client.post("/auth/login", json={"email": tenant.emails["editor"].upper(), "password": PASSWORD})
    assert answer.status_code == 200
    body = answer.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 3600
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["sub"] == str(tenant.user_ids["editor"])
    assert claims["acc"] == tenant.account_id
    assert claims["exp"] - claims["iat"] == 3600


@pytest.mark.parametrize("which", ["wrong password", "unknown email"])
def test_login_refuses_bad_credentials_alike(
    client: TestClient[Litestar], tenant: Tenant, fresh_throttle: LoginThrottle, which: str
) -> None:
    email = tenant.emails["viewer"] if which == "wrong password" else unique_email()
    answer = client.post("/auth/login", json={"email": email, "password": "not the password"})
    problem = assert_problem(answer, 401)
    assert problem["detail"] == "invalid email or password"


def test_repeated_failed_logins_for_one_email_are_slowed_down(
    client: TestClient[Litestar], tenant: Tenant, fresh_throttle: LoginThrottle
) -> None:
    email = tenant.emails["viewer"]
    for _ in range(5):
        assert client.post("/auth/login", json={"email": email, "password": "guess"}).status_code == 401
    refused = client.post("/auth/login", json={"email": email, "password": PASSWORD})
    assert_problem(refused, 429)
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.headers["RateLimit-Limit"] == "5"
    assert refused.headers["RateLimit-Remaining"] == "0"
    assert "RateLimit-Reset" in refused.headers
    # Another address from the same client still gets in.
    assert (
        client.post("/auth/login", json={"email": tenant.emails["editor"], "password": PASSWORD}).status_code
        == 200
    )


def test_repeated_failed_logins_from_one_client_are_slowed_down(
    client: TestClient[Litestar], tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    throttle = LoginThrottle(
        InProcessLimiter(),
        per_email=Bucket(burst=100, refill_seconds=60),
        per_client=Bucket(burst=3, refill_seconds=60),
    )
    monkeypatch.setattr(client.app.state.resources, "login_throttle", throttle)
    for _ in range(3):
        assert (
            client.post("/auth/login", json={"email": unique_email(), "password": "guess"}).status_code == 401
        )
    refused = client.post("/auth/login", json={"email": tenant.emails["admin"], "password": PASSWORD})
    assert_problem(refused, 429)
    assert int(refused.headers["Retry-After"]) >= 1


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Bearer not.a.jwt", "Bearer a.b.c"],
)
def test_requests_without_a_valid_token_answer_401(
    client: TestClient[Litestar], authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    answer = client.get("/accounts/me", headers=headers)
    assert_problem(answer, 401)
    assert answer.headers["WWW-Authenticate"] == "Bearer"


def _forged(tenant: Tenant, **changes: Any) -> str:
    now = int(time.time())
    claims = {
        "sub": str(tenant.admin_id),
        "acc": tenant.account_id,
        "iss": "crm-bulk",
        "aud": "crm-bulk-api",
        "iat": now,
        "exp": now + 600,
    } | changes
    return jwt.encode(claims, "another secret that is long enough to be used!", algorithm="HS256")


def test_forged_expired_and_unsigned_tokens_are_refused(client: TestClient[Litestar], tenant: Tenant) -> None:
    codec = client.app.state.resources.tokens
    expired = codec.issue(
        user_id=tenant.admin_id, account_id=tenant.account_id, now=time.time() - 7200
    ).access_token
    unsigned = jwt.encode(
        {"sub": str(tenant.admin_id), "acc": tenant.account_id, "exp": int(time.time()) + 600},
        key="",
        algorithm="none",
    )
    for token in (expired, unsigned, _forged(tenant)):
        assert_problem(client.get("/accounts/me", headers=bearer(token)), 401)
    assert "expired" in client.get("/accounts/me", headers=bearer(expired)).json()["detail"]


def test_a_token_for_another_account_is_refused(
    client: TestClient[Litestar], tenant: Tenant, other: Tenant
) -> None:
    codec = client.app.state.resources.tokens
    token = codec.issue(user_id=tenant.admin_id, account_id=other.account_id).access_token
    assert_problem(client.get("/accounts/me", headers=bearer(token)), 401)


@pytest.mark.parametrize("role", ["admin", "editor", "viewer"])
def test_every_member_reads_the_account(client: TestClient[Litestar], tenant: Tenant, role: str) -> None:
    answer = client.get("/accounts/me", headers=tenant.headers[role])
    assert answer.status_code == 200
    assert answer.json()["role"] == role
    assert answer.json()["id"] == tenant.account_id


@pytest.mark.parametrize("role", ["editor", "viewer"])
@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/accounts/me/members", None),
        ("POST", "/accounts/me/members", {"email": "x@example.com", "password": PASSWORD, "role": "viewer"}),
        ("PATCH", "/accounts/me/members/{admin}", {"role": "viewer"}),
        ("DELETE", "/accounts/me/members/{admin}", None),
        ("PATCH", "/accounts/me/limits", {"api_requests_per_minute": 5}),
    ],
)
def test_only_admins_manage_members_and_limits(
    client: TestClient[Litestar], tenant: Tenant, role: str, *, method: str, path: str, body: Any
) -> None:
    answer = client.request(
        method, path.format(admin=tenant.admin_id), json=body, headers=tenant.headers[role]
    )
    problem = assert_problem(answer, 403)
    assert "admin" in problem["detail"]


def test_admin_manages_members(
    client: TestClient[Litestar], tenant: Tenant, fresh_throttle: LoginThrottle
) -> None:
    email = unique_email("member")
    added = client.post(
        "/accounts/me/members",
        json={"email": email, "password": PASSWORD, "role": "viewer"},
        headers=tenant.admin,
    )
    assert added.status_code == 201
    member = added.json()
    assert member["email"] == email and member["role"] == "viewer"
    listed = client.get("/accounts/me/members", headers=tenant.admin).json()
    assert {m["user_id"]: m["role"] for m in listed}[member["user_id"]] == "viewer"
    assert {tenant.admin_id, *tenant.user_ids.values()} <= {m["user_id"] for m in listed}
    member_headers = login(client, email)
    assert client.post("/contacts", json={"email": unique_email()}, headers=member_headers).status_code == 403

    promoted = client.patch(
        f"/accounts/me/members/{member['user_id']}", json={"role": "editor"}, headers=tenant.admin
    )
    assert promoted.status_code == 200 and promoted.json()["role"] == "editor"
    # The role is read on every request: the same token now writes.
    assert client.get("/accounts/me", headers=member_headers).json()["role"] == "editor"

    assert client.delete(f"/accounts/me/members/{member['user_id']}", headers=tenant.admin).status_code == 204
    assert_problem(client.get("/accounts/me", headers=member_headers), 401)
    assert_problem(client.post("/auth/login", json={"email": email, "password": PASSWORD}), 401)
    assert_problem(client.delete(f"/accounts/me/members/{member['user_id']}", headers=tenant.admin), 404)


def test_member_emails_are_unique_across_accounts(
    client: TestClient[Litestar], tenant: Tenant, other: Tenant
) -> None:
    answer = client.post(
        "/accounts/me/members",
        json={"email": other.emails["viewer"], "password": PASSWORD, "role": "viewer"},
        headers=tenant.admin,
    )
    assert_problem(answer, 409)


def test_the_last_admin_stays(client: TestClient[Litestar]) -> None:
    solo = make_tenant(client, "Solo")
    assert_problem(
        client.patch(f"/accounts/me/members/{solo.admin_id}", json={"role": "editor"}, headers=solo.admin),
        409,
    )
    assert_problem(client.delete(f"/accounts/me/members/{solo.admin_id}", headers=solo.admin), 409)
    second = client.patch(
        f"/accounts/me/members/{solo.user_ids['editor']}", json={"role": "admin"}, headers=solo.admin
    )
    assert second.status_code == 200
    assert (
        client.patch(
            f"/accounts/me/members/{solo.admin_id}", json={"role": "viewer"}, headers=solo.admin
        ).status_code
        == 200
    )


@pytest.mark.parametrize(("method", "body"), [("PATCH", {"role": "viewer"}), ("DELETE", None)])
def test_another_accounts_members_answer_404(
    client: TestClient[Litestar], tenant: Tenant, other: Tenant, method: str, body: Any
) -> None:
    answer = client.request(
        method, f"/accounts/me/members/{other.user_ids['editor']}", json=body, headers=tenant.admin
    )
    assert_problem(answer, 404)
    assert client.get("/accounts/me", headers=other.editor).json()["role"] == "editor"


def test_admin_changes_limits(client: TestClient[Litestar]) -> None:
    own = make_tenant(client, "Limits")
    changed = client.patch("/accounts/me/limits", json={"entities_per_second": 1234}, headers=own.admin)
    assert changed.status_code == 200
    assert changed.json()["limits"] == {"api_requests_per_minute": 600, "entities_per_second": 1234}
    assert client.get("/accounts/me", headers=own.viewer).json()["limits"]["entities_per_second"] == 1234


@pytest.mark.parametrize(
    "body",
    [
        {"api_requests_per_minute": 0},
        {"entities_per_second": -1},
        {"api_requests_per_minute": "many"},
        {"x": 1},
    ],
)
def test_invalid_limits_answer_422(
    client: TestClient[Litestar], tenant: Tenant, body: dict[str, Any]
) -> None:
    assert_problem(client.patch("/accounts/me/limits", json=body, headers=tenant.admin), 422)


@pytest.mark.parametrize("path", ["/accounts/me", "/nowhere", "/healthz"])
def test_every_answer_carries_security_headers(
    client: TestClient[Litestar], tenant: Tenant, path: str
) -> None:
    answer = client.get(path, headers=tenant.viewer)
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert answer.headers["X-Frame-Options"] == "DENY"
    assert answer.headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert answer.headers["Cache-Control"] == "no-store"


def test_unknown_routes_and_methods_answer_problems(client: TestClient[Litestar], tenant: Tenant) -> None:
    assert_problem(client.get("/nowhere", headers=tenant.viewer), 404)
    assert_problem(client.put("/accounts/me", json={}, headers=tenant.admin), 405)
