"""Contacts over HTTP against real PostgreSQL: CRUD, validation through the Rust kernels, duplicates, roles,
tenancy, and listing with the filter language and cursors."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from tests.integration.api_support import (
    Tenant,
    assert_problem,
    make_settings,
    make_tenant,
    running_client,
    unique_email,
)

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def client(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient[Litestar]]:
    yield from running_client(make_settings(tmp_path_factory.mktemp("api-contacts")), database_url)


@pytest.fixture(scope="module")
def tenant(client: TestClient[Litestar]) -> Tenant:
    return make_tenant(client)


@pytest.fixture(scope="module")
def other(client: TestClient[Litestar]) -> Tenant:
    return make_tenant(client, "Globex")


def _create(client: TestClient[Litestar], tenant: Tenant, **fields: Any) -> dict[str, Any]:
    body = {"email": unique_email("contact")} | fields
    answer = client.post("/contacts", json=body, headers=tenant.editor)
    assert answer.status_code == 201, answer.text
    created: dict[str, Any] = answer.json()
    return created


def test_create_normalises_and_returns_the_contact(client: TestClient[Litestar], tenant: Tenant) -> None:
    email = unique_email("Ada").replace("ada", "Ada")
    created = _create(
        client,
        tenant,
        email=f"  {email.upper()} ",
        first_name="Ada",
        last_name="Lovelace",
        phone="(212) 555-0134",
        company="Acme",
        job_title="Engineer",
        tags=["vip", "beta", "vip"],
        custom_fields={"plan": "gold", "seats": 12, "nested": {"a": [1, 2]}},
    )
    assert created["email"] == email.lower()
    assert created["phone"] == "+12125550134"
    assert created["tags"] == ["beta", "vip"]
    assert created["custom_fields"] == {"plan": "gold", "seats": 12, "nested": {"a": [1, 2]}}
    assert created["created_at"] and created["updated_at"]
    fetched = client.get(f"/contacts/{created['id']}", headers=tenant.viewer)
    assert fetched.status_code == 200
    assert fetched.json() == created


def test_a_duplicate_email_answers_409_with_the_existing_id(
    client: TestClient[Litestar], tenant: Tenant
) -> None:
    first = _create(client, tenant)
    again = client.post("/contacts", json={"email": first["email"].upper()}, headers=tenant.editor)
    problem = assert_problem(again, 409)
    assert problem["existing_id"] == first["id"]


def test_the_same_email_in_another_account_is_no_duplicate(
    client: TestClient[Litestar], tenant: Tenant, other: Tenant
) -> None:
    first = _create(client, tenant)
    assert client.post("/contacts", json={"email": first["email"]}, headers=other.editor).status_code == 201


@pytest.mark.parametrize(
    ("fields", "field", "code"),
    [
        ({"email": "no-at-sign.example.com"}, "email", "invalid_email"),
        ({"email": "a@"}, "email", "invalid_email"),
        ({"email": "   "}, "email", "invalid_email"),
        ({"phone": "not a phone"}, "phone", "invalid_phone"),
        ({"phone": "+1 555"}, "phone", "invalid_phone"),
        ({"tags": ["ok", " "]}, "tags", "invalid_value"),
        ({"custom_fields": {"a": {"b": {"c": {"d": {"e": {"f": 1}}}}}}}, "custom_fields", "invalid_field"),
        ({"custom_fields": {"": 1}}, "custom_fields", "invalid_value"),
        ({"first_name": "x" * 201}, "first_name", "too_long"),
        ({"email": 42}, "email", "invalid_type"),
        ({"tags": "vip"}, "tags", "invalid_type"),
        ({"nickname": "Ada"}, "nickname", "unknown_field"),
        ({"first_name": "A\u0000da"}, "first_name", "invalid_value"),
        ({"tags": ["v\u0000ip"]}, "tags", "invalid_value"),
        ({"custom_fields": {"k": ["a\u0000"]}}, "custom_fields", "invalid_value"),
        ({"custom_fields": {"k\u0000": 1}}, "custom_fields", "invalid_value"),
    ],
)
def test_invalid_contacts_answer_422_naming_the_field(
    client: TestClient[Litestar], tenant: Tenant, fields: dict[str, Any], field: str, code: str
) -> None:
    body = {"email": unique_email()} | fields
    problem = assert_problem(client.post("/contacts", json=body, headers=tenant.editor), 422)
    assert [(e["field"], e["code"]) for e in problem["errors"]] == [(field, code)]


def test_missing_email_answers_422(client: TestClient[Litestar], tenant: Tenant) -> None:
    problem = assert_problem(client.post("/contacts", json={"first_name": "Ada"}, headers=tenant.editor), 422)
    assert problem["errors"][0]["field"] == "email"
    assert problem["errors"][0]["code"] == "required"


def test_put_replaces_every_field(client: TestClient[Litestar], tenant: Tenant) -> None:
    created = _create(client, tenant, first_name="Ada", company="Acme", tags=["vip"], custom_fields={"a": 1})
    email = unique_email()
    replaced = client.put(
        f"/contacts/{created['id']}", json={"email": email, "last_name": "L"}, headers=tenant.editor
    )
    assert replaced.status_code == 200
    body = replaced.json()
    assert body["email"] == email
    assert (body["first_name"], body["last_name"], body["company"]) == (None, "L", None)
    assert body["tags"] == [] and body["custom_fields"] == {}
    assert body["created_at"] == created["created_at"]
    assert body["updated_at"] > created["updated_at"]


def test_patch_changes_given_fields_and_null_clears(client: TestClient[Litestar], tenant: Tenant) -> None:
    created = _create(client, tenant, first_name="Ada", company="Acme", phone="+12125550134")
    patched = client.patch(
        f"/contacts/{created['id']}", json={"company": "Globex", "phone": None}, headers=tenant.editor
    )
    assert patched.status_code == 200
    body = patched.json()
    assert (body["first_name"], body["company"], body["phone"], body["email"]) == (
        "Ada",
        "Globex",
        None,
        created["email"],
    )
    assert_problem(
        client.patch(f"/contacts/{created['id']}", json={"email": None}, headers=tenant.editor), 422
    )
    bad_phone = client.patch(f"/contacts/{created['id']}", json={"phone": "12"}, headers=tenant.editor)
    assert assert_problem(bad_phone, 422)["errors"][0]["field"] == "phone"


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
def test_taking_another_contacts_email_answers_409(
    client: TestClient[Litestar], tenant: Tenant, method: str
) -> None:
    first, second = _create(client, tenant), _create(client, tenant)
    answer = client.request(
        method, f"/contacts/{second['id']}", json={"email": first["email"]}, headers=tenant.editor
    )
    assert assert_problem(answer, 409)["existing_id"] == first["id"]
    assert client.get(f"/contacts/{second['id']}", headers=tenant.viewer).json()["email"] == second["email"]


def test_delete_removes_the_contact_and_frees_its_email(client: TestClient[Litestar], tenant: Tenant) -> None:
    created = _create(client, tenant)
    assert client.delete(f"/contacts/{created['id']}", headers=tenant.editor).status_code == 204
    assert_problem(client.get(f"/contacts/{created['id']}", headers=tenant.viewer), 404)
    assert_problem(client.delete(f"/contacts/{created['id']}", headers=tenant.editor), 404)
    again = client.post("/contacts", json={"email": created["email"]}, headers=tenant.editor)
    assert again.status_code == 201
    assert again.json()["id"] != created["id"]


@pytest.mark.parametrize(
    ("method", "body"),
    [("GET", None), ("PUT", {"email": "x@example.com"}), ("PATCH", {"company": "X"}), ("DELETE", None)],
)
def test_another_accounts_contact_answers_404(
    client: TestClient[Litestar], tenant: Tenant, other: Tenant, method: str, body: Any
) -> None:
    theirs = _create(client, other, company="Theirs")
    answer = client.request(method, f"/contacts/{theirs['id']}", json=body, headers=tenant.admin)
    assert_problem(answer, 404)
    assert client.get(f"/contacts/{theirs['id']}", headers=other.viewer).json()["company"] == "Theirs"


@pytest.mark.parametrize("contact_id", ["999999999", "0", "-1", str(2**63), str(10**30)])
def test_unknown_ids_answer_404(client: TestClient[Litestar], tenant: Tenant, contact_id: str) -> None:
    assert_problem(client.get(f"/contacts/{contact_id}", headers=tenant.viewer), 404)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/contacts", {"email": "v@example.com"}),
        ("PUT", "/contacts/{id}", {"email": "v@example.com"}),
        ("PATCH", "/contacts/{id}", {"company": "V"}),
        ("DELETE", "/contacts/{id}", None),
    ],
)
def test_viewers_cannot_write_contacts(
    client: TestClient[Litestar], tenant: Tenant, method: str, path: str, body: Any
) -> None:
    created = _create(client, tenant)
    answer = client.request(method, path.format(id=created["id"]), json=body, headers=tenant.viewer)
    assert_problem(answer, 403)
    assert client.get(f"/contacts/{created['id']}", headers=tenant.viewer).status_code == 200


@pytest.fixture(scope="module")
def listing(client: TestClient[Litestar]) -> tuple[Tenant, list[dict[str, Any]]]:
    """An account of its own with 7 contacts, so listing assertions see exact sets."""
    own = make_tenant(client, "Listing")
    rows: list[dict[str, Any]] = [
        {"company": "Acme", "tags": ["vip"], "custom_fields": {"plan": "free", "seats": 3}},
        {"company": "Acme", "tags": ["vip", "beta"], "custom_fields": {"plan": "trial", "seats": 30}},
        {"company": "Acme Corp", "tags": [], "phone": "+12125550100"},
        {"company": "Globex", "tags": ["beta"], "custom_fields": {"plan": "gold"}},
        {"company": None, "tags": []},
        {"company": "'; DROP TABLE contacts; --", "tags": ["x' OR '1'='1"]},
        {"company": "Ünïcödé", "first_name": "Zoë"},
    ]
    return own, [_create(client, own, **row) for row in rows]


def _ids(answer: Any) -> list[int]:
    assert answer.status_code == 200, answer.text
    return [item["id"] for item in answer.json()["items"]]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", [0, 1, 2, 3, 4, 5, 6]),
        ("company=Acme", [0, 1]),
        ("company.starts_with=Acme", [0, 1, 2]),
        ("company.in=Acme,Globex", [0, 1, 3]),
        ("company.ne=Acme", [2, 3, 4, 5, 6]),
        ("company.is_null=true", [4]),
        ("tags.contains=vip", [0, 1]),
        ("tags.contains=vip&tags.in=beta", [1]),
        ("custom_fields.plan.in=free,trial", [0, 1]),
        ("custom_fields.seats.gte=10", [1]),
        ("phone.is_null=false", [2]),
        ("first_name=Zoë", [6]),
        ("company=%27%3B%20DROP%20TABLE%20contacts%3B%20--", [5]),
        ("tags.contains=x%27%20OR%20%271%27%3D%271", [5]),
        ("filter=%7B%22company%22%3A%7B%22eq%22%3A%22Globex%22%7D%7D", [3]),
    ],
)
def test_list_filters_with_query_parameters(
    client: TestClient[Litestar],
    listing: tuple[Tenant, list[dict[str, Any]]],
    query: str,
    expected: list[int],
) -> None:
    own, rows = listing
    answer = client.get(f"/contacts?{query}", headers=own.viewer)
    assert _ids(answer) == [rows[i]["id"] for i in expected]
    assert answer.json()["next_cursor"] is None


def test_list_by_email_and_creation_time(
    client: TestClient[Litestar], listing: tuple[Tenant, list[dict[str, Any]]]
) -> None:
    own, rows = listing
    assert _ids(client.get("/contacts", params={"email": rows[3]["email"].upper()}, headers=own.viewer)) == [
        rows[3]["id"]
    ]
    since = rows[5]["created_at"]
    assert _ids(client.get("/contacts", params={"created_at.gte": since}, headers=own.viewer)) == [
        r["id"] for r in rows[5:]
    ]


def test_list_pages_through_every_contact_with_cursors(
    client: TestClient[Litestar], listing: tuple[Tenant, list[dict[str, Any]]]
) -> None:
    own, rows = listing
    seen: list[int] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        answer = client.get("/contacts", params=params, headers=own.viewer)
        seen += _ids(answer)
        pages += 1
        cursor = answer.json()["next_cursor"]
        if cursor is None:
            break
    assert seen == [r["id"] for r in rows]
    assert pages == 3


def test_list_never_shows_another_accounts_contacts(
    client: TestClient[Litestar], listing: tuple[Tenant, list[dict[str, Any]]], other: Tenant
) -> None:
    own, rows = listing
    _create(client, other, company="Acme")
    assert _ids(client.get("/contacts?company=Acme", headers=own.viewer)) == [rows[0]["id"], rows[1]["id"]]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("nickname=Ada", "nickname"),
        ("company.like=Ac%25", "company.like"),
        ("created_at.gte=yesterday", "created_at.gte"),
        ("created_at.gte=2026-01-01T00:00:00", "created_at.gte"),
        ("id.gt=abc", "id.gt"),
        ("phone.is_null=maybe", "phone.is_null"),
        ("tags.starts_with=v", "tags.starts_with"),
        ("filter=%7Bnot%20json", "filter"),
        ("filter=%5B1%5D", "filter"),
        ("company=A&company=B", "company"),
        ("cursor=%25%25%25", "cursor"),
        ("cursor=Yzo=", "cursor"),
    ],
)
def test_bad_filters_answer_422(client: TestClient[Litestar], tenant: Tenant, query: str, field: str) -> None:
    problem = assert_problem(client.get(f"/contacts?{query}", headers=tenant.viewer), 422)
    assert problem["errors"][0]["field"] == field


@pytest.mark.parametrize("limit", ["0", "1001", "-5", "ten"])
def test_limit_is_bounded(client: TestClient[Litestar], tenant: Tenant, limit: str) -> None:
    problem = assert_problem(client.get(f"/contacts?limit={limit}", headers=tenant.viewer), 422)
    assert problem["errors"][0]["field"] == "limit"


def test_a_json_nesting_bomb_answers_400(client: TestClient[Litestar], tenant: Tenant) -> None:
    depth = 100_000
    body = '{"email": "deep@example.com", "custom_fields": {"a": ' + "[" * depth + "]" * depth + "}}"
    answer = client.post(
        "/contacts", content=body.encode(), headers=tenant.editor | {"Content-Type": "application/json"}
    )
    assert_problem(answer, 400)


@pytest.mark.parametrize("query", ["company=a%00b", "custom_fields.plan=%00", "email=%00@example.com"])
def test_nul_characters_in_filters_answer_422(
    client: TestClient[Litestar], tenant: Tenant, query: str
) -> None:
    assert_problem(client.get(f"/contacts?{query}", headers=tenant.viewer), 422)
