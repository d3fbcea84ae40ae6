"""An import's preview: how a file's first bytes would be read, mapped, normalised and judged, cell by cell.

The preview reads the bytes through the same parsers an import does (encoding, delimiter, header mapping),
keeps whole records only (a line cut off at the end of the sample is left out), and runs the first rows
through the same kernels the workers apply (`crm_bulk.kernels`: email normalisation, E.164 phones, field
lengths, custom-field documents). Where an import reports only the first failing check of an entity, the
preview reports every cell at fault, each with the column it came from, so a file can be fixed in one go.
"""

from __future__ import annotations

import io
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
)
from crm_bulk.errors import ValidationError
from crm_bulk.imports.columns import drop_blank_rows, import_columns
from crm_bulk.imports.csv_records import DelimitedParser, numbered_records
from crm_bulk.imports.headers import CUSTOM_PREFIX, ColumnMapping
from crm_bulk.imports.options import ImportOptions
from crm_bulk.imports.xlsx import XlsxParser
from crm_bulk.ledger.payload import IMPORT_TEXT_COLUMNS, import_frame

DEFAULT_PREVIEW_ROWS = 20
MAX_PREVIEW_ROWS = 1000
_OPTIONAL_TEXT = tuple(c for c in IMPORT_TEXT_COLUMNS if c != "email")
_NDJSON_SCHEMA: dict[str, pl.DataType] = {
    **{name: pl.Utf8() for name in IMPORT_TEXT_COLUMNS},
    "tags": pl.List(pl.Utf8()),
    "custom_fields": pl.Utf8(),
}


class PreviewFormat(msgspec.Struct, frozen=True):
    """How the file is read: `kind` (csv, xlsx, ndjson), its delimiter and encoding (text), its sheet."""

    kind: str
    delimiter: str | None = None
    encoding: str | None = None
    sheet: str | None = None


class CellError(msgspec.Struct, frozen=True):
    """One cell at fault: the contact `field`, the file's `column` it came from, what is wrong."""

    field: str
    code: str
    message: str
    column: str | None = None


class PreviewRow(msgspec.Struct, frozen=True):
    """A record as it would be stored.

    `line` is the record's number among the file's data records, the number result files, logs and retries
    use (a retry corrects records by it); `file_line` is where the record starts in a text file (its row in a
    sheet), for finding it in an editor: the two differ by the header and by quoted line breaks.
    """

    line: int
    file_line: int
    record: dict[str, Any]
    errors: list[CellError]


class ImportPreview(msgspec.Struct, frozen=True):
    """`POST /bulk-actions/import/preview`: the format, the mapping, unknown columns, the first rows."""

    format: PreviewFormat
    mapping: dict[str, str]
    unknown_columns: list[str]
    rows: list[PreviewRow]


def preview_text(body: bytes, options: ImportOptions, *, limit: int = DEFAULT_PREVIEW_ROWS) -> ImportPreview:
    """The preview of a delimited text file's first bytes."""
    parser = DelimitedParser(
        delimiter=options.delimiter,
        encoding=options.encoding,
        mapping=options.mapping,
        unknown_columns=options.unknown_columns,
        # Above the sample's size: `feed` only reads the header, the whole records are taken at once below.
        batch_bytes=len(body) + 1,
    )
    parser.feed(body)
    batch = parser.complete_batch()
    if parser.columns is None:
        raise ValidationError(
            "the sample holds no complete header row (send the file's first bytes, up to a line break)",
            field="body",
            code="empty",
        )
    text = drop_blank_rows(parser.parse_batch(batch)).head(limit)
    lines = [
        line
        for line, fields in numbered_records(
            batch.decode("utf-8"), parser.delimiter, first_line=parser.lines + 1
        )
        if any(fields)
    ][: text.height]
    return ImportPreview(
        format=PreviewFormat(kind="csv", delimiter=parser.delimiter, encoding=parser.encoding),
        mapping=parser.columns.used(),
        unknown_columns=list(parser.columns.unknown),
        rows=_rows(import_columns(text, parser.columns), lines, parser.columns),
    )


def preview_xlsx(
    body: bytes, options: ImportOptions, *, max_bytes: int, limit: int = DEFAULT_PREVIEW_ROWS
) -> ImportPreview:
    """The preview of a whole XLSX workbook (its directory is at its end: a first part cannot be read)."""
    parser = XlsxParser(
        max_bytes=max_bytes,
        sheet=options.sheet,
        mapping=options.mapping,
        unknown_columns=options.unknown_columns,
    )
    parser.feed(body)
    text, numbers = parser.first_records(limit)
    assert parser.columns is not None
    return ImportPreview(
        format=PreviewFormat(kind="xlsx", sheet=parser.sheet),
        mapping=parser.columns.used(),
        unknown_columns=list(parser.columns.unknown),
        rows=_rows(import_columns(text, parser.columns), numbers, parser.columns),
    )


def preview_ndjson(body: bytes, *, limit: int = DEFAULT_PREVIEW_ROWS) -> ImportPreview:
    """The preview of an NDJSON file's first bytes (fields are named by each record: no mapping)."""
    end = body.rfind(b"\n")
    lines = [(n, line) for n, line in enumerate(body[: end + 1].splitlines(), start=1) if line.strip()]
    lines = lines[:limit]
    try:
        frame = pl.read_ndjson(io.BytesIO(b"\n".join(line for _, line in lines)), schema=_NDJSON_SCHEMA)
    except (pl.exceptions.ComputeError, pl.exceptions.SchemaError, pl.exceptions.InvalidOperationError):
        raise ValidationError(
            "a line is not a JSON object with text values (and `tags` a list of strings)",
            field="body",
            code="malformed_ndjson",
        ) from None
    fields = tuple(_NDJSON_SCHEMA)
    columns = ColumnMapping(headers=fields, fields=fields, unknown=())
    return ImportPreview(
        format=PreviewFormat(kind="ndjson", encoding="utf-8"),
        mapping={},
        unknown_columns=[],
        rows=_rows(import_frame(frame), [n for n, _ in lines], columns),
    )


def _rows(records: pl.DataFrame, lines: list[int], columns: ColumnMapping) -> list[PreviewRow]:
    """Each record normalised as it would be stored, with every cell's error."""
    records = records.with_columns(
        *[
            pl.when(pl.col(c).str.strip_chars() == "").then(None).otherwise(pl.col(c)).alias(c)
            for c in _OPTIONAL_TEXT
        ],
        pl.col("tags").list.eval(pl.element().drop_nulls().unique().sort()),
    )
    checks = _checks(records)
    source = _source_columns(columns)
    rows: list[PreviewRow] = []
    # Plain Python rows from here: indexing Series element by element costs more than the checks themselves.
    for i, (raw, check) in enumerate(
        zip(records.iter_rows(named=True), checks.iter_rows(named=True), strict=True)
    ):
        errors = _cell_errors(source, raw, check)
        if check["email_normalized"] is not None and not check["is_first"]:
            first = check["first_index"]
            errors.append(
                CellError(
                    field="email",
                    code="duplicate_in_input",
                    message=f"repeats the email of line {first + 1}",
                    column=source.get("email"),
                )
            )
        record = dict(raw)
        record["email"] = check["email_normalized"] or raw["email"]
        record["phone"] = check["phone_e164"] or raw["phone"]
        record["custom_fields"] = _custom_fields(raw["custom_fields"], valid=check["custom_code"] is None)
        file_line = lines[i] if i < len(lines) else i + 1
        rows.append(PreviewRow(line=i + 1, file_line=file_line, record=record, errors=errors))
    return rows


def _checks(records: pl.DataFrame) -> pl.DataFrame:
    """Per record, the kernels' verdicts: normalised email and phone, their codes, each field's length,
    tags, the custom-fields document, and whether the email is the first of its kind in the sample."""
    normalized, email_code = kernels.normalize_emails(records.get_column("email"))
    e164, phone_code = kernels.normalize_phones(records.get_column("phone"), default_region=PHONE_REGION)
    custom_code = kernels.validate_custom_fields(
        records.get_column("custom_fields"),
        max_bytes=CUSTOM_FIELDS_MAX_BYTES,
        max_depth=CUSTOM_FIELDS_MAX_DEPTH,
    )
    # Lengths as `kernels.validate_lengths` measures them (characters), for every field rather than the first
    # too long, in one pass with the tags' bounds.
    lengths = records.select(
        *[
            (pl.col(name).str.len_chars() > FIELD_MAX_CHARS[name]).fill_null(False).alias(f"long_{name}")
            for name in IMPORT_TEXT_COLUMNS
        ],
        (
            (pl.col("tags").list.len() > MAX_TAGS)
            | (pl.col("tags").list.eval(pl.element().str.len_chars()).list.max() > TAG_MAX_CHARS)
        )
        .fill_null(False)
        .alias("tags_too_long"),
    )
    is_first, first_index = kernels.first_occurrence(normalized)
    return pl.DataFrame(
        [
            normalized.alias("email_normalized"),
            email_code.alias("email_code"),
            e164.alias("phone_e164"),
            phone_code.alias("phone_code"),
            custom_code.alias("custom_code"),
            is_first.alias("is_first"),
            first_index.alias("first_index"),
            *lengths.get_columns(),
        ]
    )


def _cell_errors(source: dict[str, str], raw: dict[str, Any], check: dict[str, Any]) -> list[CellError]:
    found: list[tuple[str, str, str]] = []
    if check["email_code"] is not None:
        found.append(("email", "invalid_email", check["email_code"]))
    if raw["phone"] is not None and check["phone_code"] is not None:
        found.append(("phone", "invalid_phone", check["phone_code"]))
    found.extend((name, "too_long", name) for name in IMPORT_TEXT_COLUMNS if check[f"long_{name}"])
    if check["tags_too_long"]:
        found.append(("tags", "too_long", "tags"))
    if check["custom_code"] is not None:
        found.append(("custom_fields", "invalid_field", f"custom_fields: {check['custom_code']}"))
    return [CellError(field=f, code=c, message=m, column=source.get(f)) for f, c, m in found]


def _source_columns(columns: ColumnMapping) -> dict[str, str]:
    """Field → the header of the column it comes from (the first custom-field column for custom_fields)."""
    found: dict[str, str] = {}
    for header, target in zip(columns.headers, columns.fields, strict=True):
        field = "custom_fields" if target.startswith(CUSTOM_PREFIX) else target
        if field:
            found.setdefault(field, header)
    return found


def _custom_fields(text: str | None, *, valid: bool) -> Any:
    if text is None or not valid:
        return text
    return msgspec.json.decode(text)
