"""An import's input records as the entity log keeps them: one JSON object text per record, as it was sent.

The shipper takes them from the chunk's payload (`bulk_action_chunks.payload`, the record columns the upload
or the inline `records` gave, before any normalisation) and stores each beside its outcome
(`entity_outcomes.input`), so result files and retries read the record back from the log alone. Columns the
payload holds for the apply engine only (`repeat_of`) are left out. Values keep their payload types: text
fields as strings, `tags` as a list of strings, `custom_fields` as the JSON object text it arrived as.
"""

from __future__ import annotations

import polars as pl
import pyarrow as pa

from crm_bulk.ipc import read_ipc

# Payload columns that are the platform's bookkeeping, not part of the record as sent.
_NOT_INPUT = frozenset({"repeat_of"})


def encode_inputs(payload: bytes, row_nos: pa.Array) -> pa.Array:
    """The JSON text of the payload's records at positions `row_nos` (one per outcome row, in its order)."""
    records = read_ipc(payload)
    columns = [name for name in records.columns if name not in _NOT_INPUT]
    encoded = records.select(pl.struct(columns).struct.json_encode().alias("input")).get_column("input")
    taken = encoded.to_arrow().take(row_nos.cast(pa.int64()))
    return taken.cast(pa.string())


def decode_inputs(texts: pl.Series, schema: pa.Schema) -> pl.DataFrame:
    """The records of `encode_inputs` texts back as columns of `schema` (missing fields null). An empty text
    (an outcome shipped before the log kept inputs) is a record of nulls."""
    empty = pl.from_arrow(schema.empty_table())
    assert isinstance(empty, pl.DataFrame)
    decoded = texts.replace("", None).str.json_decode(pl.Struct(empty.schema))
    return pl.DataFrame({"_input": decoded}).unnest("_input")
