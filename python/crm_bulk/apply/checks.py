"""Per-entity validation and normalisation of a chunk's values, in columns, with the Rust kernels.

The checks run in a fixed order and an entity reports the first that fails:
`invalid_email` (message: the kernel's reason, e.g. `missing_at`), `invalid_phone` (the reason),
`too_long` (the field), `invalid_field` (the field, or the custom-fields kernel's reason).
Among the entities that pass, repeats of a normalised email are `duplicate_in_input`: the first record with
a valid email owns it, whether or not its other fields pass, so which record wins depends on input order
only. Repeats of records in earlier chunks come marked in the payload (`repeat_of`); within the chunk they
are found here.
"""

from __future__ import annotations

from typing import Any

import msgspec
import polars as pl

from crm_bulk import kernels
from crm_bulk.actions.specs import (
    CUSTOM_FIELDS_MAX_BYTES,
    CUSTOM_FIELDS_MAX_DEPTH,
    FIELD_MAX_CHARS,
    MAX_TAGS,
    PHONE_REGION,
    TAG_MAX_CHARS,
    Changes,
)
from crm_bulk.ledger.payload import IMPORT_TEXT_COLUMNS, REPEAT_OF

_OPTIONAL_TEXT = tuple(c for c in IMPORT_TEXT_COLUMNS if c != "email")
# PostgreSQL text cannot hold NUL; a JSON \u0000 escape cannot become jsonb. Either would abort the COPY.
_NUL = "\x00"
# A \u0000 escape not itself escaped: preceded by an even number of backslashes.
_JSON_NUL = r"(?:^|[^\\])(?:\\\\)*\\u0000"


def check_records(frame: pl.DataFrame) -> pl.DataFrame:
    """Import records (payload columns) with `row_no`, normalised `email_normalized` and `phone_e164`,
    sorted duplicate-free `tags`, and per row `code`/`message` (null code: valid), `first_row` (for a
    repeat within the chunk, the row that holds the email first; else null) and `repeat_of` (for a repeat,
    the import's record number that holds the email first, when the payload carries it; else null).

    Blank optional values count as absent (null): an empty CSV cell means "not provided".
    """
    if REPEAT_OF not in frame.columns:
        frame = frame.with_columns(pl.lit(None, dtype=pl.Int64).alias(REPEAT_OF))
    records = frame.with_columns(
        pl.int_range(pl.len(), dtype=pl.Int32).alias("row_no"),
        *[
            pl.when(pl.col(c).str.strip_chars() == "").then(None).otherwise(pl.col(c)).alias(c)
            for c in _OPTIONAL_TEXT
        ],
        pl.col("tags").list.eval(pl.element().drop_nulls().unique().sort()),
    )
    normalized, email_code = kernels.normalize_emails(records.get_column("email"))
    e164, phone_code = kernels.normalize_phones(records.get_column("phone"), default_region=PHONE_REGION)
    too_long = kernels.validate_lengths(records.select(IMPORT_TEXT_COLUMNS), FIELD_MAX_CHARS)
    custom_code = kernels.validate_custom_fields(
        records.get_column("custom_fields"),
        max_bytes=CUSTOM_FIELDS_MAX_BYTES,
        max_depth=CUSTOM_FIELDS_MAX_DEPTH,
    )
    tags_too_long = (pl.col("tags").list.len() > MAX_TAGS) | (
        pl.col("tags").list.eval(pl.element().str.len_chars()).list.max() > TAG_MAX_CHARS
    )
    # (code, message) of each check, in the order they win.
    failures = [
        ("invalid_email", pl.lit(email_code.cast(pl.Utf8))),
        ("invalid_phone", pl.lit(phone_code.cast(pl.Utf8))),
        ("too_long", pl.lit(too_long.cast(pl.Utf8))),
        ("too_long", pl.when(tags_too_long.fill_null(False)).then(pl.lit("tags"))),
        ("invalid_field", _nul_field()),
        ("invalid_field", pl.concat_str(pl.lit("custom_fields: "), pl.lit(custom_code.cast(pl.Utf8)))),
    ]
    records = records.with_columns(
        email_normalized=pl.lit(normalized.cast(pl.Utf8)),
        phone_e164=pl.lit(e164.cast(pl.Utf8)),
        code=pl.coalesce(*[pl.when(message.is_not_null()).then(pl.lit(code)) for code, message in failures]),
        message=pl.coalesce(*[message for _, message in failures]),
    )
    return _mark_repeats(records)


def _nul_field() -> pl.Expr:
    """The first field of a record holding a NUL character (which PostgreSQL cannot store), else null."""
    return pl.coalesce(
        *[pl.when(pl.col(c).str.contains(_NUL, literal=True)).then(pl.lit(c)) for c in _OPTIONAL_TEXT],
        pl.when(pl.col("tags").list.eval(pl.element().str.contains(_NUL, literal=True)).list.any()).then(
            pl.lit("tags")
        ),
        pl.when(pl.col("custom_fields").str.contains(_JSON_NUL)).then(pl.lit("custom_fields")),
    )


def _mark_repeats(records: pl.DataFrame) -> pl.DataFrame:
    """`duplicate_in_input` for valid rows whose normalised email an earlier record holds: an earlier chunk's
    (`repeat_of`) or an earlier row of this chunk with a valid email (`first_row`)."""
    has_email = records.get_column("email_normalized").is_not_null()
    positions = records.get_column("row_no").filter(has_email)
    is_first, first_index = kernels.first_occurrence(records.get_column("email_normalized").filter(has_email))
    repeats = ~is_first
    first_row = pl.Series("first_row", [None] * records.height, dtype=pl.Int32)
    if repeats.any():
        first_row = first_row.scatter(
            positions.filter(repeats), positions.gather(first_index.filter(repeats))
        )
    repeat = first_row.is_not_null() | pl.col(REPEAT_OF).is_not_null()
    return records.with_columns(first_row).with_columns(
        code=pl.when(pl.col("code").is_null() & repeat).then(pl.lit("duplicate_in_input")).otherwise("code"),
    )


class ChangeCheck(msgspec.Struct, frozen=True):
    """An update's changes checked once per chunk: bound parameters of `update_chunk`, or why every
    entity of the chunk fails (`code`, `message`)."""

    params: dict[str, Any]
    code: str | None = None
    message: str | None = None


def check_changes(changes: Changes) -> ChangeCheck:
    """Normalise and validate an update's `set` values and custom-field merge (the same for every entity)."""
    values: dict[str, str | None] = dict.fromkeys(IMPORT_TEXT_COLUMNS)
    values.update(dict.fromkeys(changes.unset))
    values.update(changes.set)
    touched = set(changes.set) | set(changes.unset)
    params: dict[str, Any] = {f"touch_{name}": name in touched for name in IMPORT_TEXT_COLUMNS}
    params.update(values)
    params["email_normalized"] = None
    params["phone_e164"] = None
    merge_text = msgspec.json.encode(changes.custom_fields).decode()
    params["touch_custom_fields"] = bool(changes.custom_fields or changes.remove_custom_fields)
    params["cf_merge"] = merge_text
    params["cf_remove"] = list(changes.remove_custom_fields)

    single = pl.DataFrame(
        {name: [values[name]] for name in IMPORT_TEXT_COLUMNS},
        schema=dict.fromkeys(IMPORT_TEXT_COLUMNS, pl.Utf8),
    )
    if "email" in changes.set:
        normalized, code = kernels.normalize_emails(single.get_column("email"))
        reason = code[0]
        if reason is not None:
            return ChangeCheck(params, "invalid_email", reason)
        params["email_normalized"] = normalized[0]
    if changes.set.get("phone", "").strip():
        e164, code = kernels.normalize_phones(single.get_column("phone"), default_region=PHONE_REGION)
        reason = code[0]
        if reason is not None:
            return ChangeCheck(params, "invalid_phone", reason)
        params["phone_e164"] = e164[0]
    elif "phone" in changes.set:
        params["phone"] = None  # a blank phone is no phone
    field = kernels.validate_lengths(single, FIELD_MAX_CHARS)[0]
    if field is not None:
        return ChangeCheck(params, "too_long", field)
    if changes.custom_fields:
        custom = kernels.validate_custom_fields(
            pl.Series([merge_text], dtype=pl.Utf8),
            max_bytes=CUSTOM_FIELDS_MAX_BYTES,
            max_depth=CUSTOM_FIELDS_MAX_DEPTH,
        )
        reason = custom[0]
        if reason is not None:
            return ChangeCheck(params, "invalid_field", f"custom_fields: {reason}")
    return ChangeCheck(params)
