"""What travels on the queue: a reference to one ledger chunk, and the dead letter that wraps a failed one.

The chunk's input stays in the ledger (`bulk_action_chunks.payload`), so a message is a few dozen bytes of
MessagePack whatever the chunk size, and every backend and every redelivery reads the same bytes.
"""

from __future__ import annotations

import time

import msgspec


class ChunkMessage(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    """One chunk to apply: the ledger row (`job_id`, `chunk_no`) plus what pacing needs without a query."""

    job_id: str
    chunk_no: int
    account_id: int
    entity_count: int
    attempt: int = 1

    @property
    def key(self) -> bytes:
        """Partition key: a job's chunks spread over partitions; a redelivery lands where the first did."""
        return f"{self.job_id}/{self.chunk_no}".encode()


class DeadLetter(msgspec.Struct, frozen=True):
    """A chunk that could not be applied, with the reason; `raw` holds an undecodable message's bytes."""

    reason: str
    worker: str
    failed_at: float
    attempts: int
    message: ChunkMessage | None = None
    raw: bytes | None = None


_chunk_encoder = msgspec.msgpack.Encoder()
_chunk_decoder = msgspec.msgpack.Decoder(ChunkMessage)
_dead_decoder = msgspec.msgpack.Decoder(DeadLetter)


def encode_chunk(message: ChunkMessage) -> bytes:
    """MessagePack bytes of a chunk message."""
    return _chunk_encoder.encode(message)


def decode_chunk(raw: bytes) -> ChunkMessage:
    """The chunk message in `raw`; `msgspec.DecodeError` (a ValueError) when it is not one."""
    return _chunk_decoder.decode(raw)


def encode_dead_letter(letter: DeadLetter) -> bytes:
    """MessagePack bytes of a dead letter."""
    return _chunk_encoder.encode(letter)


def decode_dead_letter(raw: bytes) -> DeadLetter:
    """The dead letter in `raw`."""
    return _dead_decoder.decode(raw)


def read_chunk(raw: bytes, *, worker: str) -> ChunkMessage | DeadLetter:
    """The chunk message in `raw`, or, when it is not one, the dead letter that keeps its bytes and why."""
    try:
        return decode_chunk(raw)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return DeadLetter(
            reason=f"undecodable message: {exc}", worker=worker, failed_at=time.time(), attempts=0, raw=raw
        )


def failed_chunk_letter(message: ChunkMessage, *, reason: str, worker: str, attempts: int) -> DeadLetter:
    """The dead letter of a chunk that could not be applied, stamped now."""
    return DeadLetter(reason=reason, worker=worker, failed_at=time.time(), attempts=attempts, message=message)
