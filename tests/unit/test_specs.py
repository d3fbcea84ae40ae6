"""Bulk action requests: decoding, structural validation, the stored forms."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest

from crm_bulk.actions.specs import (
    MAX_TARGET_IDS,
    BulkActionRequest,
    action_params,
    decode_request,
    params_from_json,
    spec_from_json,
    spec_json,
    validate_request,
)
from crm_bulk.errors import ValidationError

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def _decode(body: object) -> BulkActionRequest:
    return decode_request(msgspec.json.encode(body), now=NOW)


@pytest.mark.parametrize(
    "body",
    [
        {
            "action": "update",
            "target": {"filter": {"company": {"eq": "Acme"}}},
            "changes": {
                "set": {"company": "Acme Inc"},
                "unset": ["phone"],
                "custom_fields": {"plan": "gold"},
                "remove_custom_fields": ["legacy"],
            },
            "scheduled_for": "2026-12-01T09:00:00Z",
        },
        {"action": "update", "target": {"ids": [1, 2, 3]}, "changes": {"unset": ["job_title"]}},
        {"action": "delete", "target": {"all": True}},
        {"action": "add_tags", "target": {"ids": [5]}, "tags": ["vip"]},
        {"action": "remove_tags", "target": {"filter": {"tags": {"contains": "old"}}}, "tags": ["old"]},
        {
            "action": "import",
            "records": [{"email": "a@example.com", "tags": ["x"], "custom_fields": {"k": 1}}],
        },
    ],
)
def test_valid_requests_decode(body: dict[str, object]) -> None:
    request = _decode(body)
    assert request.action == body["action"]


def test_import_defaults_on_duplicate_to_skip() -> None:
    request = _decode({"action": "import", "records": [{"email": "a@example.com"}]})
    assert request.on_duplicate == "skip"
    update = _decode({"action": "import", "records": [{"email": "a@x.io"}], "on_duplicate": "update"})
    assert update.on_duplicate == "update"


def test_tags_become_a_sorted_set() -> None:
    request = _decode({"action": "add_tags", "target": {"ids": [1]}, "tags": ["b", "a", "b", "Z"]})
    assert request.tags == ["Z", "a", "b"]


@pytest.mark.parametrize(
    ("body", "field", "code"),
    [
        ({"action": "merge", "target": {"all": True}}, "action", "invalid_value"),
        ({"target": {"all": True}}, "action", "missing"),
        ({"action": "delete"}, "target", "missing"),
        ({"action": "delete", "target": {}}, "target", "invalid_value"),
        ({"action": "delete", "target": {"all": True, "ids": [1]}}, "target", "invalid_value"),
        ({"action": "delete", "target": {"all": False}}, "target.all", "invalid_value"),
        ({"action": "delete", "target": {"ids": []}}, "target.ids", "invalid_value"),
        ({"action": "delete", "target": {"ids": [1, 0]}}, "target.ids", "invalid_value"),
        ({"action": "delete", "target": {"ids": ["1"]}}, "target.ids[0]", "invalid_type"),
        ({"action": "delete", "target": {"filter": {}}}, "target.filter", "empty_filter"),
        (
            {"action": "delete", "target": {"filter": {"colour": {"eq": "red"}}}},
            "target.filter.colour",
            "unknown_field",
        ),
        (
            {"action": "delete", "target": {"filter": {"company": {"like": "A%"}}}},
            "target.filter.company.like",
            "unknown_operator",
        ),
        ({"action": "delete", "target": {"all": True}, "surprise": 1}, "surprise", "unknown_field"),
        ({"action": "delete", "target": {"all": True}, "tags": ["x"]}, "tags", "not_allowed"),
        (
            {"action": "delete", "target": {"all": True}, "changes": {"unset": ["phone"]}},
            "changes",
            "not_allowed",
        ),
        ({"action": "update", "target": {"all": True}}, "changes", "missing"),
        ({"action": "update", "target": {"all": True}, "changes": {}}, "changes", "missing"),
        (
            {"action": "update", "target": {"all": True}, "changes": {"set": {"id": "7"}}},
            "changes.set.id",
            "unknown_field",
        ),
        (
            {"action": "update", "target": {"all": True}, "changes": {"set": {"phone": None}}},
            "changes.set",
            "invalid_type",
        ),
        (
            {"action": "update", "target": {"all": True}, "changes": {"unset": ["email"]}},
            "changes.unset",
            "not_nullable",
        ),
        (
            {"action": "update", "target": {"all": True}, "changes": {"unset": ["tags"]}},
            "changes.unset",
            "unknown_field",
        ),
        (
            {
                "action": "update",
                "target": {"all": True},
                "changes": {"set": {"company": "A"}, "unset": ["company"]},
            },
            "changes.unset",
            "conflict",
        ),
        (
            {
                "action": "update",
                "target": {"all": True},
                "changes": {"custom_fields": {"a": 1}, "remove_custom_fields": ["a"]},
            },
            "changes.remove_custom_fields",
            "conflict",
        ),
        (
            {"action": "update", "target": {"all": True}, "changes": {"remove_custom_fields": [""]}},
            "changes.remove_custom_fields",
            "invalid_value",
        ),
        (
            {"action": "update", "target": {"all": True}, "changes": {"sett": {}}},
            "changes.sett",
            "unknown_field",
        ),
        ({"action": "add_tags", "target": {"all": True}}, "tags", "missing"),
        ({"action": "add_tags", "target": {"all": True}, "tags": []}, "tags", "missing"),
        ({"action": "add_tags", "target": {"all": True}, "tags": ["  "]}, "tags", "invalid_value"),
        ({"action": "add_tags", "target": {"all": True}, "tags": ["x" * 101]}, "tags", "too_long"),
        (
            {"action": "add_tags", "target": {"all": True}, "tags": [f"t{i}" for i in range(101)]},
            "tags",
            "too_many",
        ),
        ({"action": "import"}, "records", "missing"),
        ({"action": "import", "records": []}, "records", "missing"),
        (
            {"action": "import", "records": [{"email": "a@b.co"}], "target": {"all": True}},
            "target",
            "not_allowed",
        ),
        (
            {"action": "import", "records": [{"email": "a@b.co", "fax": "1"}]},
            "records[0].fax",
            "unknown_field",
        ),
        (
            {"action": "import", "records": [{"email": "a@b.co"}], "on_duplicate": "merge"},
            "on_duplicate",
            "invalid_value",
        ),
        ({"action": "delete", "target": {"ids": [1]}, "on_duplicate": "skip"}, "on_duplicate", "not_allowed"),
        (
            {"action": "delete", "target": {"all": True}, "scheduled_for": "2026-01-01T00:00:00Z"},
            "scheduled_for",
            "not_future",
        ),
        (
            {"action": "delete", "target": {"all": True}, "scheduled_for": "2026-12-01T00:00:00"},
            "scheduled_for",
            "invalid_type",
        ),
    ],
)
def test_invalid_requests_name_field_and_code(body: dict[str, object], field: str, code: str) -> None:
    with pytest.raises(ValidationError) as caught:
        _decode(body)
    assert (caught.value.field, caught.value.code) == (field, code)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (
            {"action": "update", "target": {"all": True}, "changes": {"set": {"first_name": "a\x00b"}}},
            "changes",
        ),
        ({"action": "add_tags", "target": {"all": True}, "tags": ["\x00"]}, "tags"),
        ({"action": "delete", "target": {"filter": {"company": {"eq": "\x00"}}}}, "target"),
        (
            {
                "action": "import",
                "records": [{"email": "a@b.co"}, {"email": "c@d.co", "custom_fields": {"k": "\x00"}}],
            },
            "records[1]",
        ),
    ],
)
def test_nul_characters_are_refused_where_they_occur(body: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        _decode(body)
    assert (caught.value.field, caught.value.code) == (field, "invalid_value")


def test_malformed_json_is_a_validation_error() -> None:
    with pytest.raises(ValidationError) as caught:
        decode_request(b'{"action": "delete"', now=NOW)
    assert caught.value.code == "malformed_json"


def test_ids_are_capped_at_one_million() -> None:
    ok = _decode({"action": "delete", "target": {"ids": list(range(1, MAX_TARGET_IDS + 1))}})
    assert ok.target is not None and ok.target.ids is not None and len(ok.target.ids) == MAX_TARGET_IDS
    with pytest.raises(ValidationError) as caught:
        _decode({"action": "delete", "target": {"ids": list(range(1, MAX_TARGET_IDS + 2))}})
    assert caught.value.field == "target.ids"


def test_streamed_import_needs_no_records_but_refuses_inline_ones() -> None:
    streamed = validate_request(BulkActionRequest(action="import"), streamed=True, now=NOW)
    assert streamed.on_duplicate == "skip"
    with pytest.raises(ValidationError):
        validate_request(BulkActionRequest(action="import"), now=NOW)


def test_spec_and_params_round_trip() -> None:
    request = _decode(
        {
            "action": "update",
            "target": {"ids": [3, 1]},
            "changes": {"set": {"first_name": "Ada"}, "custom_fields": {"n": {"deep": [1, 2]}}},
        }
    )
    assert spec_from_json(spec_json(request)) == request
    params = params_from_json(action_params(request))
    assert params.changes == request.changes
    assert params.tags is None and params.on_duplicate is None
    # The stored parameters never carry the target.
    assert b"target" not in action_params(request)
