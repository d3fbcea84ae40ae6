"""Result files: a job's entity outcomes by input line, as CSV or NDJSON, streamed from the entity log.

Every row starts `line, entity_id, outcome, code, message`. `line` is the 1-based number of the input
record in the job's input (see `sql/postgres/012_result_lines.sql`): for an import, among the file's data
records (a CSV's header row is not counted, a quoted field's line breaks do not start a record) or the
inline `records`; for other actions, the entity's place in the target snapshot (ids ascending). It is the
number a `duplicate_in_input` message names, and the one a retry's corrected `records` are matched by.
`outcome` is `succeeded`, `failed`, `skipped` or `cancelled` (skipped because the job was cancelled).

Then, for an import, the record as it was sent, before normalisation: the import fields (`tags` joined by
`;` in CSV, a list in NDJSON; `custom_fields` as its JSON object text). For an update, one column per field
the update changes (`custom_fields.<key>` per custom field) holding its new value on the rows it changed;
for tag actions a `tags` column with the tags added or removed; a delete adds none. CSV cells are
neutralised against formula injection (`crm_bulk.entitylog.export`); NDJSON keeps every value as stored.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import msgspec
import polars as pl

from crm_bulk.actions.specs import BulkActionRequest
from crm_bulk.entitylog.export import csv_bytes
from crm_bulk.entitylog.inputs import decode_inputs
from crm_bulk.ledger.payload import IMPORT_SCHEMA

LEAD_COLUMNS: tuple[str, ...] = ("line", "entity_id", "outcome", "code", "message")
CSV_MEDIA_TYPE = "text/csv; charset=utf-8"
NDJSON_MEDIA_TYPE = "application/x-ndjson"
TAG_SEPARATOR = ";"


@dataclass(frozen=True)
class ChangeColumn:
    """A result column of a non-import job: its header, the changed field it reports, its new value."""

    name: str
    field: str
    value: str | None


@dataclass(frozen=True)
class ResultLayout:
    """The columns of one job's result file after the lead columns."""

    is_import: bool
    changes: tuple[ChangeColumn, ...] = ()

    @property
    def columns(self) -> tuple[str, ...]:
        """Every column of the file, in order."""
        extra = IMPORT_SCHEMA.names if self.is_import else [c.name for c in self.changes]
        return (*LEAD_COLUMNS, *extra)


def layout_of(spec: BulkActionRequest) -> ResultLayout:
    """The result columns of a job created from `spec`."""
    if spec.action == "import":
        return ResultLayout(is_import=True)
    columns: list[ChangeColumn] = []
    if spec.changes is not None:
        changes = spec.changes
        # Sorted by name: the stored request (jsonb) does not keep the order the client wrote.
        fields: dict[str, str | None] = dict.fromkeys(changes.unset) | dict(changes.set)
        columns += [ChangeColumn(name, name, fields[name]) for name in sorted(fields)]
        custom: dict[str, str | None] = dict.fromkeys(changes.remove_custom_fields)
        custom |= {k: _json_text(v) for k, v in changes.custom_fields.items()}
        columns += [ChangeColumn(f"custom_fields.{k}", "custom_fields", custom[k]) for k in sorted(custom)]
    if spec.tags:
        columns.append(ChangeColumn("tags", "tags", TAG_SEPARATOR.join(spec.tags)))
    return ResultLayout(is_import=False, changes=tuple(columns))


def result_frame(rows: pl.DataFrame, layout: ResultLayout) -> pl.DataFrame:
    """One streamed block of `crm_bulk.entitylog.store.RESULT_SCHEMA` rows as the file's columns."""
    lead = rows.select(*LEAD_COLUMNS)
    if layout.is_import:
        return pl.concat([lead, decode_inputs(rows.get_column("input"), IMPORT_SCHEMA)], how="horizontal")
    changed = rows.get_column("changed_fields")
    values = [
        pl.Series(c.name, [c.value] * rows.height, dtype=pl.Utf8).zip_with(
            changed.list.contains(c.field).fill_null(False), pl.Series([None] * rows.height, dtype=pl.Utf8)
        )
        for c in layout.changes
    ]
    return lead.with_columns(values) if values else lead


def csv_chunks(frames: Iterator[pl.DataFrame], layout: ResultLayout) -> Iterator[bytes]:
    """The CSV file: the header, then each block's rows, neutralised for spreadsheets."""
    yield (",".join(layout.columns) + "\n").encode()
    for frame in frames:
        table = result_frame(frame, layout)
        if layout.is_import:
            table = table.with_columns(pl.col("tags").list.join(TAG_SEPARATOR))
        yield csv_bytes(table, include_header=False)


def ndjson_chunks(frames: Iterator[pl.DataFrame], layout: ResultLayout) -> Iterator[bytes]:
    """The NDJSON file: one object per row, with the same fields as the CSV's columns."""
    for frame in frames:
        table = result_frame(frame, layout)
        if table.height:
            yield table.write_ndjson().encode()


def _json_text(value: Any) -> str:
    return value if isinstance(value, str) else msgspec.json.encode(value).decode()
