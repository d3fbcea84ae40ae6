"""Before-images and dry-run samples: what an applied chunk keeps so a job can be reverted or previewed.

A chunk statement returns, beside each entity's code, the before-image of every row it wrote
(`IMAGE_RESULT_COLUMNS`, see sql/postgres/queries/contacts.sql): the row version it left (`row_xmin`), the
restore bits (`image_mask`: the changed-field bits of `CHANGE_BITS`, plus `LAST_IMPORT_JOB_BIT` and
`INSERTED_BIT`) and the replaced values as text. `before_image` keeps the written rows with only their
changed fields; a revert chunk's payload is that frame (`restore_chunk` writes it back).

A dry run keeps instead a bounded sample of its outcomes (`dry_run_sample`): per sampled entity its code,
the fields it would change, their values before (from the image) and after (read inside the savepoint,
before the rollback). Everything stays in columns; only the preview's small page is turned into objects.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import msgspec
import polars as pl

from crm_bulk.apply.staging import copy_out, csv_payload
from crm_bulk.ipc import read_ipc, write_ipc
from crm_bulk.ledger.images import store_chunk_image
from crm_bulk.postgres import Conn
from crm_bulk.sqlfiles import query

LAST_IMPORT_JOB_BIT = 512
INSERTED_BIT = 1024
# Sampled outcomes kept per dry-run chunk for the preview.
SAMPLE_PER_CHUNK = 20

# The contact columns an image can restore, as the statements return them (`old_<name>`), and the bits that
# restore each (phone and email carry their normalised form along).
IMAGE_FIELDS: tuple[tuple[str, int], ...] = (
    ("email", 1),
    ("email_normalized", 1),
    ("phone", 2),
    ("phone_e164", 2),
    ("first_name", 4),
    ("last_name", 8),
    ("company", 16),
    ("job_title", 32),
    ("tags", 128),
    ("custom_fields", 64),
    ("deleted_at", 256),
    ("last_import_job", LAST_IMPORT_JOB_BIT),
)
IMAGE_RESULT_COLUMNS: dict[str, Any] = {
    "row_xmin": pl.Int64,
    "image_mask": pl.Int32,
    **{f"old_{name}": pl.Utf8 for name, _ in IMAGE_FIELDS},
}
# What the id statements (update, delete, tags, restore) and the import statements return.
ID_RESULT: dict[str, Any] = {
    "entity_id": pl.Int64,
    "email": pl.Utf8,
    "code": pl.Utf8,
    "mask": pl.Int32,
    **IMAGE_RESULT_COLUMNS,
}
IMPORT_RESULT: dict[str, Any] = {
    "row_no": pl.Int32,
    "entity_id": pl.Int64,
    "code": pl.Utf8,
    "mask": pl.Int32,
    **IMAGE_RESULT_COLUMNS,
}
IMAGE_COLUMNS: tuple[str, ...] = ("entity_id", "row_xmin", "image_mask", *(name for name, _ in IMAGE_FIELDS))
# Fields a preview shows, with the bit that marks them changed (normalised forms are implied).
PREVIEW_FIELDS: tuple[tuple[str, int], ...] = tuple(
    (name, bit)
    for name, bit in IMAGE_FIELDS
    if name not in ("email_normalized", "phone_e164", "last_import_job")
)
_JSON_FIELDS = frozenset({"tags", "custom_fields"})


def before_image(result: pl.DataFrame) -> pl.DataFrame:
    """The image of the rows a statement wrote (`IMAGE_COLUMNS`): each with only its restore bits' values."""
    written = result.filter(pl.col("code") == "succeeded", pl.col("image_mask").fill_null(0) != 0)
    return written.select(
        pl.col("entity_id"),
        pl.col("row_xmin"),
        pl.col("image_mask"),
        *[
            pl.when((pl.col("image_mask") & bit) != 0).then(pl.col(f"old_{name}")).alias(name)
            for name, bit in IMAGE_FIELDS
        ],
    )


def encode_image(image: pl.DataFrame) -> bytes:
    """The stored form (zstd Arrow IPC) of a before-image or a sample."""
    return write_ipc(image.to_arrow())


def decode_image(raw: bytes) -> pl.DataFrame:
    """A stored before-image or sample."""
    return read_ipc(raw)


def keep_image(
    conn: Conn,
    job_id: UUID,
    chunk_no: int,
    *,
    account_id: int,
    image: pl.DataFrame,
    sample: pl.DataFrame | None,
) -> None:
    """Store a chunk's before-image beside its ledger row, in its transaction; a dry run's chunk (`sample`
    given) changed nothing, so it keeps only its sample. Nothing is stored for a chunk that wrote nothing."""
    if sample is not None:
        store_chunk_image(
            conn,
            job_id,
            chunk_no,
            account_id=account_id,
            image_rows=0,
            before_image=None,
            sample=encode_image(sample),
        )
    elif image.height:
        store_chunk_image(
            conn,
            job_id,
            chunk_no,
            account_id=account_id,
            image_rows=image.height,
            before_image=encode_image(image),
            sample=None,
        )


def stage_restore(conn: Conn, image: pl.DataFrame) -> None:
    """Fill the session's `chunk_stage_restore` with a before-image (one CSV COPY)."""
    conn.execute(query("postgres", "contacts", "create_restore_stage"))
    conn.execute(query("postgres", "contacts", "clear_restore_stage"))
    if image.height == 0:
        return
    payload = csv_payload(image, IMAGE_COLUMNS)
    with conn.cursor() as cur, cur.copy(query("postgres", "contacts", "copy_restore_stage")) as copy:
        copy.write(payload)


def dry_run_sample(
    conn: Conn, outcomes: pl.DataFrame, image: pl.DataFrame, *, account_id: int, limit: int = SAMPLE_PER_CHUNK
) -> pl.DataFrame:
    """The first `limit` outcomes of a dry-run chunk with `before_<field>` and `after_<field>` for the
    fields each would change. Call it inside the savepoint, before the rollback: `after_*` is read then."""
    sampled = outcomes.sort("row_no").head(limit).select("row_no", "entity_id", "outcome", "code")
    before = image.select(
        "entity_id", "image_mask", *[pl.col(name).alias(f"before_{name}") for name, _ in PREVIEW_FIELDS]
    )
    # Only an entity the chunk wrote has an image (a repeat of an import row names its contact too).
    sampled = sampled.join(before, on="entity_id", how="left").with_columns(
        image_mask=pl.when(pl.col("code") == "succeeded").then(pl.col("image_mask"))
    )
    ids = sampled.filter(pl.col("image_mask").is_not_null()).get_column("entity_id").to_list()
    after = copy_out(
        conn,
        query("postgres", "chunk_images", "sample_after"),
        {"ids": ids, "account_id": account_id},
        {"entity_id": pl.Int64, **{f"after_{name}": pl.Utf8 for name, _ in PREVIEW_FIELDS}},
    )
    return sampled.join(after, on="entity_id", how="left").with_columns(pl.col("image_mask").fill_null(0))


class PreviewItem(msgspec.Struct, kw_only=True):
    """One sampled entity of a dry run: what it would become (`GET /bulk-actions/{id}/preview`)."""

    entity_id: int | None
    line: int
    before: dict[str, Any]
    after: dict[str, Any]
    outcome: str
    code: str


def preview_items(sample: pl.DataFrame, *, first_line: int) -> list[PreviewItem]:
    """A stored sample as preview items; `first_line` is the input line of the chunk's first entity.

    An inserted contact shows every field it would have (`before` empty); a written one the fields it would
    change; an entity left alone shows neither."""
    items = []
    for row in sample.iter_rows(named=True):
        mask = int(row["image_mask"])
        inserted = bool(mask & INSERTED_BIT)
        before: dict[str, Any] = {}
        after: dict[str, Any] = {}
        for name, bit in PREVIEW_FIELDS:
            if inserted and name != "deleted_at":
                after[name] = _value(name, row[f"after_{name}"])
            elif mask & bit:
                before[name] = _value(name, row[f"before_{name}"])
                after[name] = _value(name, row[f"after_{name}"])
        items.append(
            PreviewItem(
                entity_id=row["entity_id"],
                line=first_line + int(row["row_no"]),
                before=before,
                after=after,
                outcome=row["outcome"],
                code=row["code"],
            )
        )
    return items


def _value(name: str, text: str | None) -> Any:
    if text is None or name not in _JSON_FIELDS:
        return text
    return msgspec.json.decode(text)
