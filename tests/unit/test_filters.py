"""The filter language compiles to whitelisted SQL with every value bound as a parameter."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from psycopg.types.json import Jsonb

from crm_bulk.actions.filters import compile_filter
from crm_bulk.errors import ValidationError


def _sql(filter_: dict[str, object]) -> tuple[str, list[object]]:
    fragment, params = compile_filter(filter_)
    return fragment.as_string(), params


def _unwrap(params: list[object]) -> list[object]:
    return [p.obj if isinstance(p, Jsonb) else p for p in params]


@pytest.mark.parametrize(
    ("filter_", "sql", "params"),
    [
        ({"company": {"eq": "Acme"}}, '("company" = %s)', ["Acme"]),
        ({"company": {"ne": "Acme"}}, '("company" IS DISTINCT FROM %s)', ["Acme"]),
        ({"company": {"in": ["A", "B"]}}, '("company" = ANY(%s::text[]))', [["A", "B"]]),
        ({"company": {"starts_with": "Ac"}}, '("company" ^@ %s)', ["Ac"]),
        ({"last_name": {"gte": "M"}}, '("last_name" >= %s)', ["M"]),
        ({"job_title": {"is_null": True}}, '("job_title" IS NULL)', []),
        ({"first_name": {"is_null": False}}, '("first_name" IS NOT NULL)', []),
        ({"phone": {"eq": "+14155550100"}}, '("phone_e164" = %s)', ["+14155550100"]),
        ({"email": {"eq": "  Ada@Example.COM "}}, '("email_normalized" = %s)', ["ada@example.com"]),
        ({"email": {"in": ["A@x.io"]}}, '("email_normalized" = ANY(%s::text[]))', [["a@x.io"]]),
        ({"id": {"gt": 10}}, '("id" > %s)', [10]),
        ({"id": {"in": [1, 2]}}, '("id" = ANY(%s::bigint[]))', [[1, 2]]),
        ({"tags": {"contains": "vip"}}, '("tags" @> %s::text[])', [["vip"]]),
        ({"tags": {"contains": ["a", "b"]}}, '("tags" @> %s::text[])', [["a", "b"]]),
        ({"tags": {"in": ["a", "b"]}}, '("tags" && %s::text[])', [["a", "b"]]),
        ({"tags": {"is_null": True}}, '(cardinality("tags") = 0)', []),
        ({"custom_fields.plan": {"eq": "gold"}}, '("custom_fields" @> %s)', [{"plan": "gold"}]),
        ({"custom_fields.plan": {"ne": 3}}, '(NOT ("custom_fields" @> %s))', [{"plan": 3}]),
        (
            {"custom_fields.plan": {"in": ["free", "trial"]}},
            '(("custom_fields" @> %s OR "custom_fields" @> %s))',
            [{"plan": "free"}, {"plan": "trial"}],
        ),
        ({"custom_fields.code": {"starts_with": "X-"}}, '(("custom_fields" ->> %s) ^@ %s)', ["code", "X-"]),
        (
            {"custom_fields.score": {"gt": 50}},
            '(jsonb_typeof("custom_fields" -> %s) = %s AND ("custom_fields" -> %s) > %s)',
            ["score", "number", "score", 50],
        ),
        (
            {"custom_fields.gone": {"is_null": True}},
            "(coalesce(jsonb_typeof(\"custom_fields\" -> %s), 'null') = 'null')",
            ["gone"],
        ),
        (
            {"created_at": {"lt": "2026-01-01T00:00:00Z"}},
            '("created_at" < %s)',
            [datetime(2026, 1, 1, tzinfo=UTC)],
        ),
        ({}, "TRUE", []),
    ],
)
def test_each_field_and_operator_compiles(filter_: dict[str, object], sql: str, params: list[object]) -> None:
    text, bound = _sql(filter_)
    assert text == sql
    assert _unwrap(bound) == params


def test_conditions_are_anded_in_order() -> None:
    text, params = _sql({"company": {"eq": "Acme"}, "tags": {"contains": "vip"}, "id": {"gte": 1, "lt": 9}})
    assert text == '("company" = %s) AND ("tags" @> %s::text[]) AND ("id" >= %s) AND ("id" < %s)'
    assert params == ["Acme", ["vip"], 1, 9]


@pytest.mark.parametrize(
    "value",
    [
        "x'; DROP TABLE contacts; --",
        'Robert"); DELETE FROM contacts WHERE ("1"="1',
        "-- comment",
        "a;b",
        "Zoë 東京 🚀",
        '{"$gt": ""}',
        "%s %(name)s {}",
    ],
)
def test_hostile_values_only_ever_become_parameters(value: str) -> None:
    filters: list[dict[str, object]] = [
        {"company": {"eq": value}},
        {"company": {"in": [value, "other"]}},
        {"last_name": {"starts_with": value}},
        {"tags": {"contains": value}},
        {"custom_fields.plan": {"eq": value}},
        {f"custom_fields.{value}": {"eq": value}},
        {f"custom_fields.{value}": {"starts_with": value}},
    ]
    for filter_ in filters:
        text, params = _sql(filter_)
        assert value not in text
        flattened = str(_unwrap(params))
        assert value.replace("'", "\\'") in flattened or value in flattened


@pytest.mark.parametrize(
    ("filter_", "field", "code"),
    [
        ({"colour": {"eq": "red"}}, "colour", "unknown_field"),
        ({"company": {"like": "A%"}}, "company.like", "unknown_operator"),
        ({"company": {"contains": "A"}}, "company.contains", "unknown_operator"),
        ({"company": "Acme"}, "company", "invalid_type"),
        ({"company": {}}, "company", "invalid_type"),
        ({"company": {"eq": 5}}, "company.eq", "invalid_type"),
        ({"company": {"in": []}}, "company.in", "invalid_value"),
        ({"company": {"in": "Acme"}}, "company.in", "invalid_value"),
        ({"company": {"is_null": "yes"}}, "company.is_null", "invalid_type"),
        ({"id": {"eq": "7"}}, "id.eq", "invalid_type"),
        ({"id": {"eq": True}}, "id.eq", "invalid_type"),
        ({"id": {"starts_with": 1}}, "id.starts_with", "unknown_operator"),
        ({"created_at": {"lt": "yesterday"}}, "created_at.lt", "invalid_value"),
        ({"created_at": {"lt": "2026-01-01T00:00:00"}}, "created_at.lt", "invalid_value"),
        ({"created_at": {"starts_with": "2026"}}, "created_at.starts_with", "unknown_operator"),
        ({"tags": {"eq": "vip"}}, "tags.eq", "unknown_operator"),
        ({"tags": {"contains": 1}}, "tags.contains", "invalid_type"),
        ({"custom_fields.": {"eq": 1}}, "custom_fields.", "invalid_field"),
        ({"custom_fields.a": {"eq": {"nested": 1}}}, "custom_fields.a.eq", "invalid_type"),
        ({"custom_fields.a": {"gt": True}}, "custom_fields.a.gt", "invalid_type"),
        ({"custom_fields.a": {"contains": "x"}}, "custom_fields.a.contains", "unknown_operator"),
    ],
)
def test_bad_filters_raise_with_field_and_code(filter_: dict[str, object], field: str, code: str) -> None:
    with pytest.raises(ValidationError) as caught:
        compile_filter(filter_)
    assert (caught.value.field, caught.value.code) == (field, code)


def test_too_many_in_values_are_refused() -> None:
    with pytest.raises(ValidationError):
        compile_filter({"company": {"in": [str(i) for i in range(1001)]}})
    with pytest.raises(ValidationError):
        compile_filter({"custom_fields.k": {"in": list(range(101))}})
