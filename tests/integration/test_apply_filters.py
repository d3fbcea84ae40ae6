"""Filters run against real PostgreSQL: hostile strings are data, and each operator selects what it says."""

from __future__ import annotations

from typing import Any

import pytest
from psycopg import sql

from crm_bulk.actions.filters import compile_filter
from tests.integration.apply_support import Conn, insert_contacts, new_account, run_job

pytestmark = pytest.mark.postgres

HOSTILE = [
    "x'; DROP TABLE contacts; --",
    "Robert'); DELETE FROM contacts WHERE ('1'='1",
    "a;b",
    "-- not a comment",
    "/* nor this */",
    "Zoë 東京 🚀",
    '{"plan": "gold"}',
    "O'Brien \\ back\\slash",
    "%s %(x)s {} $1",
]


def _matching(conn: Conn, account: int, filter_: dict[str, Any]) -> list[int]:
    fragment, params = compile_filter(filter_)
    query = sql.SQL(
        "SELECT id FROM contacts WHERE account_id = %s AND deleted_at IS NULL AND ({}) ORDER BY id"
    )
    return [r[0] for r in conn.execute(query.format(fragment), [account, *params]).fetchall()]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_strings_match_as_data_and_never_run(conn: Conn, value: str) -> None:
    account = new_account(conn)
    target, other = insert_contacts(
        conn,
        account,
        [
            {"email": "h@example.com", "company": value, "tags": [value], "custom_fields": {value: value}},
            {"email": "o@example.com", "company": "plain"},
        ],
    )
    for filter_ in (
        {"company": {"eq": value}},
        {"company": {"in": [value]}},
        {"company": {"starts_with": value}},
        {"tags": {"contains": value}},
        {f"custom_fields.{value}": {"eq": value}},
        {f"custom_fields.{value}": {"starts_with": value[:3]}},
    ):
        assert _matching(conn, account, filter_) == [target], filter_
    assert _matching(conn, account, {"company": {"ne": value}}) == [other]
    job = run_job(
        conn,
        account,
        {
            "action": "update",
            "target": {"filter": {"company": {"eq": value}}},
            "changes": {"set": {"job_title": value}},
        },
    )
    assert (job.total, job.succeeded) == (1, 1)
    row = conn.execute("SELECT job_title FROM contacts WHERE id = %s", (target,)).fetchone()
    assert row == (value,)
    assert conn.execute("SELECT count(*) FROM contacts WHERE account_id = %s", (account,)).fetchone() == (2,)


def test_operators_select_what_they_say(conn: Conn) -> None:
    account = new_account(conn)
    a, b, c = insert_contacts(
        conn,
        account,
        [
            {
                "email": "Ann@Example.com",
                "company": "Acme",
                "last_name": "Able",
                "phone_e164": "+14155550100",
                "tags": ["vip", "beta"],
                "custom_fields": {"plan": "gold", "score": 90},
            },
            {
                "email": "bob@example.com",
                "company": "Acme Two",
                "last_name": "Baker",
                "tags": ["beta"],
                "custom_fields": {"plan": "free", "score": 20},
            },
            {"email": "cy@example.org", "tags": [], "custom_fields": {"score": "high"}},
        ],
    )
    cases: list[tuple[dict[str, Any], list[int]]] = [
        ({"email": {"eq": "ANN@example.COM"}}, [a]),
        ({"email": {"starts_with": "b"}}, [b]),
        ({"company": {"starts_with": "Acme"}}, [a, b]),
        ({"company": {"is_null": True}}, [c]),
        ({"company": {"ne": "Acme"}}, [b, c]),
        ({"last_name": {"gt": "Able"}}, [b]),
        ({"phone": {"eq": "+14155550100"}}, [a]),
        ({"tags": {"contains": ["beta", "vip"]}}, [a]),
        ({"tags": {"in": ["vip", "nope"]}}, [a]),
        ({"tags": {"is_null": True}}, [c]),
        ({"custom_fields.plan": {"in": ["gold", "free"]}}, [a, b]),
        ({"custom_fields.plan": {"is_null": True}}, [c]),
        ({"custom_fields.score": {"gte": 50}}, [a]),
        ({"custom_fields.score": {"lt": 50}}, [b]),
        ({"custom_fields.score": {"eq": "high"}}, [c]),
        ({"id": {"in": [a, c]}}, [a, c]),
        ({"created_at": {"lt": "2999-01-01T00:00:00Z"}, "company": {"eq": "Acme"}}, [a]),
    ]
    for filter_, expected in cases:
        assert _matching(conn, account, filter_) == expected, filter_
