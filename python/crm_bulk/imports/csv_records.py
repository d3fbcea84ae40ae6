"""Delimited text files (CSV, semicolon, tab, pipe; any encoding) read as import frames while they arrive.

Bytes are turned into UTF-8 as they come (`Utf8Stream`), buffered up to `batch_bytes`, cut at the last
record boundary (a newline outside quotes: quotes balance before it), and each batch is parsed by Polars
with the header row in front of it. Memory is bounded by one batch, whatever the file's length. Quoted
fields may hold delimiters, doubled quotes and line breaks; lines may end in CRLF.

A row with more or fewer fields than the header is refused with its line and the column concerned: every
batch's field counts are checked in columns (quoted text removed, delimiters counted per line), and only a
batch that fails is read again row by row to name the line.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator

import polars as pl

from crm_bulk.errors import ValidationError
from crm_bulk.imports.columns import import_columns, positional_names
from crm_bulk.imports.formats import Utf8Stream, sniff_delimiter
from crm_bulk.imports.headers import ColumnMapping, UnknownColumns, resolve_columns

# Bytes parsed at once. Measured on a 1M-row CSV upload (tests/integration/test_api_import_memory.py, Arrow
# on mimalloc then): the API process peaked at 545 MB resident with 4 MiB batches, 509 MB with 1 MiB and
# 493 MB with 256 KiB, at 3.6 s, 3.5 s and 4.5 s; about 2,000 rows per parse is still cheap.
DEFAULT_BATCH_BYTES = 256 * 1024
# A single record larger than this (or a quote never closed) is refused rather than buffered without end.
MAX_RECORD_BYTES = 1024 * 1024
# The row reader (which names ragged rows) must take any field a record may hold; its default is 128 KiB.
csv.field_size_limit(max(csv.field_size_limit(), MAX_RECORD_BYTES + 1))
# How many newlines from the end to try as a cut before waiting for more bytes (each try is one C-speed scan).
_CUT_ATTEMPTS = 64
# A quoted field's text, quotes included (a doubled quote inside splits it in two matches, both removed).
_QUOTED = re.compile(rb'"[^"]*"')


class DelimitedParser:
    """One delimited-text upload; `feed` pieces, then `finish`. `columns` is known once the header is read."""

    def __init__(
        self,
        *,
        delimiter: str | None = None,
        encoding: str | None = None,
        mapping: dict[str, str] | None = None,
        unknown_columns: UnknownColumns = "custom_fields",
        batch_bytes: int = DEFAULT_BATCH_BYTES,
    ) -> None:
        self._text = Utf8Stream(encoding)
        self._given_delimiter = delimiter
        self._mapping = mapping
        self._unknown_columns: UnknownColumns = unknown_columns
        self._batch_bytes = batch_bytes
        self._buffer = bytearray()
        self._header: bytes | None = None
        self.columns: ColumnMapping | None = None
        self.delimiter = delimiter or ","
        self.rows = 0
        self.bytes = 0
        # Physical lines consumed so far (header included): where the next batch starts.
        self.lines = 0

    @property
    def encoding(self) -> str | None:
        """The encoding the file is read in (known after its first bytes)."""
        return self._text.encoding

    @property
    def mapping_used(self) -> dict[str, str] | None:
        """Header → target of every column, once the header row has been read."""
        return None if self.columns is None else self.columns.used()

    def feed(self, data: bytes) -> list[pl.DataFrame]:
        """Take more bytes; return the import frames of every complete batch now available."""
        self.bytes += len(data)
        self._buffer += self._text.feed(data)
        if self._header is None and not self._take_header(final=False):
            return []
        frames: list[pl.DataFrame] = []
        while len(self._buffer) >= self._batch_bytes:
            cut = last_boundary(self._buffer)
            if cut is None:
                if len(self._buffer) > self._batch_bytes + MAX_RECORD_BYTES:
                    raise ValidationError(
                        f"line {self.lines + 1}: no record boundary in {len(self._buffer)} bytes (a record "
                        f"over {MAX_RECORD_BYTES} bytes, or a quote never closed)",
                        field="body",
                        code="record_too_large",
                    )
                break
            frames.extend(self._frames(self._take(cut)))
        return frames

    def finish(self) -> list[pl.DataFrame]:
        """The frames of whatever is left once the upload has ended."""
        self._buffer += self._text.feed(b"", final=True)
        if self._header is None and not self._take_header(final=True):
            raise ValidationError("the upload is empty: a CSV needs a header row", field="body", code="empty")
        rest = self._take(len(self._buffer))
        return self._frames(rest) if rest.strip() else []

    def complete_batch(self) -> bytes:
        """Every whole record buffered so far (for a preview of a file's first bytes: a line cut off at the
        end is left out)."""
        self._buffer += self._text.feed(b"", final=False)
        if self._header is None:
            self._take_header(final=False)
        cut = last_boundary(self._buffer) or 0
        return self._take(cut)

    def parse_batch(self, batch: bytes) -> pl.DataFrame:
        """Whole records (UTF-8, after the header) as text columns in file order (blank rows kept)."""
        assert self._header is not None and self.columns is not None
        width = len(self.columns.headers)
        try:
            frame = pl.read_csv(
                io.BytesIO(self._header + batch),
                has_header=True,
                new_columns=positional_names(width),
                separator=self.delimiter,
                infer_schema=False,
                raise_if_empty=False,
            )
        except (pl.exceptions.ComputeError, pl.exceptions.NoDataError, pl.exceptions.ShapeError):
            raise self._ragged(batch) or self._unreadable() from None
        if not _widths_match(batch, self.delimiter, width, frame.height):
            # The column-wise count is strict RFC 4180; a row-by-row read decides (a stray quote inside an
            # unquoted field fools the count, not the reader).
            ragged = self._ragged(batch)
            if ragged is not None:
                raise ragged
        return frame

    def _take(self, cut: int) -> bytes:
        batch = bytes(self._buffer[:cut])
        del self._buffer[:cut]
        return batch

    def _frames(self, batch: bytes) -> list[pl.DataFrame]:
        assert self.columns is not None
        frame = import_columns(self.parse_batch(batch), self.columns)
        self.lines += batch.count(b"\n")
        self.rows += frame.height
        return [frame] if frame.height else []

    def _take_header(self, *, final: bool) -> bool:
        end = first_boundary(self._buffer)
        if end is None:
            if len(self._buffer) > MAX_RECORD_BYTES:
                raise ValidationError("no header row found", field="body", code="malformed_csv")
            if not final or not self._buffer.strip():
                return False
            end = len(self._buffer)
        raw = self._take(end)
        text = raw.decode("utf-8").rstrip("\r\n")
        if self._given_delimiter is None:
            self.delimiter = sniff_delimiter(text)
        try:
            rows = list(csv.reader([text], delimiter=self.delimiter))
        except csv.Error:
            raise ValidationError(
                "the header row cannot be read (a field over the reader's limit, or a stray quote)",
                field="body",
                code="malformed_csv",
            ) from None
        headers = rows[0] if rows else []
        self.columns = resolve_columns(headers, mapping=self._mapping, unknown_columns=self._unknown_columns)
        self._header = raw.rstrip(b"\r\n") + b"\n"
        self.lines = raw.count(b"\n")
        return True

    def _ragged(self, batch: bytes) -> ValidationError | None:
        """The first row of `batch` whose field count is not the header's, named by line and column."""
        assert self.columns is not None
        headers = self.columns.headers
        for line, fields in numbered_records(
            batch.decode("utf-8"), self.delimiter, first_line=self.lines + 1
        ):
            if not fields or len(fields) == len(headers):
                continue
            if len(fields) > len(headers):
                where = f"column {len(headers) + 1} is past the header's last column ({headers[-1]!r})"
            else:
                where = f"column {len(fields) + 1} ({headers[len(fields)]!r}) is missing"
            return ValidationError(
                f"line {line}: {len(fields)} field{'' if len(fields) == 1 else 's'} where the header has "
                f"{len(headers)}; {where}",
                field="body",
                code="ragged_row",
            )
        return None

    def _unreadable(self) -> ValidationError:
        return ValidationError(
            f"malformed CSV in the records after line {self.lines}: a quoted field is never closed, or a row "
            "cannot be split into fields",
            field="body",
            code="malformed_csv",
        )


def numbered_records(text: str, delimiter: str, *, first_line: int) -> Iterator[tuple[int, list[str]]]:
    """(line the record starts on, its fields) of each record of `text`; blank lines give empty lists."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=False)
    start = first_line
    try:
        for fields in reader:
            yield start, fields
            start = first_line + reader.line_num
    except csv.Error:
        # A field over the row reader's limit (128 KiB): the records before it are all it can number.
        return


def _widths_match(batch: bytes, delimiter: str, width: int, rows: int) -> bool:
    """Whether `batch`, read as `rows` records, has `width` fields in each, counted without looking at a
    row: the reader refuses a row with too many fields itself, so one with too few shows as fewer
    delimiters outside quotes than `rows * (width - 1)` (a blank line too, which the row-wise check then
    lets through). One C-speed scan, plus one regex pass when the batch holds quotes."""
    outside = _QUOTED.sub(b"", batch) if b'"' in batch else batch
    return outside.count(delimiter.encode()) == rows * (width - 1)


def _quotes_balanced(buffer: bytearray, end: int) -> bool:
    # In RFC 4180 a quote inside a quoted field is doubled, so an even count means "outside quotes".
    return buffer.count(b'"', 0, end) % 2 == 0


def first_boundary(buffer: bytearray) -> int | None:
    """The length of the first record (a newline outside quotes ends it), or None."""
    start = 0
    for _ in range(_CUT_ATTEMPTS):
        newline = buffer.find(b"\n", start)
        if newline < 0:
            return None
        if _quotes_balanced(buffer, newline):
            return newline + 1
        start = newline + 1
    return None


def last_boundary(buffer: bytearray) -> int | None:
    """The length of the longest prefix of `buffer` that ends at a record boundary, or None."""
    end = len(buffer)
    for _ in range(_CUT_ATTEMPTS):
        newline = buffer.rfind(b"\n", 0, end)
        if newline < 0:
            return None
        if _quotes_balanced(buffer, newline):
            return newline + 1
        end = newline
    return None
