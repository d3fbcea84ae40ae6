"""`POST /bulk-actions/import/preview`: the format, mapping and first rows of a file, from its first bytes.

The large-file case writes a file of CRM_BULK_TEST_PREVIEW_FILE_BYTES (default 32 MiB; the 1 GB run sets
1073741824) and sends only its first 64 KiB, as a client previewing it would; the server's time comes back
in the answer's Server-Timing header and must stay under 200 ms (the median of five previews showing the
default 20 rows; previews showing 1000 rows are timed and printed beside them).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
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

pytestmark = [pytest.mark.postgres, pytest.mark.clickhouse]

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
SAMPLE_BYTES = 64 * 1024
PREVIEW_BOUND_MS = 200.0
FILE_BYTES = int(os.environ.get("CRM_BULK_TEST_PREVIEW_FILE_BYTES", str(32 * 1024 * 1024)))
HEADER = "Email,First Name,Last Name,Phone Number,Company Name,Lifecycle Stage\r\n"


@pytest.fixture(scope="module")
def client(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient[Litestar]]:
    settings = make_settings(tmp_path_factory.mktemp("import-preview"))
    yield from running_client(settings, database_url)


@pytest.fixture(scope="module", autouse=True)
def no_jobs_left_behind(database_url: str) -> Iterator[None]:
    before = newest_account_id(database_url)
    yield
    end_open_jobs(database_url, before)


@pytest.fixture(scope="module")
def tenant(client: TestClient[Litestar]) -> Tenant:
    return make_tenant(client, "Previewer")


def _preview(
    client: TestClient[Litestar], tenant: Tenant, body: bytes, content_type: str = "text/csv", **params: str
) -> Any:
    query = "&".join(f"{k}={quote(v)}" for k, v in params.items())
    return client.post(
        f"/bulk-actions/import/preview?{query}",
        content=body,
        headers=tenant.editor | {"Content-Type": content_type},
    )


def _row(i: int) -> str:
    return f"Person{i}@Example.com,First{i},Last{i},(212) 555-{i % 10000:04d},Acme,lead\r\n"


def _big_file(path: Path, size: int) -> None:
    """A CSV of about `size` bytes: one bad phone and one bad email near the top, then valid rows."""
    head = HEADER + _row(0) + "bad-at-example.com,Bad,Email,(212) 555-0001,Acme,lead\r\n"
    head += 'p2@example.com,"Two\r\nLines",X,call me,Acme,"customer"\r\n'
    block = "".join(_row(i) for i in range(3, 3003)).encode()
    with path.open("wb") as out:
        out.write(b"\xef\xbb\xbf" + head.encode())
        written = out.tell()
        while written < size:
            out.write(block)
            written += len(block)


def test_the_first_64_kib_of_a_large_file_preview_in_under_200_ms(
    client: TestClient[Litestar], tenant: Tenant, tmp_path: Path
) -> None:
    path = tmp_path / "export.csv"
    _big_file(path, FILE_BYTES)
    assert path.stat().st_size >= FILE_BYTES
    with path.open("rb") as source:
        sample = source.read(SAMPLE_BYTES)
    assert not sample.endswith(b"\n")  # the sample cuts a line, as a real one does
    _preview(client, tenant, sample)  # warm: the first request also loads the kernels' phone metadata
    timings: dict[str, list[tuple[float, float]]] = {"20": [], "1000": []}
    for _ in range(5):
        for rows, runs in timings.items():
            started = time.perf_counter()
            answer = _preview(client, tenant, sample, rows=rows)
            round_trip_ms = (time.perf_counter() - started) * 1000
            assert answer.status_code == 200, answer.text
            server_ms = float(answer.headers["server-timing"].split("dur=")[1])
            runs.append((server_ms, round_trip_ms))
    body = answer.json()
    print(
        f"preview of the first {SAMPLE_BYTES} bytes of a {path.stat().st_size}-byte file, by rows shown "
        "(server ms, round-trip ms):",
        timings,
    )
    # The bound holds for the preview as a client asks for it (the default rows); showing 1000 rows is
    # reported beside it.
    default = sorted(server for server, _ in timings["20"])
    assert default[len(default) // 2] < PREVIEW_BOUND_MS, timings
    assert body["format"] == {"kind": "csv", "delimiter": ",", "encoding": "utf-8", "sheet": None}
    assert body["mapping"]["Phone Number"] == "phone"
    assert body["unknown_columns"] == ["Lifecycle Stage"]
    rows = body["rows"]
    # Every whole record of the sample, the cut-off last line left out; records numbered as result files
    # number them, and found in the file by the line each starts on (the third holds a line break).
    whole_lines = sample.count(b"\r\n") - 1 - 1  # the header, and the line break inside a quoted field
    assert len(rows) == min(1000, whole_lines)
    assert [r["line"] for r in rows[:5]] == [1, 2, 3, 4, 5]
    assert [r["file_line"] for r in rows[:5]] == [2, 3, 4, 6, 7]
    assert rows[0]["record"] == {
        "email": "person0@example.com",
        "first_name": "First0",
        "last_name": "Last0",
        "phone": "+12125550000",
        "company": "Acme",
        "job_title": None,
        "tags": None,
        "custom_fields": {"lifecycle_stage": "lead"},
    }
    assert rows[0]["errors"] == []
    assert rows[1]["errors"] == [
        {"field": "email", "code": "invalid_email", "message": "missing_at", "column": "Email"}
    ]
    assert rows[2]["record"]["first_name"] == "Two\r\nLines"
    assert rows[2]["errors"] == [
        {"field": "phone", "code": "invalid_phone", "message": "invalid_phone", "column": "Phone Number"}
    ]


def test_a_preview_names_every_wrong_cell_and_repeats(client: TestClient[Litestar], tenant: Tenant) -> None:
    long_name = "x" * 201
    body = (
        "email;Given Name;Telephone;Labels;custom_fields\n"
        f"ok@example.com;{long_name};555;a;{{}}\n"
        'OK@example.com;Dup;;b;"{""plan"": 1"\n'
    ).encode()
    answer = _preview(client, tenant, body)
    assert answer.status_code == 200, answer.text
    preview = answer.json()
    assert preview["format"]["delimiter"] == ";"
    assert preview["mapping"] == {
        "email": "email",
        "Given Name": "first_name",
        "Telephone": "phone",
        "Labels": "tags",
        "custom_fields": "custom_fields",
    }
    first, second = preview["rows"]
    assert {(e["field"], e["code"], e["column"]) for e in first["errors"]} == {
        ("phone", "invalid_phone", "Telephone"),
        ("first_name", "too_long", "Given Name"),
    }
    assert {(e["field"], e["code"], e["column"]) for e in second["errors"]} == {
        ("custom_fields", "invalid_field", "custom_fields"),
        ("email", "duplicate_in_input", "email"),
    }
    assert any(e["message"] == "repeats the email of line 1" for e in second["errors"])


def test_a_preview_uses_the_mapping_and_format_parameters(
    client: TestClient[Litestar], tenant: Tenant
) -> None:
    body = "Contact\tPlan\tFax\nRené@Example.com\tgold\t1\n".encode("cp1252")
    mapping = json.dumps({"Contact": "email", "Plan": "custom_fields.plan", "Fax": None})
    answer = _preview(client, tenant, body, mapping=mapping, encoding="cp1252", delimiter="tab")
    assert answer.status_code == 200, answer.text
    preview = answer.json()
    assert preview["format"] == {"kind": "csv", "delimiter": "\t", "encoding": "cp1252", "sheet": None}
    assert preview["mapping"] == {"Contact": "email", "Plan": "custom_fields.plan", "Fax": ""}
    assert preview["rows"][0]["record"]["email"] == "rené@example.com"
    assert preview["rows"][0]["record"]["custom_fields"] == {"plan": "gold"}


def test_an_xlsx_and_an_ndjson_preview(client: TestClient[Litestar], tenant: Tenant, tmp_path: Path) -> None:
    path = tmp_path / "book.xlsx"
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "Leads"
    for row in [
        ["E-mail", "Surname", "Mobile"],
        ["a@example.com", "Ng", 2125550199],
        ["b@example", "Li", None],
    ]:
        sheet.append(row)
    book.save(path)
    answer = _preview(client, tenant, path.read_bytes(), XLSX)
    assert answer.status_code == 200, answer.text
    preview = answer.json()
    assert preview["format"] == {"kind": "xlsx", "delimiter": None, "encoding": None, "sheet": "Leads"}
    assert [(r["line"], r["file_line"]) for r in preview["rows"]] == [(1, 2), (2, 3)]
    assert preview["rows"][0]["record"]["phone"] == "+12125550199"
    assert preview["rows"][1]["errors"][0]["code"] == "invalid_email"
    lines = b'{"email": "n@example.com", "tags": ["b", "a"]}\n{"email": "cut'
    answer = _preview(client, tenant, lines, "application/x-ndjson")
    assert answer.status_code == 200, answer.text
    assert [r["record"]["tags"] for r in answer.json()["rows"]] == [["a", "b"]]


@pytest.mark.parametrize(
    ("body", "content_type", "params", "status"),
    [
        (b"Email,Plan\na@example.com,x\n", "text/csv", {"mapping": '{"Plan": "nickname"}'}, 422),
        (b"Email,Plan\na@example.com,x\n", "text/csv", {"unknown_columns": "reject"}, 422),
        (b"Email,Plan\na@example.com,x\n", "text/csv", {"rows": "0"}, 422),
        (b"Email,Plan\na@example.com,x\n", "application/pdf", {}, 415),
        (b"Email,Plan,Phone", "text/csv", {}, 422),
        (b"email\n" + b"a@example.com\n" * 80_000, "text/csv", {}, 413),
        (b"not a workbook", XLSX, {}, 422),
    ],
)
def test_unusable_previews_answer_4xx(
    client: TestClient[Litestar],
    tenant: Tenant,
    *,
    body: bytes,
    content_type: str,
    params: dict[str, str],
    status: int,
) -> None:
    assert_problem(_preview(client, tenant, body, content_type, **params), status)


def test_viewers_may_not_preview_and_a_preview_stores_nothing(
    database_url: str, client: TestClient[Litestar], tenant: Tenant
) -> None:
    body = b"email\nv@example.com\n"
    assert_problem(client.post("/bulk-actions/import/preview", content=body, headers=tenant.viewer), 403)
    assert _preview(client, tenant, body).status_code == 200
    assert client.get("/bulk-actions", headers=tenant.viewer).json()["items"] == []
    assert client.get("/contacts", headers=tenant.viewer).json()["items"] == []


def test_a_workbook_preview_is_bound_by_the_xlsx_setting(database_url: str, tmp_path: Path) -> None:
    for client in running_client(make_settings(tmp_path, max_xlsx_bytes=1_000), database_url):
        tenant = make_tenant(client, "SmallBooks")
        problem = assert_problem(_preview(client, tenant, b"x" * 1_001, XLSX), 413)
        assert "CRM_BULK_MAX_XLSX_BYTES" in problem["detail"]
