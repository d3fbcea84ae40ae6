"""A chunk that kills every worker that applies it, on both queues: after `poison_delivery_cap` deliveries
it is failed with code `poison` and dead-lettered, the rest of its job and the other jobs (those behind it on
its Kafka partition too) complete, the counts are exact and the log holds one final row per entity."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import pytest
from confluent_kafka import Consumer, KafkaError, TopicPartition

from crm_bulk.apply.engine import apply_chunk
from crm_bulk.entitylog.outbox import decode_outcomes
from crm_bulk.entitylog.store import ClickHouseStore
from crm_bulk.jobs.lifecycle import finish_jobs, plan_next_job
from crm_bulk.jobs.repository import get_job
from crm_bulk.ledger import POISON_CODE, count_delivery, fail_chunk, poison_reason
from crm_bulk.queue.kafka.admin import delete_topics
from crm_bulk.queue.kafka.configuration import consumer_config
from crm_bulk.queue.kafka.dead_letters import KafkaDeadLetterReader
from crm_bulk.queue.messages import DeadLetter, decode_chunk
from crm_bulk.queue.postgres_queue import PostgresQueue
from crm_bulk.settings import Settings
from tests.databases import quiet_connection
from tests.integration.entitylog_support import client_of, in_process_store, plain
from tests.integration.fault_hooks import faulty_worker_pool, kills_logged
from tests.integration.pipeline_support import (
    clickhouse_counts,
    ledger_summary,
    make_account,
    own_database,
    pipeline_settings,
    scheduler,
    seed_contacts,
    settings_env,
    shipper,
    stamp_outboxes_shipped,
    submit_tagging,
    tagged_contacts,
    wait_shipped,
    wait_terminal,
)

pytestmark = [pytest.mark.postgres, pytest.mark.clickhouse]

CHUNK = 500
POISONED_ENTITIES = 5_000  # 10 chunks, one of them poison
OTHER_ENTITIES = 10_000  # 20 chunks of another account's job, interleaved with them on every partition
POISON_CHUNK = 1
CAP = 3


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClickHouseStore]:
    """chDB hosts one data path per process: one store for the module."""
    ch = in_process_store(f"chdb://{tmp_path_factory.mktemp('chdb')}")
    ch.migrate()
    yield ch
    ch.close()


@pytest.fixture(scope="module")
def poison_db(pg_server_url: str) -> Iterator[str]:
    with own_database(pg_server_url) as url:
        yield url


@pytest.fixture(params=["postgres", pytest.param("kafka", marks=pytest.mark.kafka)])
def settings(request: pytest.FixtureRequest, poison_db: str) -> Iterator[Settings]:
    queue_url = None
    if request.param == "kafka":
        queue_url = f"kafka://{request.getfixturevalue('kafka_bootstrap')}"
    made = pipeline_settings(
        poison_db, queue_url=queue_url, chunk_size=CHUNK, poison_delivery_cap=CAP, dispatch_window_chunks=4
    )
    yield made
    if made.queue_kind == "kafka":
        delete_topics(made.kafka_bootstrap, prefix=made.namespace)


def _dead_letters(settings: Settings) -> list[DeadLetter]:
    if settings.queue_kind == "kafka":
        return KafkaDeadLetterReader(
            settings.kafka_bootstrap, topic_prefix=settings.namespace
        ).read_dead_letters()
    with PostgresQueue(settings.postgres_dsn, topic_prefix=settings.namespace) as queue:
        return queue.read_dead_letters()


def _chunk_placement(settings: Settings) -> dict[tuple[str, int], tuple[int, int]]:
    """(job, chunk) → (partition, offset) of every message in the chunks topic, read from the start."""
    topic = f"{settings.namespace}.chunks"
    consumer = Consumer(
        consumer_config(settings.kafka_bootstrap, f"placement-{uuid.uuid4().hex}", "placement")
        | {"enable.partition.eof": True}
    )
    placement: dict[tuple[str, int], tuple[int, int]] = {}
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(settings.kafka_partitions)])
        at_end: set[int] = set()
        deadline = time.monotonic() + 30
        while len(at_end) < settings.kafka_partitions and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=100, timeout=0.5):
                err = msg.error()
                if err is not None:
                    assert err.code() == KafkaError._PARTITION_EOF, err
                    at_end.add(int(msg.partition() or 0))
                    continue
                message = decode_chunk(msg.value() or b"")
                placement.setdefault(
                    (message.job_id, message.chunk_no), (int(msg.partition() or 0), int(msg.offset() or 0))
                )
    finally:
        consumer.close()
    return placement


def _chunk_rows(conn: psycopg.Connection[Any], job_id: UUID) -> dict[int, tuple[str, int, Any]]:
    rows = conn.execute(
        "SELECT chunk_no, state, deliveries, applied_at FROM bulk_action_chunks WHERE job_id = %s", (job_id,)
    ).fetchall()
    conn.commit()
    return {int(no): (str(state), int(deliveries), applied_at) for no, state, deliveries, applied_at in rows}


def _untagged_ids_of_chunk(conn: psycopg.Connection[Any], job_id: UUID, chunk_no: int, tag: str) -> int:
    """How many of the chunk's entities do not hold `tag` (its ids read from the ledger payload)."""
    from crm_bulk.ledger.payload import decode_payload

    row = conn.execute(
        "SELECT payload FROM bulk_action_chunks WHERE job_id = %s AND chunk_no = %s", (job_id, chunk_no)
    ).fetchone()
    assert row is not None
    ids = decode_payload(bytes(row[0])).get_column("id").to_list()
    untagged = conn.execute(
        "SELECT count(*) FROM contacts WHERE id = ANY(%s) AND NOT (tags @> ARRAY[%s]::text[])", (ids, tag)
    ).fetchone()
    conn.commit()
    assert untagged is not None
    return int(untagged[0])


def test_a_chunk_that_kills_its_workers_is_dead_lettered_after_the_cap_and_the_rest_completes(
    settings: Settings, store: ClickHouseStore, tmp_path: Path
) -> None:
    kill_log = tmp_path / "kills.log"
    with psycopg.connect(settings.postgres_dsn) as conn:
        conn.execute(
            "UPDATE bulk_actions SET status = 'failed' WHERE status IN ('scheduled', 'queued', 'running')"
        )
        conn.commit()
        poisoned_account = make_account(conn)
        seed_contacts(conn, poisoned_account, POISONED_ENTITIES)
        other_account = make_account(conn)
        seed_contacts(conn, other_account, OTHER_ENTITIES)
        poisoned = submit_tagging(conn, poisoned_account, "poisoned")
        other = submit_tagging(conn, other_account, "bystander")
        started = time.monotonic()
        with (
            scheduler(settings),
            shipper(settings, store),
            faulty_worker_pool(
                settings,
                2,
                tmp_path,
                kill_chunks=[(poisoned, POISON_CHUNK)],
                kill_log=kill_log,
                env=settings_env(settings),
            ) as pool,
        ):
            poisoned_job = wait_terminal(conn, poisoned_account, poisoned, timeout=240)
            other_job = wait_terminal(conn, other_account, other, timeout=120)
            elapsed = time.monotonic() - started
            wait_shipped(conn, poisoned, timeout=60)
            wait_shipped(conn, other, timeout=60)
            pool_log = pool.log_path.read_text(errors="replace")
        placement = _chunk_placement(settings) if settings.queue_kind == "kafka" else {}
        print(f"{settings.queue_kind}: both jobs terminal {elapsed:.1f} s after the start")

        # Killed exactly CAP times, then failed without being applied again.
        assert kills_logged(kill_log) == [f"{poisoned}/{POISON_CHUNK}"] * CAP, pool.log()
        assert pool_log.count("died with exit code -9") == CAP
        chunks = _chunk_rows(conn, poisoned)
        assert chunks[POISON_CHUNK][:2] == ("failed", CAP + 1)
        assert {no: row[0] for no, row in chunks.items() if no != POISON_CHUNK} == dict.fromkeys(
            set(chunks) - {POISON_CHUNK}, "done"
        )
        (letter,) = _dead_letters(settings)
        assert letter.message is not None
        assert (letter.message.job_id, letter.message.chunk_no) == (str(poisoned), POISON_CHUNK)
        assert "poison chunk: delivered 4 times" in letter.reason and letter.attempts == CAP

        # Exact counts on the job, the ledger, the data and the log.
        assert (
            poisoned_job.status,
            poisoned_job.total,
            poisoned_job.succeeded,
            poisoned_job.failed,
            poisoned_job.skipped,
        ) == ("completed_with_errors", POISONED_ENTITIES, POISONED_ENTITIES - CHUNK, CHUNK, 0)
        summary = ledger_summary(conn, poisoned)
        assert (summary["done"], summary["failed_chunks"], summary["failed"]) == (
            POISONED_ENTITIES // CHUNK - 1,
            1,
            CHUNK,
        )
        assert tagged_contacts(conn, poisoned_account, "poisoned") == POISONED_ENTITIES - CHUNK
        assert _untagged_ids_of_chunk(conn, poisoned, POISON_CHUNK, "poisoned") == CHUNK
        n = POISONED_ENTITIES
        assert clickhouse_counts(store, poisoned, poisoned_account) == (n, n, n)
        codes = (
            client_of(store)
            .query(
                "SELECT code, outcome, count() FROM entity_outcomes FINAL WHERE job_id = {j:UUID} "
                "GROUP BY code, outcome ORDER BY code",
                parameters={"j": str(poisoned)},
            )
            .result_rows
        )
        assert [tuple(r) for r in codes] == [
            ("poison", "failed", CHUNK),
            ("succeeded", "succeeded", POISONED_ENTITIES - CHUNK),
        ]
        events = [e["event"] for e in plain(store.job_events(poisoned, poisoned_account))]
        assert (events.count("dead_lettered"), events.count("finished")) == (1, 1)

        # The other job is whole; on Kafka, its chunks queued behind the poison on the same partition were
        # applied once the poison was failed (they waited for it, and not beyond the cap).
        assert (other_job.status, other_job.succeeded, other_job.failed) == ("completed", OTHER_ENTITIES, 0)
        assert tagged_contacts(conn, other_account, "bystander") == OTHER_ENTITIES
        assert clickhouse_counts(store, other, other_account) == (OTHER_ENTITIES,) * 3
        if settings.queue_kind == "kafka":
            _assert_partition_moved_on(placement, poisoned, other, chunks, _chunk_rows(conn, other))


def _assert_partition_moved_on(
    placement: dict[tuple[str, int], tuple[int, int]],
    poisoned: UUID,
    other: UUID,
    poisoned_chunks: dict[int, tuple[str, int, Any]],
    other_chunks: dict[int, tuple[str, int, Any]],
) -> None:
    partition, offset = placement[(str(poisoned), POISON_CHUNK)]
    behind = [
        no for (job, no), (p, o) in placement.items() if job == str(other) and p == partition and o > offset
    ]
    assert behind, f"no chunk of the other job was queued behind the poison on partition {partition}"
    failed_at = poisoned_chunks[POISON_CHUNK][2]
    for no in behind:
        state, _deliveries, applied_at = other_chunks[no]
        assert state == "done"
        assert applied_at >= failed_at
    print(f"partition {partition}: {len(behind)} chunks of the other job waited behind the poison chunk")


def test_a_delivery_is_counted_in_its_own_commit_and_only_while_the_chunk_is_open(poison_db: str) -> None:
    with quiet_connection(poison_db) as conn, psycopg.connect(poison_db, autocommit=True) as other:
        account = make_account(conn)
        seed_contacts(conn, account, 20)
        job_id = submit_tagging(conn, account, "counted")
        assert plan_next_job(conn, chunk_size=10) == job_id
        assert [count_delivery(conn, job_id, 0) for _ in range(2)] == [1, 2]
        # Committed on its own: another session sees it at once.
        assert _chunk_rows(other, job_id)[0][1] == 2
        apply_chunk(conn, job_id, 0, worker="w-test")
        assert count_delivery(conn, job_id, 0) is None
        assert _chunk_rows(other, job_id)[0][1] == 2
        assert count_delivery(conn, job_id, 99) is None
        with psycopg.connect(poison_db) as in_transaction, pytest.raises(ValueError, match="autocommit"):
            count_delivery(in_transaction, job_id, 1)


def test_a_delivery_counted_while_an_apply_holds_the_chunk_waits_and_finds_it_final(poison_db: str) -> None:
    with quiet_connection(poison_db) as conn:
        account = make_account(conn)
        seed_contacts(conn, account, 10)
        job_id = submit_tagging(conn, account, "raced")
        assert plan_next_job(conn, chunk_size=10) == job_id
        with psycopg.connect(poison_db) as applying:
            # An apply in progress: its transaction is still open (apply_chunk's own is a savepoint of it),
            # so the chunk row is locked and `done` is not committed yet.
            applying.execute("SELECT 1")
            assert apply_chunk(applying, job_id, 0, worker="w-first").state == "applied"
            counted: list[int | None] = []
            waiter = threading.Thread(target=lambda: counted.append(count_delivery(conn, job_id, 0)))
            waiter.start()
            waiter.join(0.5)
            assert waiter.is_alive(), "the count did not wait for the apply holding the row"
            applying.commit()
            waiter.join(10)
        assert counted == [None]


def test_a_poison_chunk_fails_with_one_poison_row_per_entity_and_exact_job_counts(poison_db: str) -> None:
    with quiet_connection(poison_db) as conn:
        account = make_account(conn)
        seed_contacts(conn, account, 20)
        job_id = submit_tagging(conn, account, "half")
        assert plan_next_job(conn, chunk_size=10) == job_id
        apply_chunk(conn, job_id, 0, worker="w-test")
        reason = poison_reason(4, cap=3)
        assert fail_chunk(conn, job_id, 1, reason=reason, worker="w-test", attempts=3, code=POISON_CODE)
        assert not fail_chunk(conn, job_id, 1, reason=reason, worker="w-test", attempts=3, code=POISON_CODE)
        row = conn.execute(
            "SELECT state, error, outcomes FROM bulk_action_chunks WHERE job_id = %s AND chunk_no = 1",
            (job_id,),
        ).fetchone()
        assert row is not None and row[:2] == ("failed", reason)
        outcomes = decode_outcomes(bytes(row[2]))
        assert outcomes.height == 10
        assert set(zip(outcomes["outcome"], outcomes["code"], outcomes["message"], strict=True)) == {
            ("failed", "poison", reason)
        }
        stamp_outboxes_shipped(conn, job_id)
        finish_jobs(conn)
        job = get_job(conn, account, job_id)
        assert (job.status, job.total, job.succeeded, job.failed, job.skipped) == (
            "completed_with_errors",
            20,
            10,
            10,
            0,
        )
