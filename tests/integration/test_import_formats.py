"""Imports of files as other tools export them: headers by alias, delimiters, encodings, XLSX, mappings.

Each file is made here, uploaded through `POST /bulk-actions/import`, run to its end, and read back through
the contacts API: the counts and the stored fields are the ones the file holds.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import quote

import openpyxl  # type: ignore[import-untyped]
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
from tests.integration.report_support import drive_job

pytestmark = [pytest.mark.postgres, pytest.mark.clickhouse]

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
EXPORT_HEADER = ["Email", "First Name", "Last Name", "Phone Number", "Company Name", "Lifecycle Stage"]


@pytest.fixture(scope="module")
def client(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient[Litestar]]:
    settings = make_settings(tmp_path_factory.mktemp("import-formats"))
    yield from running_client(settings, database_url)


@pytest.fixture(scope="module", autouse=True)
def no_jobs_left_behind(database_url: str) -> Iterator[None]:
    before = newest_account_id(database_url)
    yield
    end_open_jobs(database_url, before)


def _import(
    client: TestClient[Litestar],
    tenant: Tenant,
    path: Path,
    content_type: str = "text/csv",
    **params: str,
) -> dict[str, Any]:
    query = "&".join(f"{k}={quote(v)}" for k, v in params.items())
    answer = client.post(
        f"/bulk-actions/import?{query}",
        content=path.read_bytes(),
        headers=tenant.editor | {"Content-Type": content_type},
    )
    assert answer.status_code == 202, answer.text
    job: dict[str, Any] = answer.json()
    return job


def _run(
    client: TestClient[Litestar], database_url: str, tenant: Tenant, job: dict[str, Any]
) -> dict[str, Any]:
    drive_job(client, database_url, job["id"])
    done: dict[str, Any] = client.get(f"/bulk-actions/{job['id']}", headers=tenant.viewer).json()
    return done


def _contacts(client: TestClient[Litestar], tenant: Tenant) -> dict[str, dict[str, Any]]:
    items = client.get("/contacts?limit=200", headers=tenant.viewer).json()["items"]
    return {c["email"]: c for c in items}


def _export_rows(n: int) -> list[list[str]]:
    rows = [
        [f"Person{i}@Example.COM", f"First{i}", f"Last, {i}", f"(212) 555-{i:04d}", "Acme, Inc.", "lead"]
        for i in range(n)
    ]
    rows.append(["not-an-email", "Broken", "Row", "", "Acme", "customer"])
    return rows


def _delimited(rows: list[list[str]], delimiter: str) -> str:
    out = io.StringIO()
    csv.writer(out, delimiter=delimiter, lineterminator="\r\n").writerows(rows)
    return out.getvalue()


def test_an_export_with_bom_crlf_and_display_headers(
    client: TestClient[Litestar], database_url: str, tmp_path: Path
) -> None:
    tenant = make_tenant(client, "Exporter")
    path = tmp_path / "hubspot-export.csv"
    path.write_bytes(b"\xef\xbb\xbf" + _delimited([EXPORT_HEADER, *_export_rows(40)], ",").encode())
    assert path.read_bytes().count(b"\r\n") == 42
    job = _import(client, tenant, path)
    assert job["mapping_used"] == {
        "Email": "email",
        "First Name": "first_name",
        "Last Name": "last_name",
        "Phone Number": "phone",
        "Company Name": "company",
        "Lifecycle Stage": "custom_fields.lifecycle_stage",
    }
    done = _run(client, database_url, tenant, job)
    assert (done["status"], done["total"], done["succeeded"], done["failed"]) == (
        "completed_with_errors",
        41,
        40,
        1,
    )
    assert done["mapping_used"] == job["mapping_used"]
    stored = _contacts(client, tenant)
    assert len(stored) == 40
    seven = stored["person7@example.com"]
    assert (seven["first_name"], seven["last_name"], seven["phone"], seven["company"]) == (
        "First7",
        "Last, 7",
        "+12125550007",
        "Acme, Inc.",
    )
    assert seven["custom_fields"] == {"lifecycle_stage": "lead"}


def test_a_semicolon_file_is_detected(
    client: TestClient[Litestar], database_url: str, tmp_path: Path
) -> None:
    tenant = make_tenant(client, "Semicolons")
    path = tmp_path / "contacts-de.csv"
    rows = [["E-Mail", "Vorname", "Surname", "Organisation", "Labels"]]
    rows += [[f"kunde{i}@beispiel.de", f"Name, {i}", "Schmidt", "GmbH; Co", "a;b"] for i in range(12)]
    path.write_text(_delimited(rows, ";"), encoding="utf-8")
    job = _import(client, tenant, path)
    assert job["mapping_used"]["E-Mail"] == "email"
    assert job["mapping_used"]["Vorname"] == "custom_fields.vorname"
    done = _run(client, database_url, tenant, job)
    assert (done["status"], done["total"], done["succeeded"]) == ("completed", 12, 12)
    three = _contacts(client, tenant)["kunde3@beispiel.de"]
    assert (three["last_name"], three["company"], three["tags"]) == ("Schmidt", "GmbH; Co", ["a", "b"])
    assert three["custom_fields"] == {"vorname": "Name, 3"}


NAMES = ["Renée", "Müller", "Ñúñez", "Zoë", "François", "Øster", "Ærø"]


def test_a_cp1252_file_with_accented_names(
    client: TestClient[Litestar], database_url: str, tmp_path: Path
) -> None:
    tenant = make_tenant(client, "Windows")
    path = tmp_path / "excel-ansi.csv"
    rows = [["email", "first_name", "last_name"]]
    rows += [[f"w{i}@example.com", name, f"{name}\u2013Smith"] for i, name in enumerate(NAMES)]
    path.write_bytes(_delimited(rows, ",").encode("cp1252"))
    # Read as UTF-8 the same bytes are refused, by line and column, pointing at the encoding parameter.
    refused = client.post(
        "/bulk-actions/import",
        content=path.read_bytes(),
        headers=tenant.editor | {"Content-Type": "text/csv"},
    )
    problem = assert_problem(refused, 422)
    assert problem["errors"][0]["code"] == "undecodable"
    column = len("w0@example.com,Ren") + 1  # the é of Renée
    assert f"line 2, column {column}:" in problem["detail"] and "encoding=" in problem["detail"]
    job = _import(client, tenant, path, encoding="cp1252")
    done = _run(client, database_url, tenant, job)
    assert (done["status"], done["total"], done["succeeded"]) == ("completed", len(NAMES), len(NAMES))
    stored = _contacts(client, tenant)
    assert [stored[f"w{i}@example.com"]["first_name"] for i in range(len(NAMES))] == NAMES
    assert stored["w0@example.com"]["last_name"] == "Renée\u2013Smith"


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-be-bom"])
def test_a_utf16_tab_file(
    client: TestClient[Litestar], database_url: str, tmp_path: Path, codec: str
) -> None:
    tenant = make_tenant(client, "Unicode")
    path = tmp_path / "unicode-text.txt"
    rows = [["Email Address", "Given Name", "Family Name", "Job Title"]]
    rows += [[f"u{i}@example.com", f"Zoë {i}", "Ōta", "CEO, 北京"] for i in range(25)]
    text = _delimited(rows, "\t")
    data = text.encode("utf-16") if codec == "utf-16" else b"\xfe\xff" + text.encode("utf-16-be")
    path.write_bytes(data)
    job = _import(client, tenant, path)
    done = _run(client, database_url, tenant, job)
    assert (done["status"], done["total"], done["succeeded"]) == ("completed", 25, 25)
    nine = _contacts(client, tenant)["u9@example.com"]
    assert (nine["first_name"], nine["last_name"], nine["job_title"]) == ("Zoë 9", "Ōta", "CEO, 北京")


def _workbook(path: Path, sheets: dict[str, list[list[Any]]]) -> None:
    book = openpyxl.Workbook()
    book.remove(book.active)
    for name, rows in sheets.items():
        sheet = book.create_sheet(name)
        for row in rows:
            sheet.append(row)
    book.save(path)


def test_an_xlsx_workbook_first_sheet_or_named(
    client: TestClient[Litestar], database_url: str, tmp_path: Path
) -> None:
    tenant = make_tenant(client, "Spreadsheet")
    path = tmp_path / "contacts.xlsx"
    people: list[list[Any]] = [["Email", "Forename", "Mobile", "Signed Up", "Score"]]
    people += [
        [f"x{i}@example.com", f"Xen {i}", 2125550100 + i, date(2024, 1, 1 + i), 1.5 + i] for i in range(20)
    ]
    people += [[None, None, None, None, None], ["bad-email", "Bad", None, None, None]]
    _workbook(path, {"People": people, "Other": [["email"], ["other@example.com"]]})
    job = _import(client, tenant, path, XLSX)
    assert job["mapping_used"] == {
        "Email": "email",
        "Forename": "first_name",
        "Mobile": "phone",
        "Signed Up": "custom_fields.signed_up",
        "Score": "custom_fields.score",
    }
    done = _run(client, database_url, tenant, job)
    assert (done["status"], done["total"], done["succeeded"], done["failed"]) == (
        "completed_with_errors",
        21,
        20,
        1,
    )
    four = _contacts(client, tenant)["x4@example.com"]
    assert (four["first_name"], four["phone"]) == ("Xen 4", "+12125550104")
    assert four["custom_fields"] == {"signed_up": "2024-01-05", "score": "5.5"}
    other = _run(client, database_url, tenant, _import(client, tenant, path, XLSX, sheet="Other"))
    assert (other["total"], other["succeeded"]) == (1, 1)
    assert "other@example.com" in _contacts(client, tenant)


def test_a_quoted_field_holding_a_newline(
    client: TestClient[Litestar], database_url: str, tmp_path: Path
) -> None:
    tenant = make_tenant(client, "Multiline")
    path = tmp_path / "notes.csv"
    rows = [["Email", "Notes", "Company"]]
    rows += [[f"n{i}@example.com", f'first line {i}\r\nsecond, "quoted" line', "Initech"] for i in range(9)]
    path.write_text(_delimited(rows, ","), encoding="utf-8")
    done = _run(client, database_url, tenant, _import(client, tenant, path))
    assert (done["status"], done["total"], done["succeeded"]) == ("completed", 9, 9)
    five = _contacts(client, tenant)["n5@example.com"]
    assert five["custom_fields"] == {"notes": 'first line 5\r\nsecond, "quoted" line'}
    assert five["company"] == "Initech"


def test_an_explicit_mapping_sends_a_column_to_a_custom_field_and_ignores_another(
    client: TestClient[Litestar], database_url: str, tmp_path: Path
) -> None:
    tenant = make_tenant(client, "Mapped")
    path = tmp_path / "crm.csv"
    rows = [["Contact", "Plan", "Fax", "Title", "Owner"]]
    rows += [[f"m{i}@example.com", "gold", "555-0000", "CTO", "ann"] for i in range(6)]
    path.write_text(_delimited(rows, ","), encoding="utf-8")
    mapping = {"Contact": "email", "Plan": "custom_fields.plan", "Fax": None}
    job = _import(client, tenant, path, mapping=json.dumps(mapping), unknown_columns="ignore")
    assert job["mapping_used"] == {
        "Contact": "email",
        "Plan": "custom_fields.plan",
        "Fax": "",
        "Title": "job_title",
        "Owner": "",
    }
    done = _run(client, database_url, tenant, job)
    assert (done["status"], done["total"], done["succeeded"]) == ("completed", 6, 6)
    one = _contacts(client, tenant)["m1@example.com"]
    assert one["custom_fields"] == {"plan": "gold"}
    assert one["job_title"] == "CTO" and one["phone"] is None


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"mapping": json.dumps({"Contact": "e_mail"})}, "unknown_field"),
        ({"mapping": json.dumps({"Contact": "email", "Plan": "email"})}, "duplicate_field"),
        ({"mapping": json.dumps({"Contact": "email", "Nope": "company"})}, "unknown_column"),
        ({"mapping": "[1, 2]"}, "malformed_mapping"),
        ({"mapping": json.dumps({"Contact": "email"}), "unknown_columns": "reject"}, "unknown_field"),
        ({"encoding": "klingon-8"}, "unknown_encoding"),
        ({"encoding": "base64"}, "unknown_encoding"),
        ({"delimiter": ";;"}, "invalid_value"),
        ({}, "missing"),
    ],
)
def test_unusable_mappings_and_parameters_answer_422_and_store_nothing(
    client: TestClient[Litestar], tmp_path: Path, params: dict[str, str], code: str
) -> None:
    tenant = make_tenant(client, "Refused")
    path = tmp_path / "crm.csv"
    path.write_text("Contact,Plan\nm@example.com,gold\n", encoding="utf-8")
    query = "&".join(f"{k}={quote(v)}" for k, v in params.items())
    answer = client.post(
        f"/bulk-actions/import?{query}",
        content=path.read_bytes(),
        headers=tenant.editor | {"Content-Type": "text/csv"},
    )
    problem = assert_problem(answer, 422)
    assert problem["errors"][0]["code"] == code, problem
    assert client.get("/bulk-actions", headers=tenant.viewer).json()["items"] == []


@pytest.mark.parametrize(
    ("body", "content_type", "code", "where"),
    [
        (
            b"email,first_name,company\r\na@example.com,A,X\r\nb@example.com,B\r\n",
            "text/csv",
            "ragged_row",
            "line 3",
        ),
        (b'email;first_name\n"a@example.com";"A\nB";extra\n', "text/csv", "ragged_row", "line 2"),
        (b"PK\x03\x04 not really a zip archive", XLSX, "malformed_xlsx", "XLSX"),
        (b"email\nok@example.com\nbad\x81byte@example.com\n", "text/csv", "undecodable", "line 3, column 4"),
    ],
)
def test_malformed_files_name_the_line_and_column(
    client: TestClient[Litestar], body: bytes, content_type: str, code: str, where: str
) -> None:
    tenant = make_tenant(client, "Malformed")
    params = "?encoding=cp1252" if b"\x81" in body else ""
    answer = client.post(
        f"/bulk-actions/import{params}", content=body, headers=tenant.editor | {"Content-Type": content_type}
    )
    problem = assert_problem(answer, 422)
    assert problem["errors"][0]["code"] == code
    assert where in problem["detail"], problem["detail"]
    assert client.get("/bulk-actions", headers=tenant.viewer).json()["items"] == []


def test_a_workbook_over_its_bound_answers_413(database_url: str, tmp_path: Path) -> None:
    path = tmp_path / "big.xlsx"
    _workbook(path, {"S": [["email", "note"], *[[f"b{i}@example.com", "x" * 50] for i in range(400)]]})
    assert path.stat().st_size > 4_000
    for client in running_client(make_settings(tmp_path, max_xlsx_bytes=4_000), database_url):
        tenant = make_tenant(client, "Bounded")
        answer = client.post(
            "/bulk-actions/import", content=path.read_bytes(), headers=tenant.editor | {"Content-Type": XLSX}
        )
        problem = assert_problem(answer, 413)
        assert "CRM_BULK_MAX_XLSX_BYTES" in problem["detail"]
        assert client.get("/bulk-actions", headers=tenant.viewer).json()["items"] == []
