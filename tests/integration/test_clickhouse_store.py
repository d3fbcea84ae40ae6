"""The ClickHouse store on the real engine — chDB in process, and chDB behind the HTTP stand-in for a server
(`clickhouse_http_support`) — DSNs, DDL, inserts, and hostile strings kept as data."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from crm_bulk.entitylog.clickhouse import SETTING, ClickHouseEngine, split_statements
from crm_bulk.entitylog.outbox import OUTCOME_SCHEMA
from crm_bulk.entitylog.shipper import ChunkFacts, outcome_rows
from crm_bulk.entitylog.store import ClickHouseStore
from crm_bulk.errors import BackendUnavailableError, CrmBulkError
from crm_bulk.sqlfiles import sql_root
from tests.integration.clickhouse_http_support import ENGINES, ContractLog, contract_log
from tests.integration.entitylog_support import (
    client_of,
    count_outcomes,
    engine_of,
    in_process_store,
    plain,
)

pytestmark = pytest.mark.clickhouse

ACCOUNT = 11


@pytest.fixture(scope="module", params=ENGINES)
def log(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ContractLog]:
    """One store per module and engine: chDB hosts one data path per process, so it is closed before the
    next; over HTTP the engine runs in the stand-in's process."""
    with contract_log(request.param, tmp_path_factory.mktemp("chdb") / "data") as made:
        yield made


@pytest.fixture(scope="module")
def store(log: ContractLog) -> ClickHouseStore:
    return log.store


def _rows(
    job_id: uuid.UUID, emails: list[str | None], messages: list[str | None], *, chunk_no: int = 0
) -> pa.Table:
    n = len(emails)
    outbox = pa.Table.from_pydict(
        {
            "row_no": list(range(n)),
            "entity_id": [1000 + i for i in range(n)],
            "email": emails,
            "outcome": ["failed"] * n,
            "code": ["invalid_email"] * n,
            "message": messages,
            "changed_fields": [["email", "company"]] * n,
        },
        schema=OUTCOME_SCHEMA,
    )
    facts = ChunkFacts(
        job_id, chunk_no, ACCOUNT, "update", 1, "w-1", datetime(2026, 3, 1, 12, tzinfo=UTC), 40
    )
    return outcome_rows(outbox, facts)


def test_migrate_applies_each_file_once_and_ddl_is_rerunnable(store: ClickHouseStore) -> None:
    assert store.migrate() == []
    versions = sorted(
        r[0] for r in client_of(store).query("SELECT version FROM schema_migrations").result_rows
    )
    files = sorted(int(p.name[:3]) for p in (sql_root() / "clickhouse").glob("[0-9][0-9][0-9]_*.sql"))
    assert versions == files
    for path in sorted((sql_root() / "clickhouse").glob("[0-9][0-9][0-9]_*.sql")):
        for statement in split_statements(path.read_text()):
            client_of(store).command(statement)
    engines = dict(
        client_of(store)
        .query("SELECT name, engine FROM system.tables WHERE database = currentDatabase()")
        .result_rows
    )
    assert engines["entity_outcomes"] == "ReplacingMergeTree"
    assert engines["job_events"] == "ReplacingMergeTree"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("CREATE TABLE a (x UInt8) ENGINE = Memory;\n", ["CREATE TABLE a (x UInt8) ENGINE = Memory"]),
        ("-- only a comment;\n\n", []),
        ("SELECT 1;\n-- note\nSELECT 2;  \n", ["SELECT 1", "-- note\nSELECT 2"]),
        ("SELECT 'a;b'\n", ["SELECT 'a;b'"]),
    ],
)
def test_split_statements(text: str, expected: list[str]) -> None:
    assert split_statements(text) == expected


@pytest.mark.parametrize(
    "dsn",
    [
        "ftp://host/db",
        "http://",
        "https://:8443",
        "chdb://",
        "http://host:99999",
        "postgres://u@h/db",
        "not a url",
    ],
)
def test_bad_dsn_is_a_backend_error_naming_the_setting(dsn: str) -> None:
    with pytest.raises(BackendUnavailableError) as raised:
        ClickHouseEngine(dsn)
    assert raised.value.setting == SETTING == "CRM_BULK_CLICKHOUSE_URL"
    assert raised.value.backend == "clickhouse"


def test_unreachable_server_raises_on_connect_and_fails_the_check() -> None:
    with pytest.raises(BackendUnavailableError) as raised:
        in_process_store("http://default:s3cret@127.0.0.1:1/crm").check()
    assert "s3cret" not in str(raised.value)
    lazy = in_process_store("http://127.0.0.1:1", connect_timeout=1)
    with pytest.raises(CrmBulkError):
        lazy.check()
    with pytest.raises(BackendUnavailableError):
        count_outcomes(lazy, uuid.uuid4(), ACCOUNT)


def test_the_check_answers(log: ContractLog) -> None:
    log.store.check()
    assert engine_of(log.store).kind == {"chdb": "chdb", "http": "server"}[log.kind]


@pytest.mark.parametrize("log", ["chdb"], indirect=True)
def test_a_second_chdb_path_in_the_same_process_is_refused(store: ClickHouseStore, tmp_path: Path) -> None:
    other = ClickHouseEngine(f"chdb://{tmp_path / 'other'}")
    with pytest.raises(BackendUnavailableError):
        other.client()


HOSTILE = [
    "o'brien@example.com",
    "x'; DROP TABLE entity_outcomes; --@example.com",
    'quote"double@example.com',
    "back\\slash@example.com",
    "{job_id:UUID}@example.com",
    "ünïcødé@例え.jp",
    "tab\tnew\nline@example.com",
    "emoji-😀@example.com",
    "nul\x00byte@example.com",
]


def test_hostile_strings_round_trip_as_data(store: ClickHouseStore) -> None:
    job_id = uuid.uuid4()
    messages = [f"message {s}" for s in reversed(HOSTILE)]
    store.insert_outcomes(_rows(job_id, list(HOSTILE), list(messages)))
    page = plain(store.logs(job_id, ACCOUNT, limit=100))
    assert [item["email"] for item in page["items"]] == HOSTILE
    assert [item["message"] for item in page["items"]] == messages
    assert count_outcomes(store, job_id, ACCOUNT) == len(HOSTILE)
    tables = {r[0] for r in client_of(store).query("SELECT name FROM system.tables").result_rows}
    assert "entity_outcomes" in tables
    errors = list(store.iter_errors(job_id, ACCOUNT))
    assert errors[0]["email"].to_list() == HOSTILE


def test_nulls_become_column_defaults(store: ClickHouseStore) -> None:
    job_id = uuid.uuid4()
    store.insert_outcomes(_rows(job_id, [None, "a@example.com"], [None, "m"]))
    items = plain(store.logs(job_id, ACCOUNT))["items"]
    assert [(i["email"], i["message"]) for i in items] == [("", ""), ("a@example.com", "m")]
    assert items[0]["at"] == datetime(2026, 3, 1, 12, tzinfo=UTC)


def test_inserting_the_same_rows_twice_reads_as_one(store: ClickHouseStore) -> None:
    job_id = uuid.uuid4()
    rows = _rows(job_id, ["a@example.com", "b@example.com", "c@example.com"], [None, None, None])
    store.insert_outcomes(rows)
    store.insert_outcomes(rows)
    assert count_outcomes(store, job_id, ACCOUNT) == 3
    assert store.error_summary(job_id, ACCOUNT) == {"invalid_email": 3}
    assert sum(p["entities"] for p in plain(store.stats(job_id, ACCOUNT))["throughput"]) == 3
