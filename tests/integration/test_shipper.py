"""The outbox shipper between the real PostgreSQL ledger and the real ClickHouse engine: chDB in process, and
chDB behind the HTTP stand-in for a server (`clickhouse_http_support`), with shippers writing concurrently."""

from __future__ import annotations

import io
import socket
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import polars as pl
import psycopg
import pyarrow as pa
import pytest

from crm_bulk.entitylog.events import record_event
from crm_bulk.entitylog.outbox import OUTCOME_SCHEMA, encode_outcomes, outcome_of
from crm_bulk.entitylog.shipper import run_shipper, ship_events, ship_outcomes
from crm_bulk.entitylog.store import ClickHouseStore
from crm_bulk.errors import BackendUnavailableError
from crm_bulk.settings import Settings
from tests.databases import own_database
from tests.integration.clickhouse_http_support import ENGINES, ContractLog, contract_log
from tests.integration.entitylog_support import client_of, count_outcomes, in_process_store, plain

pytestmark = [pytest.mark.postgres, pytest.mark.clickhouse]

ROWS = 25


@pytest.fixture(scope="module")
def shipper_db(pg_server_url: str) -> Iterator[str]:
    """A database of this module's own: the shipper ships every unshipped outbox, so no other test's rows."""
    with own_database(pg_server_url, prefix="crm_bulk_ship") as url:
        yield url


@pytest.fixture
def pg(shipper_db: str) -> Iterator[psycopg.Connection[Any]]:
    """A connection whose leftover outboxes are drained before the test, so each test starts empty."""
    with psycopg.connect(shipper_db) as conn:
        conn.execute("DELETE FROM bulk_action_chunks WHERE outcomes IS NOT NULL")
        conn.execute("DELETE FROM job_events_outbox")
        conn.commit()
        yield conn


@pytest.fixture(scope="module", params=ENGINES)
def log(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ContractLog]:
    """One store per module and engine: chDB hosts one data path per process, so it is closed before the
    next; over HTTP the engine runs in the stand-in's process."""
    with contract_log(request.param, tmp_path_factory.mktemp("chdb") / "data") as made:
        yield made


@pytest.fixture(scope="module")
def store(log: ContractLog) -> ClickHouseStore:
    return log.store


@pytest.fixture(scope="module")
def account_id(shipper_db: str) -> int:
    with psycopg.connect(shipper_db) as conn:
        row = conn.execute("INSERT INTO accounts (name) VALUES ('shipper test') RETURNING id").fetchone()
        assert row is not None
        return int(row[0])


def outbox_bytes(chunk_no: int, *, rows: int = ROWS, emails: list[str] | None = None) -> bytes:
    """An outbox as the apply engine writes it: Arrow IPC stream with zstd-compressed buffers."""
    outcomes = ["succeeded", "failed", "skipped"]
    table = pa.Table.from_pydict(
        {
            "row_no": list(range(rows)),
            "entity_id": [chunk_no * 10_000 + i for i in range(rows)],
            "email": emails or [f"u{chunk_no}-{i}@example.com" for i in range(rows)],
            "outcome": [outcomes[i % 3] for i in range(rows)],
            "code": [["succeeded", "invalid_email", "no_change"][i % 3] for i in range(rows)],
            "message": [None if i % 3 == 0 else f"row {i}" for i in range(rows)],
            "changed_fields": [["company"] if i % 3 == 0 else None for i in range(rows)],
        },
        schema=OUTCOME_SCHEMA,
    )
    sink = io.BytesIO()
    options = pa.ipc.IpcWriteOptions(compression="zstd")
    with pa.ipc.new_stream(sink, table.schema, options=options) as writer:
        writer.write_table(table)
    return sink.getvalue()


def make_job(conn: psycopg.Connection[Any], account_id: int, blobs: list[bytes | None]) -> uuid.UUID:
    """A job with one done ledger row per blob (None: a chunk whose outbox is not written yet)."""
    row = conn.execute(
        "INSERT INTO bulk_actions (account_id, action, spec, status, planned, chunk_count)"
        " VALUES (%s, 'update', '{}', 'running', true, %s) RETURNING id",
        (account_id, len(blobs)),
    ).fetchone()
    assert row is not None
    job_id: uuid.UUID = row[0]
    for chunk_no, blob in enumerate(blobs):
        conn.execute(
            "INSERT INTO bulk_action_chunks (job_id, chunk_no, account_id, entity_count, state, attempts,"
            " payload, outcomes, worker, applied_at, duration_ms)"
            " VALUES (%s, %s, %s, %s, 'done', 1, '\\x00', %s, 'worker-1', now(), %s)",
            (job_id, chunk_no, account_id, ROWS, blob, 50 + chunk_no),
        )
    conn.commit()
    return job_id


def ledger(conn: psycopg.Connection[Any], job_id: uuid.UUID) -> list[tuple[int, bool, bool]]:
    """(chunk_no, outbox still there, marked shipped) per chunk."""
    rows = conn.execute(
        "SELECT chunk_no, outcomes IS NOT NULL, outcomes_shipped_at IS NOT NULL"
        " FROM bulk_action_chunks WHERE job_id = %s ORDER BY chunk_no",
        (job_id,),
    ).fetchall()
    conn.commit()
    return [(int(r[0]), bool(r[1]), bool(r[2])) for r in rows]


def test_ships_each_entity_once_and_clears_the_outbox(
    pg: psycopg.Connection[Any], store: ClickHouseStore, account_id: int
) -> None:
    job_id = make_job(pg, account_id, [outbox_bytes(n) for n in range(4)] + [None])
    assert ship_outcomes(pg, store) == 4
    assert ship_outcomes(pg, store) == 0
    assert count_outcomes(store, job_id, account_id) == 4 * ROWS
    assert ledger(pg, job_id) == [
        (0, False, True),
        (1, False, True),
        (2, False, True),
        (3, False, True),
        (4, False, False),
    ]
    stats = plain(store.stats(job_id, account_id))
    assert stats["outcomes"] == {"succeeded": 4 * 9, "failed": 4 * 8, "skipped": 4 * 8, "cancelled": 0}
    assert stats["chunk_latency_ms"]["p50"] in (51.0, 52.0)
    first = plain(store.logs(job_id, account_id, outcome="succeeded", limit=1))["items"][0]
    assert first["entity_id"] == 0
    row = (
        client_of(store)
        .query(
            "SELECT action, attempt, worker, changed_fields FROM entity_outcomes FINAL"
            " WHERE job_id = {job_id:UUID} AND entity_id = 0",
            parameters={"job_id": str(job_id)},
        )
        .result_rows
    )
    assert row == [("update", 1, "worker-1", ["company"])]


def test_the_same_chunk_shipped_twice_is_one_row_per_entity(
    pg: psycopg.Connection[Any], store: ClickHouseStore, account_id: int
) -> None:
    blobs = [outbox_bytes(n) for n in range(3)]
    job_id = make_job(pg, account_id, blobs)
    assert ship_outcomes(pg, store, batch_chunks=2) == 2
    # As if the process died after the ClickHouse insert but before the ledger commit: all three unshipped
    # again, so the re-shipment packs different chunks together than the first one did.
    pg.execute(
        "UPDATE bulk_action_chunks SET outcomes = b.blob, outcomes_shipped_at = NULL"
        " FROM unnest(%s::int[], %s::bytea[]) AS b(chunk_no, blob)"
        " WHERE job_id = %s AND bulk_action_chunks.chunk_no = b.chunk_no",
        ([0, 1, 2], blobs, job_id),
    )
    pg.commit()
    assert ship_outcomes(pg, store) == 3
    assert count_outcomes(store, job_id, account_id) == 3 * ROWS
    assert sum(store.error_summary(job_id, account_id).values()) == 3 * (ROWS - 9)
    raw = (
        client_of(store)
        .query(
            "SELECT count() FROM entity_outcomes WHERE job_id = {job_id:UUID}",
            parameters={"job_id": str(job_id)},
        )
        .result_rows[0][0]
    )
    assert raw >= 3 * ROWS


@pytest.fixture(params=["refused", "silent"])
def broken_clickhouse(request: pytest.FixtureRequest) -> Iterator[ClickHouseStore]:
    """A ClickHouse that is down (connection refused) or hangs (accepts, never answers)."""
    if request.param == "refused":
        yield in_process_store("http://127.0.0.1:1", connect_timeout=1)
        return
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        yield in_process_store(f"http://127.0.0.1:{port}", connect_timeout=1, send_receive_timeout=1)


def test_clickhouse_down_or_hanging_raises_and_leaves_the_outbox_intact(
    pg: psycopg.Connection[Any], store: ClickHouseStore, account_id: int, broken_clickhouse: ClickHouseStore
) -> None:
    job_id = make_job(pg, account_id, [outbox_bytes(n) for n in range(2)])
    with pytest.raises(BackendUnavailableError):
        ship_outcomes(pg, broken_clickhouse)
    assert ledger(pg, job_id) == [(0, True, False), (1, True, False)]
    assert count_outcomes(store, job_id, account_id) == 0
    assert ship_outcomes(pg, store) == 2
    assert count_outcomes(store, job_id, account_id) == 2 * ROWS


def test_batches_are_bounded_and_drain(
    pg: psycopg.Connection[Any], store: ClickHouseStore, account_id: int
) -> None:
    job_id = make_job(pg, account_id, [outbox_bytes(n, rows=3) for n in range(5)])
    assert [ship_outcomes(pg, store, batch_chunks=2) for _ in range(4)] == [2, 2, 1, 0]
    assert count_outcomes(store, job_id, account_id) == 15


def test_chunks_locked_by_another_shipper_are_passed_over(
    pg: psycopg.Connection[Any], store: ClickHouseStore, account_id: int, shipper_db: str
) -> None:
    job_id = make_job(pg, account_id, [outbox_bytes(n, rows=2) for n in range(3)])
    with psycopg.connect(shipper_db) as other:
        other.execute(
            "SELECT 1 FROM bulk_action_chunks WHERE job_id = %s AND chunk_no = 1 FOR UPDATE", (job_id,)
        )
        assert ship_outcomes(pg, store) == 2
        assert ledger(pg, job_id) == [(0, False, True), (1, True, False), (2, False, True)]
        other.rollback()
    assert ship_outcomes(pg, store) == 1
    assert count_outcomes(store, job_id, account_id) == 6


def test_an_undecodable_outbox_is_left_and_does_not_block_others(
    pg: psycopg.Connection[Any], store: ClickHouseStore, account_id: int, caplog: pytest.LogCaptureFixture
) -> None:
    bad_outcome = pa.Table.from_pydict(
        {"row_no": [0], "outcome": ["exploded"], "code": ["internal"]},
        schema=pa.schema([("row_no", pa.int32()), ("outcome", pa.string()), ("code", pa.string())]),
    )
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, bad_outcome.schema) as writer:
        writer.write_table(bad_outcome)
    job_id = make_job(pg, account_id, [b"not arrow", outbox_bytes(1, rows=4), sink.getvalue()])
    assert ship_outcomes(pg, store) == 1
    assert ledger(pg, job_id) == [(0, True, False), (1, False, True), (2, True, False)]
    assert count_outcomes(store, job_id, account_id) == 4
    assert "cannot be decoded" in caplog.text


def test_polars_written_outbox_with_missing_optional_columns_ships(
    pg: psycopg.Connection[Any], store: ClickHouseStore, account_id: int
) -> None:
    frame = pl.DataFrame(
        {
            "row_no": [0, 1],
            "entity_id": [None, 7],
            "outcome": ["failed", "succeeded"],
            "code": ["invalid_email", "succeeded"],
        },
        schema={"row_no": pl.Int32, "entity_id": pl.Int64, "outcome": pl.String, "code": pl.String},
    )
    sink = io.BytesIO()
    frame.write_ipc_stream(sink, compression="zstd")
    job_id = make_job(pg, account_id, [sink.getvalue()])
    assert ship_outcomes(pg, store) == 1
    items = plain(store.logs(job_id, account_id))["items"]
    assert [(i["entity_id"], i["email"], i["outcome"], i["message"]) for i in items] == [
        (None, "", "failed", ""),
        (7, "", "succeeded", ""),
    ]


HOSTILE = [
    "o'brien@example.com",
    "x'; DROP TABLE bulk_action_chunks; --",
    "ünï@例え.jp",
    "{account_id:UInt64}",
]


def test_hostile_emails_ship_as_data(
    pg: psycopg.Connection[Any], store: ClickHouseStore, account_id: int
) -> None:
    job_id = make_job(pg, account_id, [outbox_bytes(0, rows=len(HOSTILE), emails=HOSTILE)])
    assert ship_outcomes(pg, store) == 1
    emails = {i["email"] for i in plain(store.logs(job_id, account_id))["items"]}
    assert emails == set(HOSTILE)


def test_events_are_recorded_in_the_callers_transaction_and_shipped_once(
    pg: psycopg.Connection[Any], store: ClickHouseStore, account_id: int
) -> None:
    job_id = make_job(pg, account_id, [])
    record_event(pg, job_id=job_id, account_id=account_id, event="started")
    pg.rollback()
    record_event(pg, job_id=job_id, account_id=account_id, event="planned", detail="3 chunks")
    record_event(
        pg, job_id=job_id, account_id=account_id, event="chunk_retried", chunk_no=2, detail="it's 'odd'"
    )
    pg.commit()
    pending = pg.execute(
        "SELECT id, job_id, account_id, at, event, chunk_no, detail FROM job_events_outbox"
    ).fetchall()
    assert ship_events(pg, store) == 2
    assert ship_events(pg, store) == 0
    events = plain(store.job_events(job_id, account_id))
    assert [(e["event"], e["chunk_no"], e["detail"]) for e in events] == [
        ("planned", None, "3 chunks"),
        ("chunk_retried", 2, "it's 'odd'"),
    ]
    assert [e["event_id"] for e in events] == [r[0] for r in pending]
    assert store.job_events(job_id, account_id + 1) == []
    # Shipped again (as if the outbox delete had been lost): the outbox id keeps each one event.
    with pg.cursor() as cur:
        cur.executemany(
            "INSERT INTO job_events_outbox (id, job_id, account_id, at, event, chunk_no, detail)"
            " OVERRIDING SYSTEM VALUE VALUES (%s, %s, %s, %s, %s, %s, %s)",
            pending,
        )
    pg.commit()
    assert ship_events(pg, store) == 2
    assert len(store.job_events(job_id, account_id)) == 2


def test_events_stay_in_the_outbox_while_clickhouse_is_down(
    pg: psycopg.Connection[Any], account_id: int, broken_clickhouse: ClickHouseStore
) -> None:
    record_event(pg, job_id=uuid.uuid4(), account_id=account_id, event="finished")
    pg.commit()
    with pytest.raises(BackendUnavailableError):
        ship_events(pg, broken_clickhouse)
    row = pg.execute("SELECT count(*) FROM job_events_outbox").fetchone()
    assert row == (1,)


def test_unknown_event_name_is_refused(pg: psycopg.Connection[Any]) -> None:
    with pytest.raises(ValueError, match="unknown job event"):
        record_event(pg, job_id=uuid.uuid4(), account_id=1, event="exploded")


def test_run_shipper_ships_until_stopped(
    pg: psycopg.Connection[Any], store: ClickHouseStore, account_id: int, shipper_db: str
) -> None:
    job_id = make_job(pg, account_id, [outbox_bytes(n, rows=5) for n in range(3)])
    record_event(pg, job_id=job_id, account_id=account_id, event="finished")
    pg.commit()
    stop = threading.Event()
    result: list[Any] = []
    thread = threading.Thread(
        target=lambda: result.append(
            run_shipper(Settings(database_url=shipper_db), stop, store=store, idle_seconds=0.05)
        )
    )
    thread.start()
    try:
        for _ in range(200):
            if ledger(pg, job_id) == [
                (0, False, True),
                (1, False, True),
                (2, False, True),
            ] and store.job_events(job_id, account_id):
                break
            stop.wait(0.05)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive()
    assert count_outcomes(store, job_id, account_id) == 15
    counters = result[0]
    assert (counters.chunks, counters.events, counters.failures) == (3, 1, 0)


def test_run_shipper_backs_off_while_clickhouse_is_down(
    pg: psycopg.Connection[Any], account_id: int, shipper_db: str
) -> None:
    job_id = make_job(pg, account_id, [outbox_bytes(0, rows=2)])
    down = in_process_store("http://127.0.0.1:1", connect_timeout=1)
    stop = threading.Event()
    result: list[Any] = []
    thread = threading.Thread(
        target=lambda: result.append(
            run_shipper(Settings(database_url=shipper_db), stop, store=down, idle_seconds=0.01)
        )
    )
    thread.start()
    stop.wait(0.5)
    stop.set()
    thread.join(timeout=30)
    assert not thread.is_alive()
    counters = result[0]
    assert counters.failures >= 2
    assert (counters.chunks, counters.events) == (0, 0)
    assert ledger(pg, job_id) == [(0, True, False)]


def test_an_outbox_written_by_the_apply_engine_ships(
    pg: psycopg.Connection[Any], store: ClickHouseStore, account_id: int
) -> None:
    frame = pl.DataFrame(
        {
            "row_no": pl.Series([0, 1, 2], dtype=pl.Int32),
            "entity_id": pl.Series([5, 6, None], dtype=pl.Int64),
            "email": ["a@example.com", None, "c@example.com"],
            "code": ["succeeded", "duplicate_email", "invalid_email"],
            "message": [None, None, "missing_at"],
            "changed_fields": pl.Series([["tags"], None, None], dtype=pl.List(pl.Utf8)),
        }
    ).with_columns(outcome=outcome_of(pl.col("code")))
    job_id = make_job(pg, account_id, [encode_outcomes(frame)])
    assert ship_outcomes(pg, store) == 1
    stats = plain(store.stats(job_id, account_id))
    assert stats["outcomes"] == {"succeeded": 1, "failed": 1, "skipped": 1, "cancelled": 0}
    assert stats["errors_by_code"] == {"invalid_email": 1}
    assert stats["skipped_by_reason"] == {"duplicate_email": 1}


SHIPPERS = 4


def test_shippers_writing_concurrently_ship_each_chunk_once(
    pg: psycopg.Connection[Any], log: ContractLog, account_id: int, shipper_db: str
) -> None:
    chunks = 40
    job_id = make_job(pg, account_id, [outbox_bytes(n) for n in range(chunks)])
    clients = [log.another_client() for _ in range(SHIPPERS)]
    start = threading.Barrier(SHIPPERS)
    shipped: list[list[int]] = [[] for _ in range(SHIPPERS)]
    errors: list[BaseException] = []

    def ship(n: int) -> None:
        try:
            with psycopg.connect(shipper_db) as conn:
                start.wait(timeout=30)
                while batch := ship_outcomes(conn, clients[n], batch_chunks=3):
                    shipped[n].append(batch)
        except BaseException as exc:  # reported below: a thread's failure must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=ship, args=(n,)) for n in range(SHIPPERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for client in clients:
        if client is not log.store:
            client.close()
    assert errors == []
    assert sum(sum(batches) for batches in shipped) == chunks
    assert sum(1 for batches in shipped if batches) >= 2, f"the shippers did not overlap: {shipped}"
    assert ledger(pg, job_id) == [(n, False, True) for n in range(chunks)]
    assert count_outcomes(log.store, job_id, account_id) == chunks * ROWS
    ((rows, identities),) = (
        client_of(log.store)
        .query(
            "SELECT count(), uniqExact(chunk_no, row_no) FROM entity_outcomes FINAL WHERE job_id = {j:UUID}",
            parameters={"j": str(job_id)},
        )
        .result_rows
    )
    assert (rows, identities) == (chunks * ROWS, chunks * ROWS)
