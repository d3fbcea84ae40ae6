"""The in-memory queue twin: what the contract suite cannot show without services or a second process —
a killed member, waiting consumers woken by a publish, and worker threads sharing one broker."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from crm_bulk.queue.memory_queue import MemoryBroker
from crm_bulk.queue.messages import ChunkMessage
from crm_bulk.queue.protocol import Delivery


def _messages(count: int) -> list[ChunkMessage]:
    job_id = str(uuid.uuid4())
    return [ChunkMessage(job_id=job_id, chunk_no=n, account_id=7, entity_count=10) for n in range(count)]


def _ids(deliveries: list[Delivery]) -> list[int]:
    return sorted(d.message.chunk_no for d in deliveries)


def test_deliveries_of_a_killed_consumer_reach_another_member() -> None:
    broker = MemoryBroker()
    with broker.publisher() as publisher:
        publisher.publish(_messages(8))
    doomed = broker.consumer(client_id="doomed")
    held = doomed.consume(max_messages=5, timeout=0.1)
    survivor = broker.consumer(client_id="survivor")
    assert _ids(survivor.consume(max_messages=10, timeout=0.1)) == [5, 6, 7]
    doomed.kill()
    assert _ids(survivor.consume(max_messages=10, timeout=0.1)) == _ids(held)
    with pytest.raises(RuntimeError, match="killed"):
        doomed.commit(held)
    doomed.close()


def test_a_consumer_waiting_for_work_wakes_when_it_is_published() -> None:
    broker = MemoryBroker()
    sent = _messages(1)
    timer = threading.Timer(0.1, lambda: broker.publisher().publish(sent))
    timer.start()
    started = time.monotonic()
    with broker.consumer() as consumer:
        got = consumer.consume(max_messages=1, timeout=5.0)
    timer.join()
    assert [d.message for d in got] == sent
    assert time.monotonic() - started < 2.0


def test_an_empty_topic_yields_nothing_after_the_timeout() -> None:
    with MemoryBroker().consumer() as consumer:
        assert consumer.consume(max_messages=10, timeout=0.05) == []
        assert consumer.lag() == 0


def test_worker_threads_share_one_broker_without_overlap() -> None:
    broker = MemoryBroker()
    sent = _messages(500)
    seen: list[Delivery] = []
    seen_lock = threading.Lock()

    def work(client_id: str) -> None:
        with broker.consumer(client_id=client_id) as consumer:
            # A second without work means the publisher is done.
            while batch := consumer.consume(max_messages=7, timeout=1.0):
                consumer.commit(batch)
                with seen_lock:
                    seen.extend(batch)

    workers = [threading.Thread(target=work, args=(f"w-{n}",)) for n in range(4)]
    with broker.publisher() as publisher:
        publisher.publish(sent[:50])
        for worker in workers:
            worker.start()
        for start in range(50, len(sent), 50):
            publisher.publish(sent[start : start + 50])
    for worker in workers:
        worker.join(10)
    assert _ids(seen) == list(range(len(sent)))
    assert broker.waiting() == 0


def test_lag_counts_held_deliveries_until_they_are_committed() -> None:
    broker = MemoryBroker()
    broker.publisher().publish(_messages(3))
    with broker.consumer() as consumer:
        got = consumer.consume(max_messages=2, timeout=0.1)
        assert consumer.lag() == 3
        consumer.commit(got)
        assert consumer.lag() == 1
        assert "committed=2" in repr(consumer)


@pytest.mark.parametrize("raw", [b"\xc1 not msgpack", b"\x93\x01\x02\x03"])
def test_raw_bytes_that_are_no_chunk_message_become_a_dead_letter(raw: bytes) -> None:
    broker = MemoryBroker()
    broker.publish_raw(raw)
    with broker.consumer(client_id="w-1") as consumer:
        assert consumer.consume(max_messages=10, timeout=0.05) == []
    [letter] = broker.dead_letters()
    assert (letter.raw, letter.message, letter.worker, letter.attempts) == (raw, None, "w-1", 0)
    assert letter.reason.startswith("undecodable message: ")
    assert broker.waiting() == 0


def test_a_dead_letter_keeps_the_message_and_leaves_acknowledging_to_commit() -> None:
    broker = MemoryBroker()
    sent = _messages(1)
    broker.publisher().publish(sent)
    with broker.consumer() as consumer:
        [delivery] = consumer.consume(max_messages=1, timeout=0.1)
        consumer.dead_letter(delivery, reason="deadlock detected", worker="w-2", attempts=3)
        assert broker.waiting() == 1
        consumer.commit([delivery])
    with broker.dead_letter_reader() as reader:
        letters = reader.read_dead_letters(timeout=0)
    assert [(x.message, x.reason, x.worker, x.attempts) for x in letters] == [
        (sent[0], "deadlock detected", "w-2", 3)
    ]
    assert broker.waiting() == 0
