"""Query parameters to the filter language."""

from __future__ import annotations

import pytest

from crm_bulk.contacts.query_filters import filter_from_query
from crm_bulk.errors import ValidationError


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        ([("company", "Acme")], {"company": {"eq": "Acme"}}),
        ([("tags.contains", "vip")], {"tags": {"contains": "vip"}}),
        ([("company.in", "Acme,Globex")], {"company": {"in": ["Acme", "Globex"]}}),
        ([("company.in", "Acme"), ("company.in", "Globex")], {"company": {"in": ["Acme", "Globex"]}}),
        ([("phone.is_null", "TRUE")], {"phone": {"is_null": True}}),
        ([("id.gt", "10")], {"id": {"gt": 10}}),
        ([("id.in", "1,2")], {"id": {"in": [1, 2]}}),
        ([("custom_fields.plan", "gold")], {"custom_fields.plan": {"eq": "gold"}}),
        ([("custom_fields.seats.gte", "3")], {"custom_fields.seats": {"gte": 3}}),
        ([("custom_fields.ratio.lt", "0.5")], {"custom_fields.ratio": {"lt": 0.5}}),
        ([("custom_fields.code.gt", "B7")], {"custom_fields.code": {"gt": "B7"}}),
        ([("custom_fields.seats", "3")], {"custom_fields.seats": {"eq": "3"}}),
        ([("created_at.gte", "2026-01-01T00:00:00Z")], {"created_at": {"gte": "2026-01-01T00:00:00Z"}}),
        ([("limit", "5"), ("cursor", "x")], {}),
        (
            [("filter", '{"company": {"eq": "A"}}'), ("tags.contains", "v")],
            {"company": {"eq": "A"}, "tags": {"contains": "v"}},
        ),
        ([("company.like", "x")], {"company.like": {"eq": "x"}}),
    ],
)
def test_query_parameters_become_filter_conditions(items: list[tuple[str, str]], expected: object) -> None:
    assert filter_from_query(items) == expected


@pytest.mark.parametrize(
    ("items", "field"),
    [
        ([("company", "A"), ("company", "B")], "company"),
        ([("phone.is_null", "maybe")], "phone.is_null"),
        ([("id", "ten")], "id.eq"),
        ([("filter", "[1]")], "filter"),
        ([("filter", "{")], "filter"),
        ([("filter", '{"company": {"eq": "A"}}'), ("company", "B")], "company"),
    ],
)
def test_contradictory_or_malformed_parameters_are_refused(items: list[tuple[str, str]], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        filter_from_query(items)
    assert caught.value.field == field
