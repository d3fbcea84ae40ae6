"""Arrow IPC streams, zstd-compressed: the one encoding of chunk inputs (ledger) and outcomes (entity log)."""

from __future__ import annotations

import polars as pl
import pyarrow as pa

_WRITE_OPTIONS = pa.ipc.IpcWriteOptions(compression="zstd")


def write_ipc(table: pa.Table) -> bytes:
    """One Arrow IPC stream holding `table`, buffers zstd-compressed."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema, options=_WRITE_OPTIONS) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def read_ipc(raw: bytes) -> pl.DataFrame:
    """An Arrow IPC stream as a Polars frame."""
    table = pa.ipc.open_stream(pa.py_buffer(raw)).read_all()
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame
