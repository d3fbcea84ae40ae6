"""The API's reads of the entity log (stats, logs, errors) against a known dataset on the real chDB engine."""

from __future__ import annotations

import base64
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

from crm_bulk.entitylog.host import HostEngine, StoreHost
from crm_bulk.entitylog.outbox import OUTCOME_SCHEMA
from crm_bulk.entitylog.shipper import ChunkFacts, outcome_rows
from crm_bulk.entitylog.store import ClickHouseStore, encode_cursor
from crm_bulk.errors import ValidationError
from crm_bulk.settings import Settings
from tests.integration.entitylog_support import in_process_store, plain

pytestmark = pytest.mark.clickhouse

ACCOUNT = 21
OTHER_ACCOUNT = 22
ROWS_PER_CHUNK = 40
T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
# (chunk_no, applied_at offset in ms, duration_ms); the last chunk was cancelled before it ran.
CHUNKS = [(0, 0, 100), (1, 1000, 200), (2, 1500, 300), (3, 5000, None)]
# Outcome and code by row_no % 10 for chunks that ran.
PATTERN = [
    ("succeeded", "succeeded"),
    ("succeeded", "succeeded"),
    ("succeeded", "succeeded"),
    ("succeeded", "succeeded"),
    ("succeeded", "succeeded"),
    ("succeeded", "succeeded"),
    ("failed", "invalid_email"),
    ("failed", "too_long"),
    ("skipped", "no_change"),
    ("skipped", "not_found"),
]


@dataclass(frozen=True)
class Entity:
    """What the dataset says about one entity, computed in Python as the oracle."""

    entity_id: int
    outcome: str
    code: str
    chunk_no: int
    at: datetime


@dataclass(frozen=True)
class Dataset:
    """The job loaded for this module."""

    job_id: uuid.UUID
    entities: list[Entity]


@pytest.fixture(scope="module", params=["in_process", "store_host"])
def store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ClickHouseStore]:
    """The engine in this process, and in a store host as the API process uses it: the same reads must give
    the same answers. chDB hosts one data path per process, so each store is closed before the next."""
    dsn = f"chdb://{tmp_path_factory.mktemp('chdb')}"
    if request.param == "in_process":
        ch = in_process_store(dsn)
        ch.migrate()
        yield ch
        ch.close()
        return
    host = StoreHost(Settings(clickhouse_url=dsn), ship=False)
    host.start()
    remote = ClickHouseStore(HostEngine(host))
    try:
        yield remote
    finally:
        remote.close()
        host.stop()


@pytest.fixture(scope="module")
def dataset(store: ClickHouseStore) -> Dataset:
    """Four chunks of one job, plus rows of another account under the same job id that must stay invisible."""
    job_id = uuid.uuid4()
    entities: list[Entity] = []
    tables = []
    for chunk_no, offset_ms, duration in CHUNKS:
        at = T0 + timedelta(milliseconds=offset_ms)
        ids = [chunk_no * 1000 + row for row in range(ROWS_PER_CHUNK)]
        if duration is None:
            pairs = [("skipped", "cancelled")] * ROWS_PER_CHUNK
        else:
            pairs = [PATTERN[row % 10] for row in range(ROWS_PER_CHUNK)]
        entities += [Entity(i, o, c, chunk_no, at) for i, (o, c) in zip(ids, pairs, strict=True)]
        outbox = pa.Table.from_pydict(
            {
                "row_no": list(range(ROWS_PER_CHUNK)),
                "entity_id": ids,
                "email": [f"user{i}@example.com" for i in ids],
                "outcome": [o for o, _ in pairs],
                "code": [c for _, c in pairs],
                "message": [
                    None if o == "succeeded" else f"why {i}" for i, (o, _) in zip(ids, pairs, strict=True)
                ],
                "changed_fields": [None] * ROWS_PER_CHUNK,
            },
            schema=OUTCOME_SCHEMA,
        )
        facts = ChunkFacts(job_id, chunk_no, ACCOUNT, "update", 1, "w-1", at, duration)
        tables.append(outcome_rows(outbox, facts))
        foreign = ChunkFacts(job_id, chunk_no, OTHER_ACCOUNT, "update", 1, "w-2", at, 9999)
        tables.append(outcome_rows(outbox, foreign))
    store.insert_outcomes(pa.concat_tables(tables))
    return Dataset(job_id, entities)


def test_stats_match_the_dataset(store: ClickHouseStore, dataset: Dataset) -> None:
    stats = plain(store.stats(dataset.job_id, ACCOUNT))
    by_outcome = Counter(e.outcome for e in dataset.entities if e.code != "cancelled")
    assert stats["outcomes"] == {
        "succeeded": by_outcome["succeeded"],
        "failed": by_outcome["failed"],
        "skipped": by_outcome["skipped"],
        "cancelled": ROWS_PER_CHUNK,
    }
    assert stats["errors_by_code"] == dict(Counter(e.code for e in dataset.entities if e.outcome == "failed"))
    assert stats["skipped_by_reason"] == dict(
        Counter(e.code for e in dataset.entities if e.outcome == "skipped" and e.code != "cancelled")
    )
    assert stats["throughput"] == [
        {"t": T0, "entities": ROWS_PER_CHUNK},
        {"t": T0 + timedelta(seconds=1), "entities": 2 * ROWS_PER_CHUNK},
        {"t": T0 + timedelta(seconds=5), "entities": ROWS_PER_CHUNK},
    ]
    # One duration per chunk (100, 200, 300; the cancelled chunk has none): exact nearest-rank percentiles.
    assert stats["chunk_latency_ms"] == {"p50": 200.0, "p95": 300.0, "p99": 300.0}


def test_stats_buckets_can_be_wider(store: ClickHouseStore, dataset: Dataset) -> None:
    stats = plain(store.stats(dataset.job_id, ACCOUNT, bucket_seconds=5))
    assert stats["throughput"] == [
        {"t": T0, "entities": 3 * ROWS_PER_CHUNK},
        {"t": T0 + timedelta(seconds=5), "entities": ROWS_PER_CHUNK},
    ]


def test_stats_of_another_account_or_unknown_job_are_its_own(
    store: ClickHouseStore, dataset: Dataset
) -> None:
    other = plain(store.stats(dataset.job_id, OTHER_ACCOUNT))
    assert other["chunk_latency_ms"] == {"p50": 9999.0, "p95": 9999.0, "p99": 9999.0}
    unknown = plain(store.stats(uuid.uuid4(), ACCOUNT))
    assert unknown["outcomes"] == {"succeeded": 0, "failed": 0, "skipped": 0, "cancelled": 0}
    assert unknown["throughput"] == []
    assert unknown["chunk_latency_ms"] == {"p50": None, "p95": None, "p99": None}
    assert plain(store.logs(dataset.job_id, ACCOUNT + 100))["items"] == []


@pytest.mark.parametrize("limit", [1, 7, 40, 1000])
@pytest.mark.parametrize("outcome", [None, "succeeded", "failed", "skipped"])
def test_logs_pagination_covers_every_row_exactly_once(
    store: ClickHouseStore, dataset: Dataset, limit: int, outcome: str | None
) -> None:
    seen: list[int] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = plain(store.logs(dataset.job_id, ACCOUNT, outcome=outcome, limit=limit, cursor=cursor))
        assert len(page["items"]) <= limit
        seen += [item["entity_id"] for item in page["items"] if item["entity_id"] is not None]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    expected = [e.entity_id for e in dataset.entities if outcome is None or e.outcome == outcome]
    assert sorted(seen) == sorted(expected)
    assert len(seen) == len(set(seen))
    assert pages == max(1, -(-len(expected) // limit))


def test_log_items_carry_the_entity_fields(store: ClickHouseStore, dataset: Dataset) -> None:
    wanted = next(e for e in dataset.entities if e.outcome == "failed" and e.chunk_no == 1)
    page = plain(store.logs(dataset.job_id, ACCOUNT, entity_id=wanted.entity_id))
    assert page == {
        "items": [
            {
                "entity_id": wanted.entity_id,
                "email": f"user{wanted.entity_id}@example.com",
                "outcome": "failed",
                "code": wanted.code,
                "message": f"why {wanted.entity_id}",
                "at": wanted.at,
            }
        ],
        "next_cursor": None,
    }
    assert (
        plain(store.logs(dataset.job_id, ACCOUNT, entity_id=wanted.entity_id, outcome="succeeded"))["items"]
        == []
    )


def test_error_summary_counts_failed_and_skipped(store: ClickHouseStore, dataset: Dataset) -> None:
    expected = Counter(e.code for e in dataset.entities if e.outcome != "succeeded")
    summary = store.error_summary(dataset.job_id, ACCOUNT)
    assert summary == dict(expected)
    assert list(summary.values()) == sorted(summary.values(), reverse=True)


@pytest.mark.parametrize("batch_size", [1, 33, 50_000])
def test_iter_errors_yields_every_failed_and_skipped_entity_once(
    store: ClickHouseStore, dataset: Dataset, batch_size: int
) -> None:
    batches = list(store.iter_errors(dataset.job_id, ACCOUNT, batch_size=batch_size))
    assert all(0 < b.height <= batch_size for b in batches)
    assert batches[0].columns == ["entity_id", "email", "outcome", "code", "message", "at"]
    ids = [i for b in batches for i in b["entity_id"].to_list()]
    expected = sorted(e.entity_id for e in dataset.entities if e.outcome != "succeeded")
    assert sorted(ids) == expected
    assert len(ids) == len(set(ids))


def test_iter_errors_of_another_account_is_empty(store: ClickHouseStore, dataset: Dataset) -> None:
    assert list(store.iter_errors(dataset.job_id, ACCOUNT + 100)) == []


@pytest.mark.parametrize(
    "cursor",
    [
        "not base64 !",
        base64.urlsafe_b64encode(b"[1,2]").decode(),
        base64.urlsafe_b64encode(b'["failed",-1,0]').decode(),
        base64.urlsafe_b64encode(b'["x\'; DROP TABLE entity_outcomes; --",0,0]').decode(),
        base64.urlsafe_b64encode(b'{"a":1}').decode(),
    ],
)
def test_tampered_cursor_is_a_validation_error(store: ClickHouseStore, dataset: Dataset, cursor: str) -> None:
    with pytest.raises(ValidationError) as raised:
        store.logs(dataset.job_id, ACCOUNT, cursor=cursor)
    assert raised.value.field == "cursor"


def test_cursor_resumes_after_the_row_it_names(store: ClickHouseStore, dataset: Dataset) -> None:
    first_failed = min(
        (e for e in dataset.entities if e.outcome == "failed"), key=lambda e: (e.chunk_no, e.entity_id)
    )
    page = plain(
        store.logs(
            dataset.job_id,
            ACCOUNT,
            limit=1,
            cursor=encode_cursor(dataset.job_id, ACCOUNT, "failed", first_failed.chunk_no, 6),
        )
    )
    assert page["items"][0]["entity_id"] == first_failed.entity_id + 1


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"outcome": "cancelled"}, "outcome"), ({"limit": 0}, "limit"), ({"limit": 1001}, "limit")],
)
def test_bad_log_arguments_are_validation_errors(
    store: ClickHouseStore, dataset: Dataset, kwargs: dict[str, object], field: str
) -> None:
    with pytest.raises(ValidationError) as raised:
        store.logs(dataset.job_id, ACCOUNT, **kwargs)  # type: ignore[arg-type]
    assert raised.value.field == field
