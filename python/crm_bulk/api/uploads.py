"""Streamed import uploads (CSV or NDJSON) cut into import frames without ever holding the whole file.

Bytes arrive in pieces of any size. They are buffered up to `batch_bytes`, cut at the last record boundary
(for CSV, a newline outside quotes: quotes balance before it), and each batch is parsed by Polars into
columns; `Rechunker` then deals those rows out as frames of exactly the chunk size. Memory is bounded by one
batch plus one chunk, whatever the upload's length.

CSV: a header row of contact field names (`email`, `first_name`, `last_name`, `phone`, `company`,
`job_title`, `tags` as `;`-separated values, `custom_fields` as a JSON object text) and/or
`custom_fields.<key>` columns, whose non-empty cells become that key's string value. NDJSON: one JSON
object per line with the fields of an import record.
"""

from __future__ import annotations

import csv
import io
from abc import ABC, abstractmethod
from collections.abc import Iterable

import msgspec
import polars as pl

from crm_bulk.errors import ValidationError
from crm_bulk.ledger.payload import IMPORT_SCHEMA, IMPORT_TEXT_COLUMNS, import_frame

CSV_TYPES = frozenset({"text/csv", "application/csv"})
NDJSON_TYPES = frozenset(
    {"application/x-ndjson", "application/ndjson", "application/jsonl", "application/json-seq"}
)
CUSTOM_PREFIX = "custom_fields."
TAG_SEPARATOR = ";"
# Bytes parsed at once. Measured on a 1M-row CSV upload (tests/integration/test_api_import_memory.py, Arrow
# on mimalloc then): the API process peaked at 545 MB resident with 4 MiB batches, 509 MB with 1 MiB and
# 493 MB with 256 KiB, at 3.6 s, 3.5 s and 4.5 s; about 2,000 rows per parse is still cheap.
DEFAULT_BATCH_BYTES = 256 * 1024
# A single record larger than this (or a quote never closed) is refused rather than buffered without end.
MAX_RECORD_BYTES = 1024 * 1024
# How many newlines from the end to try as a cut before waiting for more bytes (each try is one C-speed scan).
_CUT_ATTEMPTS = 64

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


class CsvParser(RecordParser):
    """RFC 4180 CSV with a header row; every batch is parsed with that header."""

    def __init__(self, *, batch_bytes: int = DEFAULT_BATCH_BYTES) -> None:
        super().__init__(batch_bytes=batch_bytes)
        self._header: bytes | None = None
        self._columns: list[str] = []
        self._custom: dict[str, str] = {}

    def feed(self, data: bytes) -> list[pl.DataFrame]:
        """As `RecordParser.feed`, reading the header row first."""
        if self._header is None:
            self._buffer += data
            self.bytes += len(data)
            if not self._take_header(final=False):
                return []
            return super().feed(b"")
        return super().feed(data)

    def finish(self) -> list[pl.DataFrame]:
        """As `RecordParser.finish`; an upload without a header row is refused."""
        if self._header is None and not self._take_header(final=True):
            raise ValidationError("the upload is empty: a CSV needs a header row", field="body", code="empty")
        return super().finish()

    def _take_header(self, *, final: bool) -> bool:
        end = _first_boundary(self._buffer)
        if end is None:
            if len(self._buffer) > MAX_RECORD_BYTES:
                raise ValidationError("no header row found", field="body", code="malformed_csv")
            if not final or not self._buffer.strip():
                return False
            end = len(self._buffer)
        raw = bytes(self._buffer[:end]).removeprefix(b"\xef\xbb\xbf")
        del self._buffer[:end]
        self._columns = _header_columns(raw)
        self._custom = {
            c: c.removeprefix(CUSTOM_PREFIX) for c in self._columns if c.startswith(CUSTOM_PREFIX)
        }
        self._header = raw.rstrip(b"\r\n") + b"\n"
        return True

    def _cut(self, buffer: bytearray) -> int | None:
        return _last_boundary(buffer)

    def _parse(self, batch: bytes) -> pl.DataFrame:
        assert self._header is not None
        try:
            frame = pl.read_csv(
                io.BytesIO(self._header + batch),
                has_header=True,
                infer_schema=False,
                encoding="utf8",
                raise_if_empty=False,
            )
        except (pl.exceptions.ComputeError, pl.exceptions.NoDataError, pl.exceptions.ShapeError) as exc:
            raise ValidationError(
                f"malformed CSV {self._where()}: {_reason(exc, _CSV_REASONS, _CSV_DEFAULT)}",
                field="body",
                code="malformed_csv",
            ) from None
        frame.columns = self._columns
        return import_frame(self._to_import_columns(frame))

    def _to_import_columns(self, frame: pl.DataFrame) -> pl.DataFrame:
        exprs: list[pl.Expr] = [pl.col(name) for name in IMPORT_TEXT_COLUMNS if name in frame.columns]
        if "tags" in frame.columns:
            exprs.append(
                pl.col("tags")
                .str.split(TAG_SEPARATOR)
                .list.eval(pl.element().str.strip_chars())
                .list.eval(pl.element().filter(pl.element() != ""))
            )
        if "custom_fields" in frame.columns:
            exprs.append(pl.col("custom_fields"))
        elif self._custom:
            exprs.append(_custom_fields_json(self._custom))
        return frame.select(exprs)


def _custom_fields_json(columns: dict[str, str]) -> pl.Expr:
    """A JSON object text per row from `custom_fields.<key>` columns, empty cells left out (null if all)."""
    pieces = [
        pl.when(pl.col(column).is_not_null())
        .then(pl.struct(pl.col(column).alias(key)).struct.json_encode().str.slice(1).str.strip_suffix("}"))
        .otherwise(None)
        for column, key in columns.items()
    ]
    body = pl.concat_str(pieces, separator=",", ignore_nulls=True)
    return (
        pl.when(body.is_null() | (body == ""))
        .then(None)
        .otherwise(pl.lit("{") + body + pl.lit("}"))
        .alias("custom_fields")
    )


def _header_columns(raw: bytes) -> list[str]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValidationError("the header row is not UTF-8", field="body", code="malformed_csv") from None
    rows = list(csv.reader([text.rstrip("\r\n")]))
    columns = [name.strip() for name in rows[0]] if rows else []
    if not columns or "email" not in columns:
        raise ValidationError("the header row must name an email column", field="email", code="missing")
    if len(set(columns)) != len(columns):
        raise ValidationError("the header row repeats a column", field="body", code="duplicate_column")
    known = set(IMPORT_SCHEMA.names)
    unknown = [
        c
        for c in columns
        if c not in known and not (c.startswith(CUSTOM_PREFIX) and len(c) > len(CUSTOM_PREFIX))
    ]
    if unknown:
        raise ValidationError(f"unknown import columns: {unknown}", field=unknown[0], code="unknown_field")
    if "custom_fields" in columns and any(c.startswith(CUSTOM_PREFIX) for c in columns):
        raise ValidationError(
            "use either a custom_fields column or custom_fields.<key> columns",
            field="custom_fields",
            code="conflict",
        )
    return columns


def _quotes_balanced(buffer: bytearray, end: int) -> bool:
    # In RFC 4180 a quote inside a quoted field is doubled, so an even count means "outside quotes".
    return buffer.count(b'"', 0, end) % 2 == 0


def _first_boundary(buffer: bytearray) -> int | None:
    start = 0
    for _ in range(_CUT_ATTEMPTS):
        newline = buffer.find(b"\n", start)
        if newline < 0:
            return None
        if _quotes_balanced(buffer, newline):
            return newline + 1
        start = newline + 1
    return None


def _last_boundary(buffer: bytearray) -> int | None:
    end = len(buffer)
    for _ in range(_CUT_ATTEMPTS):
        newline = buffer.rfind(b"\n", 0, end)
        if newline < 0:
            return None
        if _quotes_balanced(buffer, newline):
            return newline + 1
        end = newline
    return None


# The reader's errors in the platform's words: what part of the message (lower case) means what for the
# person who sent the file. Its own wording (type names, tuning hints) would mean nothing to them.
_CSV_REASONS: tuple[tuple[str, str], ...] = (
    ("more fields", "a row has more fields than the header"),
    ("utf-8", "the file is not UTF-8 text"),
    ("could not parse", "a quoted field is never closed, or a row cannot be split into fields"),
)
_CSV_DEFAULT = "a row cannot be read as CSV"
_NDJSON_REASONS: tuple[tuple[str, str], ...] = (
    ("list", "`tags` must be a list of strings"),
    ("error parsing line", "a line is not a JSON object"),
    ("utf-8", "the file is not UTF-8 text"),
)
_NDJSON_DEFAULT = "a line is not a JSON object with text values (and `tags` a list of strings)"


def _reason(exc: BaseException, reasons: tuple[tuple[str, str], ...], default: str) -> str:
    text = str(exc).lower()
    return next((reason for needle, reason in reasons if needle in text), default)


def parser_for(content_type: str, *, batch_bytes: int = DEFAULT_BATCH_BYTES) -> RecordParser | None:
    """The parser for an upload's Content-Type, or None when it is neither CSV nor NDJSON."""
    kind = media_type(content_type)
    if kind in CSV_TYPES:
        return CsvParser(batch_bytes=batch_bytes)
    if kind in NDJSON_TYPES:
        return NdjsonParser(batch_bytes=batch_bytes)
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
