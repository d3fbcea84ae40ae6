"""The OpenAPI document states the checks the API makes: bounds, formats, enums, required and refused members,
from the same declarations the handlers validate with; and the query parameters it lists per operation are
the ones the unknown-parameter rule lets through."""

from __future__ import annotations

from typing import Any

import pytest
from litestar import Litestar

from crm_bulk.actions.specs import MAX_TARGET_IDS, TAG_MAX_CHARS
from crm_bulk.api import create_app
from crm_bulk.api.query_params import declared_query_parameters
from crm_bulk.auth.limits import MAX_ENTITIES_PER_SECOND, MAX_REQUESTS_PER_MINUTE
from crm_bulk.contacts import repository as contacts
from crm_bulk.jobs import repository as jobs
from crm_bulk.settings import Settings

MAX_BIGINT = 2**63 - 1


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Litestar:
    settings = Settings(data_dir=tmp_path_factory.mktemp("openapi"))
    return create_app(settings.resolved(database_url="postgresql://-"))


@pytest.fixture(scope="module")
def document(app: Litestar) -> dict[str, Any]:
    return app.openapi_schema.to_schema()


def _parameter(document: dict[str, Any], method: str, path: str, name: str) -> dict[str, Any]:
    parameters = document["paths"][path][method]["parameters"]
    found: dict[str, Any] = next(p for p in parameters if p["name"] == name)
    return found


def _component(document: dict[str, Any], name: str) -> dict[str, Any]:
    schema: dict[str, Any] = document["components"]["schemas"][name]
    return schema


def _variant(schema: dict[str, Any]) -> dict[str, Any]:
    """The non-null alternative of an optional member."""
    options = [s for s in schema.get("anyOf", [schema]) if s.get("type") != "null"]
    assert len(options) == 1, schema
    variant: dict[str, Any] = options[0]
    return variant


@pytest.mark.parametrize(
    ("operation", "name", "bounds"),
    [
        (("get", "/contacts"), "limit", (1, contacts.MAX_PAGE)),
        (("get", "/bulk-actions"), "limit", (1, jobs.MAX_PAGE)),
        (("get", "/bulk-actions/{job_id}/logs"), "entity_id", (1, MAX_BIGINT)),
        (("delete", "/accounts/me/members/{user_id}"), "user_id", (1, MAX_BIGINT)),
    ],
)
def test_parameter_bounds_are_the_declared_integers(
    document: dict[str, Any], operation: tuple[str, str], name: str, bounds: tuple[int, int]
) -> None:
    schema = _parameter(document, *operation, name)["schema"]
    assert (schema["minimum"], schema["maximum"]) == bounds
    assert type(schema["maximum"]) is int  # 2**63 - 1 survives only as an integer


@pytest.mark.parametrize(
    ("method", "path", "name", "values"),
    [
        ("get", "/bulk-actions", "status", {"scheduled", "queued", "running", "completed", "cancelled"}),
        ("get", "/bulk-actions/{job_id}/logs", "outcome", {"succeeded", "failed", "skipped"}),
        ("post", "/bulk-actions/import", "on_duplicate", {"skip", "update"}),
    ],
)
def test_enumerated_parameters_list_their_values(
    document: dict[str, Any], method: str, path: str, name: str, values: set[str]
) -> None:
    assert values <= set(_parameter(document, method, path, name)["schema"]["enum"])


def test_formats(document: dict[str, Any]) -> None:
    for component in ("ContactInput", "ContactPatch", "RegisterRequest", "LoginRequest", "MemberCreate"):
        assert _component(document, component)["properties"]["email"]["format"] == "email", component
    request = _component(document, "BulkActionRequest")["properties"]
    assert _variant(request["scheduled_for"])["format"] == "date-time"
    assert _parameter(document, "get", "/bulk-actions/{job_id}", "job_id")["schema"]["format"] == "uuid"
    assert _parameter(document, "get", "/contacts", "created_at.gte")["schema"]["format"] == "date-time"


def test_every_json_request_body_refuses_unknown_members(document: dict[str, Any]) -> None:
    bodies = 0
    for path, item in document["paths"].items():
        for method, operation in item.items():
            content = operation.get("requestBody", {}).get("content", {})
            if "application/json" not in content:
                continue
            ref = content["application/json"]["schema"]["$ref"]
            schema = _component(document, ref.rsplit("/", 1)[-1])
            assert schema["additionalProperties"] is False, (method, path)
            bodies += 1
    assert bodies >= 10


def test_body_bounds_enums_and_required_members(document: dict[str, Any]) -> None:
    tags = _component(document, "ContactInput")["properties"]["tags"]
    assert tags["items"] == {"type": "string", "minLength": 1, "maxLength": TAG_MAX_CHARS}
    ids = _variant(_component(document, "Target")["properties"]["ids"])
    assert (ids["minItems"], ids["maxItems"], ids["items"]["minimum"]) == (1, MAX_TARGET_IDS, 1)
    request = _component(document, "BulkActionRequest")
    assert set(request["properties"]["action"]["enum"]) == {
        "update",
        "delete",
        "add_tags",
        "remove_tags",
        "import",
    }
    assert set(_variant(request["properties"]["on_duplicate"])["enum"]) == {"skip", "update"}
    assert request["required"] == ["action"]
    assert set(_component(document, "MemberCreate")["properties"]["role"]["enum"]) == {
        "admin",
        "editor",
        "viewer",
    }
    assert sorted(_component(document, "RegisterRequest")["required"]) == [
        "account_name",
        "email",
        "password",
    ]
    limits = _component(document, "LimitsUpdate")["properties"]
    assert _variant(limits["api_requests_per_minute"])["maximum"] == MAX_REQUESTS_PER_MINUTE
    assert _variant(limits["entities_per_second"])["maximum"] == MAX_ENTITIES_PER_SECOND


def test_the_document_lists_exactly_the_query_parameters_the_rule_allows(
    app: Litestar, document: dict[str, Any]
) -> None:
    allowed = dict(declared_query_parameters(app))
    compared = 0
    for route in app.routes:
        item = document["paths"].get(route.path_format)
        if item is None:
            continue
        for method, (handler, _) in getattr(route, "route_handler_map", {}).items():
            operation = item.get(method.lower())
            if operation is None:
                continue
            listed = {p["name"] for p in operation.get("parameters", []) if p["in"] == "query"}
            assert listed == allowed[handler.fn], (method, route.path_format)
            compared += 1
    assert compared >= 25


def test_every_operation_documents_the_422_of_an_undeclared_query_parameter(document: dict[str, Any]) -> None:
    missing = [
        f"{method.upper()} {path}"
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if "422" not in operation["responses"]
    ]
    assert missing == []
