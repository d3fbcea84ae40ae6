"""Webhook endpoints over HTTP against real PostgreSQL: admins register (the secret shown once), list,
change and remove endpoints, read the delivery log and ask for a redelivery; editors and viewers are
refused, other accounts' ids are not found, internal targets, bad URLs and unknown events answer 422."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
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
)

pytestmark = [pytest.mark.postgres, pytest.mark.clickhouse]

HOOKS = "/accounts/me/webhooks"
# Loopback is allowed here (as a test receiver would be); nothing else that is internal.
LOOPBACK_URL = "http://127.0.0.1:9/hook"


@pytest.fixture(scope="module")
def client(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient[Litestar]]:
    settings = make_settings(tmp_path_factory.mktemp("api-hooks"), webhook_allowed_networks="127.0.0.0/8")
    yield from running_client(settings, database_url)


@pytest.fixture(scope="module", autouse=True)
def nothing_left_behind(database_url: str) -> Iterator[None]:
    """This module's jobs end and its endpoints are disabled, so no later deliverer sends to them."""
    before = newest_account_id(database_url)
    yield
    end_open_jobs(database_url, before)
    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE webhook_endpoints SET enabled = false WHERE account_id > %s", [before])


@pytest.fixture(scope="module")
def tenant(client: TestClient[Litestar]) -> Tenant:
    return make_tenant(client, "Hooks")


@pytest.fixture(scope="module")
def other(client: TestClient[Litestar]) -> Tenant:
    return make_tenant(client, "Elsewhere")


def _register(client: TestClient[Litestar], tenant: Tenant, **body: Any) -> dict[str, Any]:
    payload = {"url": LOOPBACK_URL, "events": ["job.completed", "job.failed"]} | body
    answer = client.post(HOOKS, json=payload, headers=tenant.admin)
    assert answer.status_code == 201, answer.text
    created: dict[str, Any] = answer.json()
    return created


def test_an_admin_registers_an_endpoint_and_sees_its_secret_once(
    client: TestClient[Litestar], tenant: Tenant
) -> None:
    created = _register(client, tenant, description="billing", events=["job.failed", "job.started"])
    assert created["secret"].startswith("whsec_")
    assert (created["url"], created["description"], created["enabled"]) == (LOOPBACK_URL, "billing", True)
    assert created["events"] == ["job.started", "job.failed"]
    listed = client.get(HOOKS, headers=tenant.admin)
    assert listed.status_code == 200
    assert created["id"] in [e["id"] for e in listed.json()]
    one = client.get(f"{HOOKS}/{created['id']}", headers=tenant.admin)
    assert one.status_code == 200
    for shown in (listed, one):
        assert "secret" not in shown.text
        assert created["secret"] not in shown.text
    # A second registration gets a secret of its own.
    assert _register(client, tenant)["secret"] != created["secret"]


@pytest.mark.parametrize("role", ["editor", "viewer"])
def test_editors_and_viewers_are_refused(client: TestClient[Litestar], tenant: Tenant, role: str) -> None:
    endpoint = _register(client, tenant)
    headers = tenant.headers[role]
    path = f"{HOOKS}/{endpoint['id']}"
    answers = [
        client.post(HOOKS, json={"url": LOOPBACK_URL, "events": ["job.failed"]}, headers=headers),
        client.get(HOOKS, headers=headers),
        client.get(path, headers=headers),
        client.patch(path, json={"enabled": False}, headers=headers),
        client.delete(path, headers=headers),
        client.get(f"{path}/deliveries", headers=headers),
        client.post(f"{path}/deliveries/1/redeliver", headers=headers),
    ]
    for answer in answers:
        assert_problem(answer, 403)
    assert client.get(path, headers=tenant.admin).json()["enabled"] is True


def test_another_accounts_endpoint_is_not_found(
    client: TestClient[Litestar], tenant: Tenant, other: Tenant
) -> None:
    mine = _register(client, tenant)
    path = f"{HOOKS}/{mine['id']}"
    for answer in (
        client.get(path, headers=other.admin),
        client.patch(path, json={"enabled": False}, headers=other.admin),
        client.delete(path, headers=other.admin),
        client.get(f"{path}/deliveries", headers=other.admin),
        client.post(f"{path}/deliveries/1/redeliver", headers=other.admin),
        client.get(f"{HOOKS}/{uuid.uuid4()}", headers=tenant.admin),
    ):
        assert "not found" in assert_problem(answer, 404)["detail"]
    assert mine["id"] not in client.get(HOOKS, headers=other.admin).text
    assert client.get(path, headers=tenant.admin).json()["enabled"] is True


@pytest.mark.parametrize(
    ("url", "detail"),
    [
        ("http://10.0.0.1/hook", "a private address"),
        ("http://169.254.169.254/latest/meta-data/", "link-local (cloud metadata)"),
        ("http://100.64.1.1/", "carrier-grade NAT"),
        ("http://[::1]:8080/", "a loopback address"),
        ("http://no-such-host.invalid/", "does not resolve"),
        ("http://224.0.0.1/", "multicast"),
        ("ftp://93.184.215.14/", "http:// or https://"),
        ("https://user:secret@93.184.215.14/", "credentials"),
        ("hook", "http:// or https://"),
    ],
)
def test_internal_targets_and_bad_urls_answer_422(
    client: TestClient[Litestar], tenant: Tenant, url: str, detail: str
) -> None:
    answer = client.post(HOOKS, json={"url": url, "events": ["job.failed"]}, headers=tenant.admin)
    problem = assert_problem(answer, 422)
    assert detail in problem["detail"]
    assert problem["errors"][0]["field"] == "url"
    assert url not in [e["url"] for e in client.get(HOOKS, headers=tenant.admin).json()]


@pytest.mark.parametrize(
    "body",
    [
        {"url": LOOPBACK_URL, "events": ["job.exploded"]},
        {"url": LOOPBACK_URL, "events": []},
        {"url": LOOPBACK_URL},
        {"url": LOOPBACK_URL, "events": "job.failed"},
        {"url": LOOPBACK_URL, "events": ["job.failed"], "secret": "whsec_mine"},
        {"events": ["job.failed"]},
    ],
)
def test_bad_events_and_bodies_answer_422(
    client: TestClient[Litestar], tenant: Tenant, body: dict[str, Any]
) -> None:
    assert_problem(client.post(HOOKS, json=body, headers=tenant.admin), 422)


def test_malformed_json_answers_400(client: TestClient[Litestar], tenant: Tenant) -> None:
    answer = client.post(HOOKS, content=b"{nope", headers=tenant.admin | {"content-type": "application/json"})
    assert_problem(answer, 400)


def test_an_admin_changes_and_removes_an_endpoint(client: TestClient[Litestar], tenant: Tenant) -> None:
    endpoint = _register(client, tenant)
    path = f"{HOOKS}/{endpoint['id']}"
    changed = client.patch(
        path,
        json={"url": "http://127.0.0.2:9/new", "events": ["job.cancelled"], "enabled": False},
        headers=tenant.admin,
    )
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert (body["url"], body["events"], body["enabled"]) == (
        "http://127.0.0.2:9/new",
        ["job.cancelled"],
        False,
    )
    assert "secret" not in body
    assert_problem(client.patch(path, json={"url": "http://192.168.1.1/"}, headers=tenant.admin), 422)
    assert_problem(client.patch(path, json={"events": ["job.nope"]}, headers=tenant.admin), 422)
    assert client.get(path, headers=tenant.admin).json()["url"] == "http://127.0.0.2:9/new"
    assert client.delete(path, headers=tenant.admin).status_code == 204
    assert_problem(client.get(path, headers=tenant.admin), 404)
    assert_problem(client.delete(path, headers=tenant.admin), 404)


def test_the_delivery_log_pages_and_a_delivery_is_sent_again(
    client: TestClient[Litestar], other: Tenant
) -> None:
    endpoint = _register(client, other, events=["job.cancelled"])
    path = f"{HOOKS}/{endpoint['id']}"
    jobs = []
    for _ in range(3):
        job = client.post(
            "/bulk-actions",
            json={"action": "add_tags", "target": {"all": True}, "tags": ["x"]},
            headers=other.editor,
        )
        assert job.status_code == 202, job.text
        assert (
            client.post(f"/bulk-actions/{job.json()['id']}/cancel", headers=other.editor).status_code == 200
        )
        jobs.append(job.json()["id"])
    first = client.get(f"{path}/deliveries", params={"limit": 2}, headers=other.admin)
    assert first.status_code == 200, first.text
    page = first.json()
    assert len(page["items"]) == 2 and page["next_cursor"]
    rest = client.get(
        f"{path}/deliveries", params={"limit": 2, "cursor": page["next_cursor"]}, headers=other.admin
    )
    items = page["items"] + rest.json()["items"]
    assert rest.json()["next_cursor"] is None
    assert [i["job_id"] for i in items] == jobs[::-1]  # newest first
    for item in items:
        assert (item["event"], item["status"], item["attempts"]) == ("job.cancelled", "pending", 0)
        assert item["event_id"].startswith("msg_") and item["next_attempt_at"] is not None
        assert item["last_status_code"] is None
    assert len({i["event_id"] for i in items}) == 3

    delivery = items[0]
    again = client.post(f"{path}/deliveries/{delivery['id']}/redeliver", headers=other.admin)
    assert again.status_code == 202, again.text
    assert (again.json()["id"], again.json()["event_id"], again.json()["status"]) == (
        delivery["id"],
        delivery["event_id"],
        "pending",
    )
    # Another endpoint's delivery id is not this endpoint's.
    elsewhere = _register(client, other)
    assert_problem(
        client.post(f"{HOOKS}/{elsewhere['id']}/deliveries/{delivery['id']}/redeliver", headers=other.admin),
        404,
    )
    assert_problem(client.get(f"{path}/deliveries", params={"cursor": "garbage"}, headers=other.admin), 422)
    client.patch(path, json={"enabled": False}, headers=other.admin)
    assert (
        "disabled"
        in assert_problem(
            client.post(f"{path}/deliveries/{delivery['id']}/redeliver", headers=other.admin), 409
        )["detail"]
    )


def test_the_openapi_document_lists_the_webhook_routes(client: TestClient[Litestar]) -> None:
    paths = json.loads(client.get("/schema/openapi.json").text)["paths"]
    assert {f"{HOOKS}", f"{HOOKS}/{{endpoint_id}}", f"{HOOKS}/{{endpoint_id}}/deliveries"} <= set(paths)
    assert f"{HOOKS}/{{endpoint_id}}/deliveries/{{delivery_id}}/redeliver" in paths
