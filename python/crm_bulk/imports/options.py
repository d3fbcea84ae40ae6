"""The query parameters of an import and of its preview, checked once: `ImportOptions`."""

from __future__ import annotations

import msgspec

from crm_bulk.errors import ValidationError
from crm_bulk.imports.formats import check_delimiter, check_encoding
from crm_bulk.imports.headers import (
    DEFAULT_UNKNOWN_COLUMNS,
    UNKNOWN_COLUMN_POLICIES,
    UnknownColumns,
    parse_mapping,
)


class ImportOptions(msgspec.Struct, frozen=True, kw_only=True):
    """How to read an import file: explicit column mapping, what unknown columns do, text format, sheet."""

    mapping: dict[str, str] | None = None
    unknown_columns: UnknownColumns = DEFAULT_UNKNOWN_COLUMNS
    delimiter: str | None = None
    encoding: str | None = None
    sheet: str | None = None

    def digest_bytes(self) -> bytes:
        """The options as they enter an upload's Idempotency-Key hash (another mapping is another request)."""
        return msgspec.json.encode(self, order="sorted")


def import_options(
    *,
    mapping: str | None = None,
    unknown_columns: str | None = None,
    delimiter: str | None = None,
    encoding: str | None = None,
    sheet: str | None = None,
) -> ImportOptions:
    """The options from their query-string texts; `ValidationError` (422) for any that is unusable."""
    policy = unknown_columns or DEFAULT_UNKNOWN_COLUMNS
    if policy not in UNKNOWN_COLUMN_POLICIES:
        raise ValidationError(
            f"unknown_columns is one of {', '.join(UNKNOWN_COLUMN_POLICIES)}, not {unknown_columns!r}",
            field="unknown_columns",
            code="invalid_value",
        )
    return ImportOptions(
        mapping=parse_mapping(mapping),
        unknown_columns=policy,  # type: ignore[arg-type]
        delimiter=check_delimiter(delimiter),
        encoding=check_encoding(encoding),
        sheet=sheet or None,
    )
