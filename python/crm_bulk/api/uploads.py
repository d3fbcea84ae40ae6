"""Streamed import uploads cut into import frames without ever holding the whole file.

Bytes arrive in pieces of any size. They are buffered up to `batch_bytes`, cut at the last record boundary,
and each batch is parsed by Polars into columns; `Rechunker` then deals those rows out as frames of exactly
the chunk size. Memory is bounded by one batch plus one chunk, whatever the upload's length.

Delimited text (CSV, `;`, TAB, `|`, in any encoding) and XLSX are read by `crm_bulk.imports`, with the
header row mapped onto contact fields; NDJSON here: one JSON object per line with the fields of an import
record.
"""

from __future__ import annotations

import io
from abc import ABC, abstractmethod
from collections.abc import Iterable

import msgspec
import polars as pl

from crm_bulk.errors import ValidationError
from crm_bulk.imports import XLSX_TYPES, DelimitedParser, ImportOptions, RecordStream, XlsxParser
from crm_bulk.imports.csv_records import DEFAULT_BATCH_BYTES, MAX_RECORD_BYTES
from crm_bulk.ledger.payload import IMPORT_TEXT_COLUMNS, import_frame

CSV_TYPES = frozenset({"text/csv", "application/csv", "text/tab-separated-values"})
NDJSON_TYPES = frozenset(
    {"application/x-ndjson", "application/ndjson", "application/jsonl", "application/json-seq"}
)
_NDJSON_SCHEMA: dict[str, pl.DataType] = {
    **{name: pl.Utf8() for name in IMPORT_TEXT_COLUMNS},
    "tags": pl.List(pl.Utf8()),
    "custom_fields": pl.Utf8(),
}


def media_type(content_type: str) -> str:
    """The bare media type of a Content-Type header value, lower-cased."""
    return content_type.split(";", 1)[0].strip().lower()


class RecordParser(ABC):
    """Common buffering; subclasses say where a batch may be cut and how a batch becomes an import frame."""

    # Records name their fields themselves: there is no header row to map.
    mapping_used: dict[str, str] | None = None

    def __init__(self, *, batch_bytes: int = DEFAULT_BATCH_BYTES) -> None:
        self._batch_bytes = batch_bytes
        self._buffer = bytearray()
        self.rows = 0
        self.bytes = 0

    def feed(self, data: bytes) -> list[pl.DataFrame]:
        """Take more bytes; return the import frames of every complete batch now available."""
        self.bytes += len(data)
        self._buffer += data
        frames: list[pl.DataFrame] = []
        while len(self._buffer) >= self._batch_bytes:
            cut = self._cut(self._buffer)
            if cut is None:
                if len(self._buffer) > self._batch_bytes + MAX_RECORD_BYTES:
                    raise ValidationError(
                        f"no record boundary in {len(self._buffer)} bytes (a record over {MAX_RECORD_BYTES} "
                        "bytes, or a quote never closed)",
                        field="body",
                        code="record_too_large",
                    )
                break
            batch = bytes(self._buffer[:cut])
            del self._buffer[:cut]
            frames.extend(self._frames(batch))
        return frames

    def finish(self) -> list[pl.DataFrame]:
        """The frames of whatever is left once the upload has ended."""
        rest = bytes(self._buffer)
        self._buffer.clear()
        return self._frames(rest) if rest.strip() else []

    def _frames(self, batch: bytes) -> list[pl.DataFrame]:
        frame = self._parse(batch)
        self.rows += frame.height
        return [frame] if frame.height else []

    @abstractmethod
    def _cut(self, buffer: bytearray) -> int | None:
        """The length of the longest prefix of `buffer` that ends at a record boundary, or None."""

    @abstractmethod
    def _parse(self, batch: bytes) -> pl.DataFrame:
        """Whole records as an import frame (`crm_bulk.ledger.payload.IMPORT_SCHEMA` columns)."""

    def _where(self, height_hint: str = "") -> str:
        return f"in the records after row {self.rows}{height_hint}"


class NdjsonParser(RecordParser):
    """One JSON object per line; blank lines are skipped."""

    def __init__(self, *, batch_bytes: int = DEFAULT_BATCH_BYTES) -> None:
        super().__init__(batch_bytes=batch_bytes)
        self._checked_keys = False

    def _cut(self, buffer: bytearray) -> int | None:
        newline = buffer.rfind(b"\n")
        return None if newline < 0 else newline + 1

    def _parse(self, batch: bytes) -> pl.DataFrame:
        if not self._checked_keys:
            self._check_first_record(batch)
        try:
            frame = pl.read_ndjson(io.BytesIO(batch), schema=_NDJSON_SCHEMA)
        except (
            pl.exceptions.ComputeError,
            pl.exceptions.SchemaError,
            pl.exceptions.InvalidOperationError,
        ) as exc:
            raise ValidationError(
                f"malformed NDJSON {self._where()}: {_reason(exc, _NDJSON_REASONS, _NDJSON_DEFAULT)}",
                field="body",
                code="malformed_ndjson",
            ) from None
        return import_frame(frame)

    def _check_first_record(self, batch: bytes) -> None:
        """Unknown field names in the first record refuse the upload (a typo would fail every row)."""
        first = next((line for line in batch.splitlines() if line.strip()), None)
        if first is None:
            return
        try:
            record = msgspec.json.decode(first)
        except msgspec.DecodeError:
            raise ValidationError(
                "the first line is not JSON", field="body", code="malformed_ndjson"
            ) from None
        if not isinstance(record, dict):
            raise ValidationError("each line must be a JSON object", field="body", code="malformed_ndjson")
        unknown = sorted(set(record) - set(_NDJSON_SCHEMA))
        if unknown:
            raise ValidationError(f"unknown import fields: {unknown}", field=unknown[0], code="unknown_field")
        self._checked_keys = True


# The reader's errors in the platform's words: what part of the message (lower case) means what for the
# person who sent the file. Its own wording (type names, tuning hints) would mean nothing to them.
_NDJSON_REASONS: tuple[tuple[str, str], ...] = (
    ("list", "`tags` must be a list of strings"),
    ("error parsing line", "a line is not a JSON object"),
    ("utf-8", "the file is not UTF-8 text"),
)
_NDJSON_DEFAULT = "a line is not a JSON object with text values (and `tags` a list of strings)"


def _reason(exc: BaseException, reasons: tuple[tuple[str, str], ...], default: str) -> str:
    text = str(exc).lower()
    return next((reason for needle, reason in reasons if needle in text), default)


def parser_for(
    content_type: str,
    options: ImportOptions | None = None,
    *,
    max_xlsx_bytes: int,
    batch_bytes: int = DEFAULT_BATCH_BYTES,
) -> RecordStream | None:
    """The parser for an upload's Content-Type, or None when it is not CSV, NDJSON or XLSX."""
    options = options or ImportOptions()
    kind = media_type(content_type)
    if kind in CSV_TYPES:
        return DelimitedParser(
            delimiter=options.delimiter,
            encoding=options.encoding,
            mapping=options.mapping,
            unknown_columns=options.unknown_columns,
            batch_bytes=batch_bytes,
        )
    if kind in NDJSON_TYPES:
        return NdjsonParser(batch_bytes=batch_bytes)
    if kind in XLSX_TYPES:
        return XlsxParser(
            max_bytes=max_xlsx_bytes,
            sheet=options.sheet,
            mapping=options.mapping,
            unknown_columns=options.unknown_columns,
        )
    return None


class Rechunker:
    """Deals rows out as frames of exactly `size` rows (the last one smaller), in input order."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._pending: list[pl.DataFrame] = []
        self._pending_rows = 0

    def push(self, frames: Iterable[pl.DataFrame]) -> list[pl.DataFrame]:
        """Take frames; return every full chunk now available."""
        full: list[pl.DataFrame] = []
        for frame in frames:
            self._pending.append(frame)
            self._pending_rows += frame.height
            while self._pending_rows >= self._size:
                rows = (
                    pl.concat(self._pending, how="vertical") if len(self._pending) > 1 else self._pending[0]
                )
                full.append(rows.slice(0, self._size))
                rest = rows.slice(self._size)
                self._pending = [rest] if rest.height else []
                self._pending_rows = rest.height
        return full

    def finish(self) -> pl.DataFrame | None:
        """The last, partial chunk, if any rows are left."""
        if not self._pending_rows:
            return None
        rows = pl.concat(self._pending, how="vertical") if len(self._pending) > 1 else self._pending[0]
        self._pending, self._pending_rows = [], 0
        return rows
