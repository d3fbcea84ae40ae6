"""Chunk inputs as stored in `bulk_action_chunks.payload`: Arrow IPC streams, zstd-compressed.

Id targets (ids, filter, all) carry one `id` int64 column, ascending and duplicate-free; imports carry the
record columns of `IMPORT_SCHEMA`, one row per input record in input order, plus `repeat_of`: for a record
whose normalised email an earlier record of the same import holds, that record's number (1-based, counted
over the whole import), set when the chunk is stored (`crm_bulk.planner.mark_repeats`).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import polars as pl
import pyarrow as pa

from crm_bulk.errors import ValidationError
from crm_bulk.ipc import read_ipc, write_ipc

ID_SCHEMA = pa.schema([pa.field("id", pa.int64(), nullable=False)])
IMPORT_TEXT_COLUMNS: tuple[str, ...] = ("email", "first_name", "last_name", "phone", "company", "job_title")
IMPORT_SCHEMA = pa.schema(
    [pa.field(name, pa.utf8()) for name in IMPORT_TEXT_COLUMNS]
    + [pa.field("tags", pa.list_(pa.utf8())), pa.field("custom_fields", pa.utf8())]
)
REPEAT_OF = "repeat_of"
IMPORT_PAYLOAD_SCHEMA = IMPORT_SCHEMA.append(pa.field(REPEAT_OF, pa.int64()))


def encode_ids(ids: npt.NDArray[np.int64] | pl.Series) -> bytes:
    """The payload of an id chunk."""
    values = ids.to_numpy() if isinstance(ids, pl.Series) else ids
    array = pa.array(values.astype(np.int64, copy=False), type=pa.int64())
    return write_ipc(pa.Table.from_arrays([array], schema=ID_SCHEMA))


def import_frame(frame: pl.DataFrame) -> pl.DataFrame:
    """`frame` with exactly the import columns: missing ones null, text cast to Utf8, `tags` a list of
    strings. Unknown columns, or a `custom_fields` column that is not JSON text, raise `ValidationError`."""
    unknown = sorted(set(frame.columns) - set(IMPORT_SCHEMA.names))
    if unknown:
        raise ValidationError(f"unknown import columns: {unknown}", field=unknown[0], code="unknown_field")
    columns: list[pl.Series] = []
    for name in (*IMPORT_TEXT_COLUMNS, "custom_fields"):
        if name not in frame.columns:
            columns.append(pl.Series(name, [None] * frame.height, dtype=pl.Utf8))
            continue
        series = frame.get_column(name)
        if series.dtype not in (pl.Utf8, pl.Null):
            if name == "custom_fields":
                raise ValidationError(
                    "custom_fields must be JSON object text", field=name, code="invalid_type"
                )
            series = series.cast(pl.Utf8)
        columns.append(series.cast(pl.Utf8))
    tags = frame.get_column("tags") if "tags" in frame.columns else None
    if tags is None or tags.dtype == pl.Null:
        tags = pl.Series("tags", [None] * frame.height, dtype=pl.List(pl.Utf8))
    elif not isinstance(tags.dtype, pl.List):
        raise ValidationError("tags must be a list of strings", field="tags", code="invalid_type")
    columns.insert(len(IMPORT_TEXT_COLUMNS), tags.cast(pl.List(pl.Utf8)))
    return pl.DataFrame(columns)


def encode_records(frame: pl.DataFrame) -> bytes:
    """The payload of an import chunk (`frame` as `import_frame` returns it, with `repeat_of`)."""
    table = frame.select(IMPORT_PAYLOAD_SCHEMA.names).to_arrow().cast(IMPORT_PAYLOAD_SCHEMA)
    return write_ipc(table)


def decode_payload(raw: bytes) -> pl.DataFrame:
    """A chunk payload as a Polars frame."""
    return read_ipc(raw)
