"""The apply engine: one chunk, one transaction, one set-based statement, every entity's outcome."""

from crm_bulk.apply.engine import ChunkResult, apply_chunk

__all__ = ["ChunkResult", "apply_chunk"]
