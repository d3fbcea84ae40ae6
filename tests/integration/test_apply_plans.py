"""Chunk statements reach contacts by per-row index lookups whatever the planner's statistics say.

Two kinds of stale statistics lead the planner astray. A contacts table analysed empty and then grown (a
first big import) looks as if its partial indexes held almost nothing. A table analysed before an account
had any rows (a new customer's first import) rates that account's rows as about one, so scanning the
account's whole (account_id, id) range per row looks as cheap as the email lookup. Either way a plan that
scans an account's range per chunk, or per row, looks cheap and costs a full scan. The statements are
written so that cannot happen; this checks it on exactly those tables.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import polars as pl
import psycopg
import pytest

from crm_bulk.actions.specs import Changes
from crm_bulk.apply.checks import check_changes, check_records
from crm_bulk.apply.images import IMAGE_COLUMNS, stage_restore
from crm_bulk.apply.staging import stage_ids, stage_import
from crm_bulk.ledger.payload import import_frame
from crm_bulk.postgres import Conn
from crm_bulk.sqlfiles import query
from tests.integration.apply_support import new_account

pytestmark = pytest.mark.postgres

ROWS = 20_000
POINT_LOOKUPS = ("(id = ", "(email_normalized = ")


FILL = (
    "INSERT INTO contacts (account_id, email, email_normalized, company, tags) "
    "SELECT %s, 'p' || g || '@example.com', 'p' || g || '@example.com', 'co' || g %% 20, '{a}' "
    "FROM generate_series(1, %s) AS g"
)


@pytest.fixture(params=["analysed_empty", "analysed_before_account"])
def unanalysed(request: pytest.FixtureRequest, database_url: str) -> Iterator[tuple[Conn, int]]:
    """A connection whose `contacts` is a private copy with stale statistics, then filled for the account."""
    schema = f"plans_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        account = new_account(conn)
        conn.execute(psycopg.sql.SQL("CREATE SCHEMA {}").format(psycopg.sql.Identifier(schema)))
        conn.execute(psycopg.sql.SQL("SET search_path TO {}, public").format(psycopg.sql.Identifier(schema)))
        conn.execute(
            "CREATE TABLE contacts (LIKE public.contacts INCLUDING ALL) WITH (autovacuum_enabled = false)"
        )
        if request.param == "analysed_before_account":
            # Another tenant holds the same emails: the lookups must not confuse the two either.
            conn.execute(FILL, (new_account(conn), ROWS))
        conn.execute("ANALYZE contacts")
        conn.execute(FILL, (account, ROWS))
        try:
            yield conn, account
        finally:
            conn.execute(psycopg.sql.SQL("DROP SCHEMA {} CASCADE").format(psycopg.sql.Identifier(schema)))


def _contacts_access(node: dict[str, Any], found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if node.get("Relation Name") == "contacts" or node.get("Node Type") == "Bitmap Index Scan":
        found.append(node)
    for child in node.get("Plans", []):
        _contacts_access(child, found)
    return found


def _materialized_contacts(node: dict[str, Any]) -> bool:
    if node.get("Node Type") == "Materialize" and _contacts_access(node, []):
        return True
    return any(_materialized_contacts(child) for child in node.get("Plans", []))


def _stage(conn: Conn) -> None:
    ids = conn.execute("SELECT min(id) FROM contacts").fetchone()
    assert ids is not None
    stage_ids(conn, np.arange(ids[0], ids[0] + 5000, dtype=np.int64))
    frame = pl.DataFrame({"email": [f"p{i}@example.com" for i in range(1, 5001)]})
    stage_import(conn, check_records(import_frame(frame)))
    # A revert's image of the same ids, restoring an email (so the email lookup is planned too).
    image = pl.DataFrame(
        {
            "entity_id": np.arange(ids[0], ids[0] + 5000, dtype=np.int64),
            "row_xmin": [1] * 5000,
            "image_mask": [1] * 5000,
            "email": [f"r{i}@example.com" for i in range(5000)],
            "email_normalized": [f"r{i}@example.com" for i in range(5000)],
        }
    ).with_columns(*[pl.lit(None, dtype=pl.Utf8).alias(name) for name in IMAGE_COLUMNS[5:]])
    stage_restore(conn, image)


@pytest.mark.parametrize(
    "statement",
    [
        "update_chunk",
        "delete_chunk",
        "add_tags_chunk",
        "remove_tags_chunk",
        "import_chunk_skip",
        "import_chunk_update",
        "import_lookup",
        "restore_chunk",
    ],
)
def test_every_contacts_access_is_a_point_lookup(unanalysed: tuple[Conn, int], statement: str) -> None:
    conn, account = unanalysed
    changes = Changes(set={"job_title": "x", "email": "moved@example.com"}, custom_fields={"k": 1})
    params: dict[str, object] = {
        **check_changes(changes).params,
        "account_id": account,
        "job_id": uuid.uuid4(),
        "tags": ["a"],
        "row_nos": list(range(5000)),
    }
    with conn.transaction(force_rollback=True):
        _stage(conn)
        explain = ("EXPLAIN (FORMAT JSON) " + query("postgres", "contacts", statement)).encode()
        row = conn.execute(explain, params).fetchone()
    assert row is not None
    accesses = _contacts_access(row[0][0]["Plan"], [])
    assert accesses, "the statement never reads contacts?"
    # Looked-up rows kept aside and re-read per row of another input (a nested loop's join filter over
    # them) make a chunk quadratic, even when each lookup is a point lookup.
    assert not _materialized_contacts(row[0][0]["Plan"]), "contacts rows are materialised and re-scanned"
    for node in accesses:
        if node["Node Type"] in ("ModifyTable", "Bitmap Heap Scan"):
            continue
        assert node["Node Type"] in ("Index Scan", "Index Only Scan", "Bitmap Index Scan"), node
        assert any(key in node.get("Index Cond", "") for key in POINT_LOOKUPS), node
