"""What the claiming backends (the Postgres table and the in-memory twin) share: turning claimed rows into
deliveries, with undecodable bodies moved to the dead letters instead of delivered."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from crm_bulk.queue.messages import DeadLetter, read_chunk
from crm_bulk.queue.protocol import Delivery

log = logging.getLogger(__name__)


def claimed_deliveries(
    claimed: Iterable[tuple[int, bytes, int]],
    *,
    topic: str,
    dead_topic: str,
    worker: str,
    bury: Callable[[int, DeadLetter], None],
) -> list[Delivery]:
    """Deliveries of claimed (row id, body, deliveries so far) rows, oldest first; `bury(row_id, letter)`
    dead-letters and acknowledges each body that is not a chunk message."""
    deliveries: list[Delivery] = []
    for row_id, body, deliveries_so_far in sorted(claimed):
        message = read_chunk(body, worker=worker)
        if isinstance(message, DeadLetter):
            log.error(
                "queue %s row %d is not a chunk message (%s); moving it to %s",
                topic,
                row_id,
                message.reason,
                dead_topic,
            )
            bury(row_id, message)
            continue
        if deliveries_so_far > 1:
            log.info("redelivering %s/%s (delivery %d)", message.job_id, message.chunk_no, deliveries_so_far)
        deliveries.append(Delivery(message=message, partition=0, offset=row_id))
    return deliveries
