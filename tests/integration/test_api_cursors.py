"""Every paged route checks its cursor before any query: a tampered, forged or foreign cursor answers 422
problem+json on `cursor`, never 500; the cursors the routes hand out keep paging."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient

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
from tests.integration.report_support import created_job, drive_job

pytestmark = [pytest.mark.postgres, pytest.mark.clickhouse]


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


UUID_TEXT = "4a5e2b7e-3e0b-4b8f-9a1e-2c3d4e5f6a7b"
# Cursors no route made, by kind of tampering: as sent, or (bytes) JSON whose `{listing}` and `{scope}`
# become the route's own before it is encoded.
TAMPERED: dict[str, str | bytes] = {
    "garbage": "%%%not base64!!",
    "one-char": "a",
    "too-long": "A" * 4000,
    "not-json": b64(b"hello"),
    "json-object": b64(b'{"id": 1}'),
    "json-number": b64(b"12"),
    "deep-nesting": b64(b"[" * 3000),
    "nesting": b64(b"[" * 300 + b"]" * 300),
    "wrong-listing": b'["elsewhere","{scope}",1]',
    "bool-for-number": b'["{listing}","{scope}",true,true,true]',
    "string-for-number": b'["{listing}","{scope}","1","2","3"]',
    "float-for-number": b'["{listing}","{scope}",1.5,2.5,3.5]',
    "negative": b'["{listing}","{scope}","failed",-1,-1]',
    "huge": b'["{listing}","{scope}","failed",99999999999999999999999,1e400]',
    "too-few-fields": b'["{listing}","{scope}"]',
}
# Right listing and scope, wrong types or ranges for each route's own position.
POSITIONS = {
    "jobs": [
        b'["2026-01-01T00:00:00", "%s"]' % UUID_TEXT.encode(),  # naive datetime
        b'["not a date", "%s"]' % UUID_TEXT.encode(),
        b'["2026-01-01T00:00:00Z", "not-a-uuid"]',
        b'["2026-01-01T00:00:00Z", 17]',
        b'["99999-01-01T00:00:00Z", "%s"]' % UUID_TEXT.encode(),
        b'[-62135596800, "%s"]' % UUID_TEXT.encode(),
    ],
    "contacts": [b"[0]", b"[-5]", b"[9223372036854775808]", b'["12"]', b"[12.0]", b"[true]", b"[12, 13]"],
    "logs": [
        b'["cancelled", 0, 0]',
        b'["failed", 4294967296, 0]',
        b'["failed", 0, -1]',
        b'["failed", 0]',
        b"[0, 0, 0]",
        b'["failed", null, 0]',
        b'["x\'; DROP TABLE entity_outcomes; --", 0, 0]',
    ],
}


@dataclass(frozen=True)
class Listing:
    """A paged route of a tenant with more than one page, and the scope its cursors carry."""

    name: str
    path: str
    scope: str
    params: dict[str, Any]


@pytest.fixture(scope="module")
def client(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient[Litestar]]:
    before = newest_account_id(database_url)
    yield from running_client(make_settings(tmp_path_factory.mktemp("api-cursors")), database_url)
    end_open_jobs(database_url, before)


def _tenant_with_pages(client: TestClient[Litestar], database_url: str, name: str) -> tuple[Tenant, str]:
    """A tenant with three contacts and a finished job over them (three log rows); the job's id."""
    tenant = make_tenant(client, name)
    for _ in range(3):
        made = client.post("/contacts", json={"email": unique_email("page")}, headers=tenant.editor)
        assert made.status_code == 201, made.text
    job_id = created_job(
        client, tenant.editor, {"action": "add_tags", "target": {"all": True}, "tags": ["paged"]}
    )
    drive_job(client, database_url, job_id)
    created_job(client, tenant.editor, {"action": "delete", "target": {"ids": [1]}})
    return tenant, job_id


@pytest.fixture(scope="module")
def own(client: TestClient[Litestar], database_url: str) -> tuple[Tenant, str]:
    return _tenant_with_pages(client, database_url, "Cursors")


@pytest.fixture(scope="module")
def stranger(client: TestClient[Litestar], database_url: str) -> tuple[Tenant, str]:
    return _tenant_with_pages(client, database_url, "Strangers")


def _listings(tenant: Tenant, job_id: str) -> list[Listing]:
    account = str(tenant.account_id)
    return [
        Listing("jobs", "/bulk-actions", account, {"limit": 1}),
        Listing("contacts", "/contacts", account, {"limit": 1}),
        Listing("logs", f"/bulk-actions/{job_id}/logs", f"{account}/{job_id}", {"limit": 1}),
    ]


def _rejected(client: TestClient[Litestar], tenant: Tenant, listing: Listing, cursor: str) -> None:
    answer = client.get(listing.path, params=listing.params | {"cursor": cursor}, headers=tenant.viewer)
    problem = assert_problem(answer, 422)
    assert problem["errors"][0]["field"] == "cursor", problem
    assert problem["detail"] or problem["errors"][0]["message"]


def _first_cursor(client: TestClient[Litestar], tenant: Tenant, listing: Listing) -> str:
    page = client.get(listing.path, params=listing.params, headers=tenant.viewer)
    assert page.status_code == 200, page.text
    cursor: str = page.json()["next_cursor"]
    assert cursor
    return cursor


@pytest.mark.parametrize("route", ["jobs", "contacts", "logs"])
@pytest.mark.parametrize("kind", sorted(TAMPERED))
def test_a_tampered_cursor_answers_422(
    client: TestClient[Litestar], own: tuple[Tenant, str], route: str, kind: str
) -> None:
    tenant, job_id = own
    listing = next(item for item in _listings(tenant, job_id) if item.name == route)
    tampered = TAMPERED[kind]
    if isinstance(tampered, bytes):
        raw = tampered.replace(b"{listing}", route.encode()).replace(b"{scope}", listing.scope.encode())
        tampered = b64(raw)
    cursor = tampered
    _rejected(client, tenant, listing, cursor)


@pytest.mark.parametrize(
    ("route", "position"), [(route, p) for route, positions in POSITIONS.items() for p in positions]
)
def test_a_forged_position_answers_422(
    client: TestClient[Litestar], own: tuple[Tenant, str], route: str, position: bytes
) -> None:
    tenant, job_id = own
    listing = next(item for item in _listings(tenant, job_id) if item.name == route)
    head = b'["%s","%s",' % (route.encode(), listing.scope.encode())
    _rejected(client, tenant, listing, b64(head + position.strip()[1:]))


@pytest.mark.parametrize("route", ["jobs", "contacts", "logs"])
def test_another_accounts_cursor_answers_422(
    client: TestClient[Litestar], own: tuple[Tenant, str], stranger: tuple[Tenant, str], route: str
) -> None:
    theirs = next(item for item in _listings(*stranger) if item.name == route)
    cursor = _first_cursor(client, stranger[0], theirs)
    mine = next(item for item in _listings(*own) if item.name == route)
    _rejected(client, own[0], mine, cursor)


def test_another_jobs_logs_cursor_answers_422(
    client: TestClient[Litestar], database_url: str, own: tuple[Tenant, str]
) -> None:
    tenant, job_id = own
    other_job = created_job(
        client, tenant.editor, {"action": "add_tags", "target": {"all": True}, "tags": ["other"]}
    )
    drive_job(client, database_url, other_job)
    (logs,) = [item for item in _listings(tenant, job_id) if item.name == "logs"]
    cursor = _first_cursor(client, tenant, logs)
    (other,) = [item for item in _listings(tenant, other_job) if item.name == "logs"]
    _rejected(client, tenant, other, cursor)


@pytest.mark.parametrize("route", ["jobs", "contacts", "logs"])
def test_the_cursors_a_route_hands_out_page_through_it(
    client: TestClient[Litestar], own: tuple[Tenant, str], route: str
) -> None:
    tenant, job_id = own
    listing = next(item for item in _listings(tenant, job_id) if item.name == route)
    seen: list[Any] = []
    cursor: str | None = None
    while True:
        params = listing.params | ({"cursor": cursor} if cursor else {})
        page = client.get(listing.path, params=params, headers=tenant.viewer)
        assert page.status_code == 200, page.text
        seen += page.json()["items"]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert len(seen) >= 2
    assert len({repr(sorted(item.items())) for item in seen}) == len(seen)
