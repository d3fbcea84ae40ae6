"""PostgreSQL binary COPY input built from whole columns with numpy, never row by row.

The binary format is a header, then per row an int16 field count and per field an int32 byte length (-1 for
NULL) followed by the value in the type's binary send format, then an int16 -1 trailer. Every piece of that
is a run of bytes per row, so the whole buffer is assembled by one vectorised gather per piece ("part"):
a part names, for every row, where its bytes start in a source buffer and how many there are.

Supported column kinds: `int4`, `int8`, `text`, `jsonb` (version byte 1 + JSON text), `text[]` (one
dimension, no NULL elements).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
import polars as pl
import pyarrow as pa

ColumnKind = Literal["int4", "int8", "text", "jsonb", "text[]"]

_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
_TRAILER = b"\xff\xff"
_TEXT_OID = 25
_EMPTY_TEXT_ARRAY = np.frombuffer(np.array([0, 0, _TEXT_OID], dtype=">i4").tobytes(), dtype=np.uint8)

Bytes = npt.NDArray[np.uint8]
Ints = npt.NDArray[np.int64]


@dataclass(frozen=True)
class _Part:
    """For every row, `length[r]` bytes of `data` starting at `start[r]`."""

    data: Bytes
    start: Ints
    length: Ints


def encode_copy_binary(frame: pl.DataFrame, columns: Sequence[tuple[str, ColumnKind]]) -> bytes:
    """The whole `COPY … FROM STDIN (FORMAT BINARY)` input for `columns` of `frame`, in that order."""
    n = frame.height
    field_count = np.frombuffer(np.array([len(columns)], dtype=">i2").tobytes(), dtype=np.uint8)
    parts = [_constant_part(field_count, n)]
    for name, kind in columns:
        payload, valid = _payload_parts(frame.get_column(name), kind)
        parts.extend(_field_parts(payload, valid, n))
    body, _ = _concat_parts(parts, n)
    return _HEADER + body.tobytes() + _TRAILER


def _payload_parts(series: pl.Series, kind: ColumnKind) -> tuple[list[_Part], npt.NDArray[np.bool_]]:
    valid = series.is_not_null().to_numpy()
    if kind == "int4":
        return [_fixed_part(series, ">i4", valid)], valid
    if kind == "int8":
        return [_fixed_part(series, ">i8", valid)], valid
    if kind == "text":
        return [_string_part(series, valid)], valid
    if kind == "jsonb":
        version = _constant_part(np.array([1], dtype=np.uint8), series.len(), valid)
        return [version, _string_part(series, valid)], valid
    return [*_text_array_parts(series, valid)], valid


def _field_parts(payload: list[_Part], valid: npt.NDArray[np.bool_], n: int) -> list[_Part]:
    """The int32 length (or -1 for NULL) in front of a field's payload parts."""
    total = np.zeros(n, dtype=np.int64)
    for part in payload:
        total += part.length
    size = np.where(valid, total, -1).astype(">i4")
    prefix = _Part(
        np.frombuffer(size.tobytes(), dtype=np.uint8), np.arange(n, dtype=np.int64) * 4, _full(n, 4)
    )
    return [prefix, *payload]


def _fixed_part(series: pl.Series, dtype: str, valid: npt.NDArray[np.bool_]) -> _Part:
    values = series.fill_null(0).to_numpy().astype(dtype)
    width = values.dtype.itemsize
    return _Part(
        np.frombuffer(values.tobytes(), dtype=np.uint8),
        np.arange(series.len(), dtype=np.int64) * width,
        np.where(valid, width, 0).astype(np.int64),
    )


def _string_part(series: pl.Series, valid: npt.NDArray[np.bool_]) -> _Part:
    data, offsets = _string_buffers(series.to_arrow())
    length = np.where(valid, np.diff(offsets), 0)
    return _Part(data, offsets[:-1].copy(), length)


def _string_buffers(array: pa.Array | pa.ChunkedArray) -> tuple[Bytes, Ints]:
    """(UTF-8 bytes, int64 offsets of len+1) of a string array, whatever its Arrow layout."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    array = array.cast(pa.large_string())
    _, offsets_buf, data_buf = array.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int64)[array.offset : array.offset + len(array) + 1]
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, dtype=np.uint8)
    return data, offsets.astype(np.int64)


def _text_array_parts(series: pl.Series, valid: npt.NDArray[np.bool_]) -> list[_Part]:
    """One-dimensional text[]: a 20-byte header (12 when empty), then int32 length + bytes per element."""
    n = series.len()
    counts = series.list.len().fill_null(0).to_numpy().astype(np.int64)
    elements = series.explode(empty_as_null=False).drop_nulls() if n else pl.Series([], dtype=pl.Utf8)
    elem_valid = np.ones(elements.len(), dtype=np.bool_)
    elem_parts = _field_parts([_string_part(elements, elem_valid)], elem_valid, elements.len())
    elem_blob, elem_offsets = _concat_parts(elem_parts, elements.len())
    list_offsets = np.concatenate([[0], np.cumsum(counts)])
    header = np.zeros((n, 5), dtype=">i4")
    header[:, 0] = 1
    header[:, 2] = _TEXT_OID
    header[:, 3] = counts
    header[:, 4] = 1
    header_bytes = np.frombuffer(header.tobytes(), dtype=np.uint8)
    header_part = _Part(
        header_bytes,
        np.arange(n, dtype=np.int64) * 20,
        np.where(valid & (counts > 0), 20, 0).astype(np.int64),
    )
    empty_part = _constant_part(_EMPTY_TEXT_ARRAY, n, valid & (counts == 0))
    body_start = elem_offsets[list_offsets[:-1]]
    body_part = _Part(elem_blob, body_start, np.where(valid, elem_offsets[list_offsets[1:]] - body_start, 0))
    return [header_part, empty_part, body_part]


def _constant_part(data: Bytes, n: int, mask: npt.NDArray[np.bool_] | None = None) -> _Part:
    length = _full(n, data.size) if mask is None else np.where(mask, data.size, 0).astype(np.int64)
    return _Part(data, np.zeros(n, dtype=np.int64), length)


def _full(n: int, value: int) -> Ints:
    return np.full(n, value, dtype=np.int64)


def _concat_parts(parts: list[_Part], n: int) -> tuple[Bytes, Ints]:
    """Row r of the result is part0[r] + part1[r] + …; returns (bytes, int64 row offsets of len n+1)."""
    if n == 0:
        return np.zeros(0, dtype=np.uint8), np.zeros(1, dtype=np.int64)
    lengths = np.stack([part.length for part in parts], axis=1)
    row_offsets = np.concatenate([[0], np.cumsum(lengths.sum(axis=1))]).astype(np.int64)
    dest_starts = row_offsets[:-1, None] + np.cumsum(lengths, axis=1) - lengths
    out = np.empty(int(row_offsets[-1]), dtype=np.uint8)
    for j, part in enumerate(parts):
        length = part.length
        total = int(length.sum())
        if total == 0:
            continue
        # Byte k of the part's concatenation sits `inner[k]` bytes into its row's run.
        inner = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(length) - length, length)
        out[np.repeat(dest_starts[:, j], length) + inner] = part.data[np.repeat(part.start, length) + inner]
    return out, row_offsets
