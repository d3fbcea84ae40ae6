"""The chunk ledger: one row per chunk of a job (`bulk_action_chunks`), its state and every transition, and
the job counters each transition moves. Only this package writes chunk states.

| transition   | from → to                  | module            | called by                          |
|--------------|----------------------------|-------------------|------------------------------------|
| planned      | - → pending                | `planned`         | the planner, streamed imports      |
| discarded    | pending → (deleted)        | `planned`         | a failed or abandoned upload       |
| released     | pending → released         | `released`        | the scheduler's fair release       |
| republished  | released → released        | `released`        | the scheduler (stale releases)     |
| delivered    | open, delivery counted     | `deliveries`      | the worker, before it applies      |
| claimed      | locked for one transaction | `claimed`         | the apply engine                   |
| done         | open → done                | `claimed`         | the apply engine                   |
| retried      | open, attempt noted        | `terminal`        | the worker                         |
| failed       | open → failed              | `terminal`        | the worker (retries exhausted, or  |
|              |                            |                   | delivered past the poison cap)     |
| cancelled    | open → cancelled           | `terminal`        | job cancel, the scheduler's sweep  |

Chunk inputs are Arrow IPC payloads (`payload`); outcomes go to the entity log's outbox in the same
transaction. Lock order everywhere: chunk rows first, then the job row.
"""

from crm_bulk.ledger.claimed import ChunkLookup, ClaimedChunk, claim_chunk, complete_chunk, look_up_chunk
from crm_bulk.ledger.deliveries import POISON_CODE, count_delivery, is_poison, poison_reason
from crm_bulk.ledger.planned import (
    add_chunks,
    close_import,
    discard_abandoned_uploads,
    discard_upload,
    insert_chunks,
    mark_planned,
    touch_upload,
)
from crm_bulk.ledger.released import (
    InFlight,
    in_flight,
    lock_pending,
    mark_released,
    republish_stale,
)
from crm_bulk.ledger.states import CHUNK_STATES, FINAL_CHUNK_STATES, OPEN_CHUNK_STATES, ChunkState
from crm_bulk.ledger.terminal import CancelledChunks, cancel_open_chunks, fail_chunk, note_retry

__all__ = [
    "CHUNK_STATES",
    "FINAL_CHUNK_STATES",
    "OPEN_CHUNK_STATES",
    "POISON_CODE",
    "CancelledChunks",
    "ChunkLookup",
    "ChunkState",
    "ClaimedChunk",
    "InFlight",
    "add_chunks",
    "cancel_open_chunks",
    "claim_chunk",
    "close_import",
    "complete_chunk",
    "count_delivery",
    "discard_abandoned_uploads",
    "discard_upload",
    "fail_chunk",
    "in_flight",
    "insert_chunks",
    "is_poison",
    "lock_pending",
    "look_up_chunk",
    "mark_planned",
    "mark_released",
    "note_retry",
    "poison_reason",
    "republish_stale",
    "touch_upload",
]
