"""Result files by input line: GET /bulk-actions/{id}/results as CSV and NDJSON, streamed from the entity log.

An import uploaded as CSV (several chunks, every 50th record with an invalid email, a quoted line break in
the first record) is carried through in process; its files are read back and checked line by line.
"""

from __future__ import annotations

from collections.abc import Iterator
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
from tests.integration.report_support import created_job
from tests.integration.results_support import (
    NDJSON,
    bad_line,
    csv_rows,
    import_csv,
    ndjson_rows,
    run_to_end,
    uploaded,
)

pytestmark = [pytest.mark.postgres, pytest.mark.clickhouse]

ROWS = 1_250
EVERY = 50
CHUNK = 300


@pytest.fixture(scope="module")
def client(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient[Litestar]]:
    before = newest_account_id(database_url)
    settings = make_settings(tmp_path_factory.mktemp("api-results"), chunk_size=CHUNK)
    yield from running_client(settings, database_url)
    end_open_jobs(database_url, before)


@pytest.fixture(scope="module")
def tenant(client: TestClient[Litestar]) -> Tenant:
    return make_tenant(client, "Results")


@pytest.fixture(scope="module")
def imported(client: TestClient[Litestar], tenant: Tenant, database_url: str) -> dict[str, Any]:
    job = uploaded(client, tenant.editor, import_csv(ROWS, every=EVERY, tag="res"))
    run_to_end(client, database_url, job["id"])
    done: dict[str, Any] = client.get(f"/bulk-actions/{job['id']}", headers=tenant.viewer).json()
    assert (done["status"], done["failed"]) == ("completed_with_errors", ROWS // EVERY)
    return done


def test_the_failed_file_holds_exactly_the_bad_lines_in_order_with_the_records_as_sent(
    client: TestClient[Litestar], tenant: Tenant, imported: dict[str, Any]
) -> None:
    answer = client.get(f"/bulk-actions/{imported['id']}/results?outcome=failed", headers=tenant.viewer)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/csv")
    assert "attachment" in answer.headers["content-disposition"]
    rows = csv_rows(answer.text)
    expected = [line for line in range(1, ROWS + 1) if bad_line(line, EVERY)]
    assert [int(r["line"]) for r in rows] == expected
    assert list(rows[0]) == [
        "line", "entity_id", "outcome", "code", "message",
        "email", "first_name", "last_name", "phone", "company", "job_title", "tags", "custom_fields",
    ]  # fmt: skip
    for row in rows:
        line = int(row["line"])
        assert (row["outcome"], row["code"], row["entity_id"]) == ("failed", "invalid_email", "")
        assert row["message"]
        assert (row["email"], row["first_name"], row["company"]) == (
            f"broken-res-{line}",
            f"Name {line}",
            f"Co {line}",
        )
        assert row["tags"] == "a;b"


def test_the_whole_file_is_every_line_once_in_input_order_as_sent(
    client: TestClient[Litestar], tenant: Tenant, imported: dict[str, Any]
) -> None:
    rows = csv_rows(client.get(f"/bulk-actions/{imported['id']}/results", headers=tenant.viewer).text)
    assert [int(r["line"]) for r in rows] == list(range(1, ROWS + 1))
    first, second = rows[0], rows[1]
    # Line 1's company holds a quoted line break: still one record, and line 2 is the next record.
    assert (first["company"], first["email"]) == ("Two\nLines Inc", "User.res.1@Example.com")
    assert (second["outcome"], second["email"]) == ("succeeded", "User.res.2@Example.com")
    assert int(second["entity_id"]) > 0
    outcomes = {r["outcome"] for r in rows if not bad_line(int(r["line"]), EVERY)}
    assert outcomes == {"succeeded"}


def test_ndjson_by_accept_carries_the_same_rows_with_tags_as_lists(
    client: TestClient[Litestar], tenant: Tenant, imported: dict[str, Any]
) -> None:
    url = f"/bulk-actions/{imported['id']}/results?outcome=succeeded"
    answer = client.get(url, headers=tenant.viewer | NDJSON)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/x-ndjson")
    rows = ndjson_rows(answer.text)
    assert [r["line"] for r in rows] == [n for n in range(1, ROWS + 1) if not bad_line(n, EVERY)]
    assert rows[1]["email"] == "User.res.2@Example.com"
    assert rows[1]["tags"] == ["a", "b"]
    assert rows[1]["custom_fields"] is None
    assert isinstance(rows[1]["entity_id"], int)


def test_a_formula_in_a_cell_is_neutralised_in_csv_and_exact_in_ndjson(
    client: TestClient[Litestar], tenant: Tenant, database_url: str
) -> None:
    formula = '=HYPERLINK("http://evil.example/","x")'
    job_id = created_job(
        client,
        tenant.editor,
        {"action": "import", "records": [{"email": formula}, {"email": unique_email(), "company": "@Acme"}]},
    )
    run_to_end(client, database_url, job_id)
    as_csv = csv_rows(client.get(f"/bulk-actions/{job_id}/results", headers=tenant.viewer).text)
    assert [(r["line"], r["email"][:2], r["company"]) for r in as_csv] == [
        ("1", "'=", ""),
        ("2", as_csv[1]["email"][:2], "'@Acme"),
    ]
    as_json = ndjson_rows(client.get(f"/bulk-actions/{job_id}/results", headers=tenant.viewer | NDJSON).text)
    assert as_json[0]["email"] == formula
    assert as_json[1]["company"] == "@Acme"


def test_an_update_lists_the_changed_fields_with_their_new_values(
    client: TestClient[Litestar], tenant: Tenant, database_url: str, imported: dict[str, Any]
) -> None:
    job_id = created_job(
        client,
        tenant.editor,
        {
            "action": "update",
            "target": {"filter": {"company": {"eq": "Co 2"}}},
            "changes": {"set": {"job_title": "CTO", "company": "Co 2"}, "custom_fields": {"plan": "gold"}},
        },
    )
    run_to_end(client, database_url, job_id)
    rows = csv_rows(client.get(f"/bulk-actions/{job_id}/results", headers=tenant.viewer).text)
    assert len(rows) == 1
    (row,) = rows
    assert list(row)[5:] == ["company", "job_title", "custom_fields.plan"]
    # The company was already "Co 2": not a changed field, so no new value.
    assert (row["line"], row["outcome"], row["job_title"], row["company"], row["custom_fields.plan"]) == (
        "1",
        "succeeded",
        "CTO",
        "",
        "gold",
    )


def test_viewers_read_results_other_accounts_get_404_and_bad_outcomes_a_problem(
    client: TestClient[Litestar], tenant: Tenant, imported: dict[str, Any]
) -> None:
    url = f"/bulk-actions/{imported['id']}/results"
    assert client.get(url, headers=tenant.viewer).status_code == 200
    other = make_tenant(client, "Elsewhere")
    assert_problem(client.get(url, headers=other.admin), 404)
    assert_problem(client.get(url, headers=other.viewer | NDJSON), 404)
    body = assert_problem(client.get(f"{url}?outcome=exploded", headers=tenant.viewer), 422)
    assert "succeeded, failed, skipped, cancelled" in body["detail"]
    assert_problem(client.get(url), 401)
