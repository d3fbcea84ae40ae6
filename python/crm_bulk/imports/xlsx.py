"""XLSX workbooks read as import frames, through python-calamine.

An XLSX file is a zip archive whose directory sits at its end, so nothing can be read before the last byte
has arrived: the body is spooled to a temporary file (at most `max_bytes`; more answers 413) and read once
it has ended. calamine loads the chosen sheet whole (measured by `benchmarks/xlsx_memory.py`: see the
README's XLSX row), and its rows are then dealt out as import frames of `batch_rows`, converted to the
text a CSV cell would hold: whole numbers without a decimal point (phone numbers typed as numbers),
`true`/`false`, dates in ISO 8601.

The first row of the sheet (the first sheet, or `sheet=`) is the header row; the row numbers in messages
are the sheet's own.
"""

from __future__ import annotations

import datetime as dt
import logging
import tempfile
from collections.abc import Iterator
from typing import IO, Any

import polars as pl
import python_calamine

from crm_bulk.errors import PayloadTooLargeError, ValidationError
from crm_bulk.imports.columns import (
    blank_rows,
    empty_as_null,
    import_columns,
    positional_names,
)
from crm_bulk.imports.headers import ColumnMapping, UnknownColumns, resolve_columns

log = logging.getLogger(__name__)

XLSX_TYPES = frozenset(
    {"application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", "application/vnd.ms-excel"}
)
DEFAULT_BATCH_ROWS = 5_000


class XlsxParser:
    """One XLSX upload: `feed` spools it, `finish` reads it (a generator of import frames)."""

    def __init__(
        self,
        *,
        max_bytes: int,
        sheet: str | None = None,
        mapping: dict[str, str] | None = None,
        unknown_columns: UnknownColumns = "custom_fields",
        batch_rows: int = DEFAULT_BATCH_ROWS,
    ) -> None:
        self._max_bytes = max_bytes
        self._sheet_name = sheet
        self._mapping = mapping
        self._unknown_columns: UnknownColumns = unknown_columns
        self._batch_rows = batch_rows
        self._spool: IO[bytes] | None = None
        self.columns: ColumnMapping | None = None
        self.sheet: str | None = None
        self.first_row = 1
        self.rows = 0
        self.bytes = 0

    @property
    def mapping_used(self) -> dict[str, str] | None:
        """Header → target of every column, once the header row has been read."""
        return None if self.columns is None else self.columns.used()

    def feed(self, data: bytes) -> list[pl.DataFrame]:
        """Spool more bytes (no frame comes before the whole workbook is in)."""
        self.bytes += len(data)
        if self.bytes > self._max_bytes:
            self.close()
            raise PayloadTooLargeError(
                f"the workbook is larger than {self._max_bytes} bytes (CRM_BULK_MAX_XLSX_BYTES); save it as "
                "CSV to import it streamed",
                setting="CRM_BULK_MAX_XLSX_BYTES",
            )
        if self._spool is None:
            self._spool = tempfile.NamedTemporaryFile(prefix="crm-bulk-import-", suffix=".xlsx")  # noqa: SIM115
        self._spool.write(data)
        return []

    def finish(self) -> Iterator[pl.DataFrame]:
        """The sheet's records as import frames of `batch_rows`, the spool removed at the end."""
        try:
            rows = self._open_rows()
            self._read_header(rows)
            yield from self._frames(rows)
        finally:
            self.close()

    def first_records(self, limit: int) -> tuple[pl.DataFrame, list[int]]:
        """The first `limit` records as text columns (see `columns`) and their sheet row numbers."""
        try:
            rows = self._open_rows()
            self._read_header(rows)
            batch: list[list[Any]] = []
            for row in rows:
                batch.append(row)
                if len(batch) >= limit:
                    break
            frame = empty_as_null(self._text_frame(batch, self.first_row + 1))
            keep = ~blank_rows(frame)
            numbers = pl.Series([self.first_row + 1 + i for i in range(len(batch))], dtype=pl.Int64)
            return frame.filter(keep), numbers.filter(keep).to_list()
        finally:
            self.close()

    def _read_header(self, rows: Iterator[list[Any]]) -> None:
        header = next(rows, None)
        if header is None:
            raise ValidationError(
                f"sheet {self.sheet!r} is empty: it needs a header row", field="body", code="empty"
            )
        self.columns = resolve_columns(
            [cell_text(c) or "" for c in header], mapping=self._mapping, unknown_columns=self._unknown_columns
        )

    def close(self) -> None:
        """Remove the spooled file (idempotent)."""
        if self._spool is not None:
            self._spool.close()
            self._spool = None

    def _open_rows(self) -> Iterator[list[Any]]:
        if self._spool is None:
            raise ValidationError("the upload is empty", field="body", code="empty")
        self._spool.flush()
        try:
            workbook = python_calamine.CalamineWorkbook.from_path(self._spool.name)
            sheet = self._pick_sheet(workbook)
        except python_calamine.CalamineError as exc:
            # Zip, XML, password and sheet errors alike derive from CalamineError.
            raise ValidationError(
                f"not a readable XLSX workbook ({exc})", field="body", code="malformed_xlsx"
            ) from None
        self.sheet = sheet.name
        self.first_row = sheet.start[0] + 1 if sheet.start else 1
        return iter(sheet.iter_rows())

    def _pick_sheet(self, workbook: python_calamine.CalamineWorkbook) -> python_calamine.CalamineSheet:
        names = workbook.sheet_names
        if self._sheet_name is None:
            if not names:
                raise ValidationError("the workbook has no sheet", field="sheet", code="empty")
            return workbook.get_sheet_by_index(0)
        if self._sheet_name not in names:
            raise ValidationError(
                f"the workbook has no sheet {self._sheet_name!r} (its sheets: {', '.join(names)})",
                field="sheet",
                code="unknown_sheet",
            )
        return workbook.get_sheet_by_name(self._sheet_name)

    def _frames(self, rows: Iterator[list[Any]]) -> Iterator[pl.DataFrame]:
        assert self.columns is not None
        batch: list[list[Any]] = []
        number = self.first_row + 1
        for row in rows:
            batch.append(row)
            if len(batch) >= self._batch_rows:
                yield from self._batch_frame(batch, number)
                number += len(batch)
                batch = []
        if batch:
            yield from self._batch_frame(batch, number)

    def _batch_frame(self, batch: list[list[Any]], first_number: int) -> Iterator[pl.DataFrame]:
        assert self.columns is not None
        text = self._text_frame(batch, first_number)
        frame = import_columns(text, self.columns)
        self.rows += frame.height
        if frame.height:
            yield frame

    def _text_frame(self, batch: list[list[Any]], first_number: int) -> pl.DataFrame:
        assert self.columns is not None
        width = len(self.columns.headers)
        names = positional_names(width)
        # calamine pads every row to the sheet's width; cells past the header's last column must be empty.
        for offset, row in enumerate(batch):
            if len(row) > width and any(cell_text(c) for c in row[width:]):
                raise ValidationError(
                    f"row {first_number + offset}: a value in column {width + 1}, past the header's last "
                    f"column ({self.columns.headers[-1]!r})",
                    field="body",
                    code="ragged_row",
                )
        # Columns, not rows: a column of text cells alone (most are) needs no conversion cell by cell.
        padded = [row[:width] if len(row) >= width else [*row, *([""] * (width - len(row)))] for row in batch]
        columns: list[tuple[Any, ...]] = list(zip(*padded, strict=True)) if padded else [() for _ in names]
        return pl.DataFrame([_text_column(name, cells) for name, cells in zip(names, columns, strict=True)])


def _text_column(name: str, cells: tuple[Any, ...]) -> pl.Series:
    """One column of a batch as text (empty text cells stay "", made null with the rest of the batch)."""
    if all(type(cell) is str for cell in cells):
        return pl.Series(name, cells, dtype=pl.Utf8)
    return pl.Series(name, [cell_text(cell) for cell in cells], dtype=pl.Utf8)


def cell_text(value: Any) -> str | None:
    """A cell as the text a CSV export would hold (None when empty)."""
    if isinstance(value, str):
        return value if value else None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if value is None:
        return None
    return str(value)
