"""Result streams through the chDB store host: whole, in line order, in small tables; a reader that stops
early ends its query and leaves the host serving; an open stream holds up no other call."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from uuid import UUID, uuid4

import polars as pl
import pyarrow as pa
import pytest

from crm_bulk.entitylog.clickhouse import STREAM_ROWS
from crm_bulk.entitylog.host import HostEngine, StoreHost
from crm_bulk.entitylog.inputs import decode_inputs
from crm_bulk.entitylog.outbox import OUTCOME_SCHEMA
from crm_bulk.entitylog.shipper import ChunkFacts, outcome_rows
from crm_bulk.entitylog.store import ClickHouseStore
from crm_bulk.errors import ValidationError
from crm_bulk.ledger.payload import IMPORT_SCHEMA, encode_records, import_frame
from crm_bulk.settings import Settings
from tests.integration.entitylog_support import count_outcomes

pytestmark = pytest.mark.clickhouse

ACCOUNT = 7
CHUNKS = 6
CHUNK_ROWS = 2_500


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClickHouseStore]:
    dsn = f"chdb://{tmp_path_factory.mktemp('streams') / 'chdb'}"
    running = StoreHost(Settings(clickhouse_url=dsn), ship=False)
    running.start()
    store = ClickHouseStore(HostEngine(running))
    try:
        yield store
    finally:
        store.close()
        running.stop()


def _chunk(job_id: UUID, chunk_no: int) -> pa.Table:
    """Chunk `chunk_no` of an import: every third record failed, line numbers following on chunk by chunk."""
    first = chunk_no * CHUNK_ROWS + 1
    emails = [f"u{first + i}@example.com" for i in range(CHUNK_ROWS)]
    payload = encode_records(
        import_frame(pl.DataFrame({"email": emails})).with_columns(pl.lit(None, pl.Int64).alias("repeat_of"))
    )
    failed = [(first + i) % 3 == 0 for i in range(CHUNK_ROWS)]
    outbox = pa.Table.from_pydict(
        {
            "row_no": list(range(CHUNK_ROWS)),
            "entity_id": [None if f else first + i for i, f in enumerate(failed)],
            "email": emails,
            "outcome": ["failed" if f else "succeeded" for f in failed],
            "code": ["invalid_email" if f else "succeeded" for f in failed],
            "message": [None] * CHUNK_ROWS,
            "changed_fields": [None] * CHUNK_ROWS,
        },
        schema=OUTCOME_SCHEMA,
    )
    at = datetime(2026, 3, 1, 12, tzinfo=UTC)
    facts = ChunkFacts(job_id, chunk_no, ACCOUNT, "import", 1, "w", at, 5, first_line=first, payload=payload)
    return outcome_rows(outbox, facts)


@pytest.fixture(scope="module")
def job(remote: ClickHouseStore) -> UUID:
    job_id = uuid4()
    # Shipped out of order: the file is still in line order.
    for chunk_no in reversed(range(CHUNKS)):
        remote.insert_outcomes(_chunk(job_id, chunk_no))
    return job_id


def test_a_stream_is_every_row_in_line_order_in_small_tables_with_the_records(
    remote: ClickHouseStore, job: UUID
) -> None:
    with remote.results(job, ACCOUNT) as frames:
        tables = list(frames)
    assert max(t.height for t in tables) <= STREAM_ROWS
    rows = pl.concat(tables)
    assert rows.get_column("line").to_list() == list(range(1, CHUNKS * CHUNK_ROWS + 1))
    records = decode_inputs(rows.get_column("input"), IMPORT_SCHEMA)
    assert records.get_column("email").to_list() == [
        f"u{n}@example.com" for n in range(1, CHUNKS * CHUNK_ROWS + 1)
    ]
    with remote.results(job, ACCOUNT, results=["failed"]) as frames:
        failed = pl.concat(list(frames))
    assert failed.get_column("line").to_list() == [n for n in range(1, CHUNKS * CHUNK_ROWS + 1) if n % 3 == 0]
    assert set(failed.get_column("outcome")) == {"failed"}


def test_an_open_stream_holds_up_no_other_call_and_one_left_early_ends_cleanly(
    remote: ClickHouseStore, job: UUID
) -> None:
    with remote.results(job, ACCOUNT) as frames:
        first = next(frames)
        # The stream runs on a client of its own: other calls answer while it is open.
        assert count_outcomes(remote, job, ACCOUNT) == CHUNKS * CHUNK_ROWS
        assert first.get_column("line")[0] == 1
    # Left after one table: the host ended that query and serves the next calls, streams included.
    assert count_outcomes(remote, job, ACCOUNT) == CHUNKS * CHUNK_ROWS
    with remote.results(job, ACCOUNT, results=["succeeded"]) as frames:
        assert sum(t.height for t in frames) == CHUNKS * CHUNK_ROWS - CHUNKS * CHUNK_ROWS // 3


def test_unknown_results_are_refused_before_any_query(remote: ClickHouseStore, job: UUID) -> None:
    with (
        pytest.raises(ValidationError, match="outcome must be one of"),
        remote.results(job, ACCOUNT, results=["lost"]),
    ):
        pass
    with remote.results(job, ACCOUNT + 1) as frames:
        assert list(frames) == []  # another account's job holds nothing
