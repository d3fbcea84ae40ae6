"""The per-chunk outbox: one final outcome row per target entity, as an Arrow IPC stream.

Schema (written by the apply engine and the ledger, read by the log shipper): `row_no int32` (position in the
chunk input), `entity_id int64` (null for import rows that never got an id), `email utf8`, `outcome utf8`,
`code utf8`, `message utf8`, `changed_fields list<utf8>`. This module is its one codec.
"""

from __future__ import annotations

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from crm_bulk.ipc import write_ipc

OUTCOME_SCHEMA = pa.schema(
    [
        pa.field("row_no", pa.int32(), nullable=False),
        pa.field("entity_id", pa.int64()),
        pa.field("email", pa.utf8()),
        pa.field("outcome", pa.utf8(), nullable=False),
        pa.field("code", pa.utf8(), nullable=False),
        pa.field("message", pa.utf8()),
        pa.field("changed_fields", pa.list_(pa.utf8())),
    ]
)
OUTCOME_COLUMNS: tuple[str, ...] = tuple(OUTCOME_SCHEMA.names)
# The final outcomes an entity can have, in the order reads report them.
OUTCOMES: tuple[str, ...] = ("succeeded", "failed", "skipped")
# Columns without which a row says nothing; the others may be absent (nulls) in an outbox from elsewhere.
_REQUIRED_COLUMNS = ("row_no", "outcome", "code")

# Every outcome code and the outcome it belongs to.
CODE_OUTCOME: dict[str, str] = {
    "succeeded": "succeeded",
    "not_found": "skipped",
    "no_change": "skipped",
    "duplicate_email": "skipped",
    "duplicate_in_input": "skipped",
    # A revert leaves a contact that changed after the job wrote it (crm_bulk.apply.restore).
    "changed_since": "skipped",
    "cancelled": "skipped",
    "invalid_email": "failed",
    "invalid_phone": "failed",
    "invalid_field": "failed",
    "too_long": "failed",
    "internal": "failed",
    # Delivered past `poison_delivery_cap` times without being applied: the chunk kept killing its workers.
    "poison": "failed",
}


def outcome_of(code: pl.Expr) -> pl.Expr:
    """The outcome (`succeeded`, `skipped`, `failed`) of a code column."""
    return code.replace_strict(CODE_OUTCOME, return_dtype=pl.Utf8)


def encode_outcomes(frame: pl.DataFrame) -> bytes:
    """The outbox bytes for an outcome frame with the `OUTCOME_SCHEMA` columns."""
    table = frame.select(OUTCOME_COLUMNS).to_arrow().cast(OUTCOME_SCHEMA)
    return write_ipc(table)


def decode_outcome_table(raw: bytes) -> pa.Table:
    """Outbox bytes as a table of `OUTCOME_SCHEMA`; ValueError or ArrowException if they are not an outbox.

    Optional columns that are absent become nulls; string views and large strings are cast to plain ones.
    """
    table = pa.ipc.open_stream(pa.py_buffer(raw)).read_all()
    missing = [name for name in _REQUIRED_COLUMNS if name not in table.column_names]
    if missing:
        raise ValueError(f"outbox lacks columns {missing}")
    columns = [
        table.column(f.name).cast(f.type)
        if f.name in table.column_names
        else pa.nulls(table.num_rows, f.type)
        for f in OUTCOME_SCHEMA
    ]
    outbox = pa.Table.from_arrays(columns, schema=OUTCOME_SCHEMA)
    for name in _REQUIRED_COLUMNS:
        if outbox.column(name).null_count:
            raise ValueError(f"outbox column {name} holds nulls")
    if not pc.all(pc.is_in(outbox.column("outcome"), value_set=pa.array(OUTCOMES))).as_py():
        raise ValueError(f"outbox holds an outcome other than {', '.join(OUTCOMES)}")
    return outbox


def decode_outcomes(raw: bytes) -> pl.DataFrame:
    """Outbox bytes back as a Polars frame (`decode_outcome_table`, same checks)."""
    frame = pl.from_arrow(decode_outcome_table(raw))
    assert isinstance(frame, pl.DataFrame)
    return frame


def outcome_counts(frame: pl.DataFrame) -> dict[str, int]:
    """`{"succeeded": n, "failed": n, "skipped": n}` of an outcome frame."""
    counts = dict.fromkeys(OUTCOMES, 0)
    grouped = frame.group_by("outcome").len()
    for outcome, n in zip(grouped.get_column("outcome"), grouped.get_column("len"), strict=True):
        counts[str(outcome)] = int(n)
    return counts


def uniform_outcomes(entities: pl.DataFrame, *, code: str, message: str | None = None) -> pl.DataFrame:
    """One row per entity of a decoded chunk input, all with the same code: the outbox of a chunk that
    never applied (code `cancelled`) or failed as a whole (code `internal`)."""
    if code not in CODE_OUTCOME:
        raise ValueError(f"unknown outcome code {code!r}")
    n = entities.height
    # Id chunks carry `id`; a revert chunk (a before-image) carries `entity_id`; import rows have none yet.
    id_column = next((name for name in ("id", "entity_id") if name in entities.columns), None)
    entity_id = entities.get_column(id_column) if id_column else pl.Series([None] * n, dtype=pl.Int64)
    email = (
        entities.get_column("email") if "email" in entities.columns else pl.Series([None] * n, dtype=pl.Utf8)
    )
    return pl.DataFrame(
        {
            "row_no": pl.int_range(n, dtype=pl.Int32, eager=True),
            "entity_id": entity_id.cast(pl.Int64),
            "email": email.cast(pl.Utf8),
            "outcome": pl.Series([CODE_OUTCOME[code]] * n, dtype=pl.Utf8),
            "code": pl.Series([code] * n, dtype=pl.Utf8),
            "message": pl.Series([message] * n, dtype=pl.Utf8),
            "changed_fields": pl.Series([None] * n, dtype=pl.List(pl.Utf8)),
        }
    )
