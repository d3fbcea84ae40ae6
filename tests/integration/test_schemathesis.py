"""Property-based conformance of every operation in `/schema/openapi.json`, authenticated as an admin.

Schemathesis generates valid and invalid requests for each operation (a bounded number of examples, so CI
stays fast); every answer must be below 500 and must match the schema: a documented status, content type,
headers and body. Requests the schema calls valid must be accepted (`positive_data_acceptance`): 2xx, or
for each operation only the refusals a schema cannot express (`ACCEPTED`), each with its reason. Requests
go through Litestar's test client, whose lifespan this module controls (chDB hosts one data path per process,
so the store must close before the next module opens its own).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, assume, settings
from litestar import Litestar
from litestar.testing import TestClient
from schemathesis import checks
from schemathesis.config import SchemathesisConfig

from crm_bulk.api import create_app
from tests.integration.api_support import (
    Tenant,
    end_open_jobs,
    make_settings,
    make_tenant,
    newest_account_id,
    running_client,
)

pytestmark = [pytest.mark.postgres, pytest.mark.clickhouse]

MAX_EXAMPLES = int(os.environ.get("CRM_BULK_SCHEMATHESIS_EXAMPLES", "15"))
BASE_URL = "http://testserver.local"
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
    checks.positive_data_acceptance,
]

# What a valid request may answer besides 2xx, per operation: what no schema can say (whether an id exists,
# a conflict with stored state, the strength of a password, a cursor handed out earlier, what the Rust
# kernels make of an email or a phone number). Operations not listed are held to 2xx, 404 and 409.
NOT_FOUND = ["404"]  # generated ids name nothing in the caller's account
ACCEPTED: dict[str, list[str]] = {
    # Credentials the schema cannot know (401), and the throttle on repeated failures (429).
    "POST /auth/login": ["401", "429"],
    # The email exists (409); zxcvbn judges the password weak, or the account name is blank (422).
    "POST /auth/register": ["409", "422"],
    # Same for a new member; 409 when the email is taken.
    "POST /accounts/me/members": ["409", "422"],
    # The account's last admin cannot be demoted or removed (409).
    "PATCH /accounts/me/members/{user_id}": [*NOT_FOUND, "409"],
    "DELETE /accounts/me/members/{user_id}": [*NOT_FOUND, "409"],
    # A cursor is checked against what the API handed out; filter values against the filter language.
    "GET /contacts": ["422"],
    # Email and phone are judged by the Rust kernels (syntax, a dialable number), custom fields by size and
    # depth, text for NUL characters (422); the normalised email exists (409).
    "POST /contacts": ["409", "422"],
    "PUT /contacts/{contact_id}": [*NOT_FOUND, "409", "422"],
    "PATCH /contacts/{contact_id}": [*NOT_FOUND, "409", "422"],
    # Cursors again (422).
    "GET /bulk-actions": ["422"],
    "GET /bulk-actions/{job_id}/logs": [*NOT_FOUND, "422"],
    # Which parts an action needs depends on the action; a filter must compile; scheduled_for must be in
    # the future (422). An Idempotency-Key used with another body (409).
    "POST /bulk-actions": ["409", "422"],
    # The body must read as CSV, NDJSON or XLSX (422); an Idempotency-Key used with another body (409).
    "POST /bulk-actions/import": ["409", "422"],
    "POST /bulk-actions/import/preview": ["422"],
    # A job that has ended cannot be cancelled (409).
    "POST /bulk-actions/{job_id}/cancel": [*NOT_FOUND, "409"],
    # A webhook URL must resolve to public addresses (422); an account has at most 20 endpoints (409).
    "POST /accounts/me/webhooks": ["409", "422"],
    "PATCH /accounts/me/webhooks/{endpoint_id}": [*NOT_FOUND, "422"],
    # Cursors (422).
    "GET /accounts/me/webhooks/{endpoint_id}/deliveries": [*NOT_FOUND, "422"],
}
# The deployment's ceiling on account limits is at its static maximum in these tests (api_support), so
# `PATCH /accounts/me/limits` is held to 2xx: every limit the schema allows is accepted.
CONFIG = SchemathesisConfig.from_dict(
    {
        "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", *NOT_FOUND, "409"]}},
        "operations": [
            {
                "include-name": name,
                "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", *statuses]}},
            }
            for name, statuses in ACCEPTED.items()
        ],
    }
)


@pytest.fixture(scope="module")
def client(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient[Litestar]]:
    yield from running_client(make_settings(tmp_path_factory.mktemp("api-schemathesis")), database_url)


@pytest.fixture(scope="module", autouse=True)
def no_jobs_left_behind(database_url: str) -> Iterator[None]:
    """Jobs this module leaves unfinished are cancelled at its end (the database is shared by the session)."""
    before = newest_account_id(database_url)
    yield
    end_open_jobs(database_url, before)


@pytest.fixture(scope="module")
def tenant(client: TestClient[Litestar]) -> Tenant:
    """An admin whose account has room for every generated request, a contact and a job to find."""
    made = make_tenant(client, "Fuzzed")
    client.patch("/accounts/me/limits", json={"api_requests_per_minute": 1_000_000}, headers=made.admin)
    client.post("/contacts", json={"email": "fuzz@example.com", "company": "Acme"}, headers=made.admin)
    client.post("/bulk-actions", json={"action": "delete", "target": {"ids": [1]}}, headers=made.admin)
    return made


def _document() -> dict[str, Any]:
    """The OpenAPI document, generated without any backend (collection needs it before fixtures exist)."""
    settings = make_settings(Path(tempfile.mkdtemp(prefix="crm-bulk-openapi-")))
    app = create_app(settings.resolved(database_url="postgresql://-"))
    document: dict[str, Any] = app.openapi_schema.to_schema()
    return document


# Uploads are text, or bytes for a workbook; schemathesis sends generated strings or bytes as the body.
schemathesis.serializer.alias("application/x-ndjson", "text/plain")
schemathesis.serializer.alias(
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", "application/octet-stream"
)
DOCUMENT = _document()
schema = schemathesis.openapi.from_dict(DOCUMENT, config=CONFIG)


def test_the_served_document_is_the_one_tested(client: TestClient[Litestar]) -> None:
    served = client.get("/schema/openapi.json")
    assert served.status_code == 200
    assert served.json() == DOCUMENT
    assert DOCUMENT["openapi"].startswith("3.1")
    assert client.get("/schema").headers["content-type"].startswith("text/html")


def _restore(database_url: str, tenant: Tenant) -> None:
    """Undo what generated requests may have done to the caller itself (role, limits)."""
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "UPDATE memberships SET role = 'admin' WHERE user_id = %s AND account_id = %s",
            [tenant.admin_id, tenant.account_id],
        )
        conn.execute(
            "UPDATE accounts SET api_requests_per_minute = 1000000 WHERE id = %s", [tenant.account_id]
        )


def _send(client: TestClient[Litestar], kwargs: dict[str, Any]) -> Any:
    body: dict[str, Any] = {}
    if "json" in kwargs:
        body["json"] = kwargs["json"]
    elif "data" in kwargs:
        data = kwargs["data"]
        body["content"] = data.encode() if isinstance(data, str) else data
    return client.request(
        kwargs["method"], kwargs["url"], headers=kwargs["headers"], params=kwargs.get("params"), **body
    )


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_conforms_to_the_schema(
    case: Any, client: TestClient[Litestar], tenant: Tenant, database_url: str
) -> None:
    # The caller removing itself (allowed once a generated request has made another member admin) would
    # leave every later case with a dead token; what a removal answers is still tested on the other ids.
    target = str((case.path_parameters or {}).get("user_id"))
    assume(not (case.method == "DELETE" and target == str(tenant.admin_id)))
    kwargs = case.as_transport_kwargs(base_url=BASE_URL, headers=tenant.admin)
    response = _send(client, kwargs)
    try:
        case.validate_response(response, checks=CHECKS, transport_kwargs=kwargs)
    finally:
        if case.path.startswith("/accounts/me"):
            _restore(database_url, tenant)
