"""Chunk states and the sets the rest of the platform asks about.

`pending` (planned, not yet in the queue) → `released` (published) → `done` (applied) | `failed` (retries
exhausted or a permanent error) | `cancelled` (its job was cancelled first). A final state never changes.
"""

from __future__ import annotations

from typing import Literal

ChunkState = Literal["pending", "released", "done", "failed", "cancelled"]
CHUNK_STATES: tuple[ChunkState, ...] = ("pending", "released", "done", "failed", "cancelled")
OPEN_CHUNK_STATES: frozenset[str] = frozenset({"pending", "released"})
FINAL_CHUNK_STATES: frozenset[str] = frozenset({"done", "failed", "cancelled"})
# Ledger `error` and outbox messages keep the reason readable, not a whole traceback.
MAX_REASON = 2000
