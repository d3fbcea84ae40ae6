"""Streamed upload parsing: record boundaries in any piece size, quoted newlines, columns, chunking."""

from __future__ import annotations

import csv
import io
import json

import polars as pl
import pytest

from crm_bulk.api.uploads import NdjsonParser, Rechunker, parser_for
from crm_bulk.errors import ValidationError
from crm_bulk.imports import DelimitedParser as CsvParser
from crm_bulk.imports import XlsxParser


def _feed(parser: CsvParser | NdjsonParser, data: bytes, piece: int) -> pl.DataFrame:
    frames = []
    for start in range(0, len(data), piece):
        frames += parser.feed(data[start : start + piece])
    frames += parser.finish()
    return pl.concat(frames) if frames else pl.DataFrame()


def _csv(rows: list[list[str]]) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerows(rows)
    return out.getvalue().encode()


TRICKY = _csv(
    [
        ["email", "first_name", "tags", "custom_fields.plan", "custom_fields.note"],
        *[
            [
                f"u{i}@example.com",
                f'Name "{i}"',
                "vip; beta;" if i % 2 else "",
                "gold" if i % 3 else "",
                'two\nlines, "quoted"' if i % 5 == 0 else "",
            ]
            for i in range(500)
        ],
    ]
)


@pytest.mark.parametrize(
    ("piece", "batch_bytes"),
    [
        (piece, batch)
        for piece in (1, 7, 64, 1000, 1 << 20)
        for batch in (10, 333, 4096, 1 << 20)
        if piece > 1 or batch < 4096
    ],
)
def test_csv_rows_survive_any_piece_and_batch_size(piece: int, batch_bytes: int) -> None:
    parser = CsvParser(batch_bytes=batch_bytes)
    frame = _feed(parser, TRICKY, piece)
    assert frame.height == 500 == parser.rows
    assert frame.get_column("email").to_list() == [f"u{i}@example.com" for i in range(500)]
    assert frame.row(1, named=True)["tags"] == ["vip", "beta"]
    assert frame.row(0, named=True)["tags"] is None
    assert frame.row(3, named=True)["first_name"] == 'Name "3"'
    fields = [None if v is None else json.loads(v) for v in frame.get_column("custom_fields").to_list()]
    assert fields[0] == {"note": 'two\nlines, "quoted"'}
    assert fields[1] == {"plan": "gold"}
    assert fields[3] is None
    assert set(frame.columns) == {
        "email",
        "first_name",
        "last_name",
        "phone",
        "company",
        "job_title",
        "tags",
        "custom_fields",
    }


def test_a_bom_and_a_custom_fields_json_column_are_understood() -> None:
    data = '\ufeffemail,custom_fields\r\na@example.com,"{""x"": 1}"\r\n'.encode()
    frame = _feed(CsvParser(), data, 5)
    assert frame.get_column("custom_fields").to_list() == ['{"x": 1}']


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "empty"),
        (b"first_name\nAda\n", "missing"),
        (b"email,email\na@x.com,b@x.com\n", "duplicate_column"),
        (b"email,custom_fields,custom_fields.a\nx,{},1\n", "conflict"),
        (b"email,first_name\na@x.com,A,B\n", "ragged_row"),
        (b"email,first_name\na@x.com\n", "ragged_row"),
        (b"email\n\xff\n", "undecodable"),
        (b'email\n"never closed\n', "malformed_csv"),
    ],
)
def test_bad_csv_raises_validation_errors(data: bytes, code: str) -> None:
    with pytest.raises(ValidationError) as caught:
        _feed(CsvParser(batch_bytes=8), data, 3)
    assert caught.value.code == code


def test_an_unclosed_quote_is_refused_before_it_is_buffered_without_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("crm_bulk.imports.csv_records.MAX_RECORD_BYTES", 1000)
    parser = CsvParser(batch_bytes=100)
    parser.feed(b'email,first_name\na@x.com,"')
    with pytest.raises(ValidationError) as caught:
        for _ in range(100):
            parser.feed(b"x\n" * 50)
    assert caught.value.code == "record_too_large"


@pytest.mark.parametrize("piece", [1, 13, 1 << 20])
def test_ndjson_lines_become_import_columns(piece: int) -> None:
    lines = [
        {"email": f"u{i}@example.com", "tags": ["a", "b"], "custom_fields": {"n": i, "deep": {"k": [i]}}}
        for i in range(50)
    ]
    data = b"\n".join(json.dumps(line).encode() for line in lines) + b"\n\n"
    parser = NdjsonParser(batch_bytes=200)
    frame = _feed(parser, data, piece)
    assert frame.height == 50 == parser.rows
    assert json.loads(frame.get_column("custom_fields")[7]) == {"n": 7, "deep": {"k": [7]}}
    assert frame.get_column("tags")[0].to_list() == ["a", "b"]


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b'{"email": "a@x.com"\n', "malformed_ndjson"),
        (b"[1, 2]\n", "malformed_ndjson"),
        (b'{"email": "a@x.com", "nick": "A"}\n', "unknown_field"),
        (b'{"email": "a@x.com", "tags": "vip"}\n', "malformed_ndjson"),
    ],
)
def test_bad_ndjson_raises_validation_errors(data: bytes, code: str) -> None:
    with pytest.raises(ValidationError) as caught:
        _feed(NdjsonParser(), data, 4)
    assert caught.value.code == code


@pytest.mark.parametrize(
    ("content_type", "kind"),
    [
        ("text/csv", CsvParser),
        ("text/csv; charset=utf-8", CsvParser),
        ("Application/X-NDJSON", NdjsonParser),
        ("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", XlsxParser),
        ("application/json", type(None)),
        ("", type(None)),
    ],
)
def test_parser_follows_the_content_type(content_type: str, kind: type) -> None:
    assert isinstance(parser_for(content_type, max_xlsx_bytes=1 << 20), kind)


@pytest.mark.parametrize("sizes", [[3, 4, 5], [12], [1] * 12, [11, 1], [0, 12]])
def test_rechunker_deals_exact_chunks_in_order(sizes: list[int]) -> None:
    rechunker = Rechunker(5)
    frames, start = [], 0
    for size in sizes:
        frames.append(pl.DataFrame({"n": list(range(start, start + size))}, schema={"n": pl.Int64}))
        start += size
    chunks = rechunker.push(frames)
    last = rechunker.finish()
    assert [c.height for c in chunks] == [5, 5]
    assert last is not None and last.height == 2
    assert pl.concat([*chunks, last]).get_column("n").to_list() == list(range(12))
    assert rechunker.finish() is None


# Words of the file reader's own errors that mean nothing to the person who sent the file.
READER_WORDS = ("schema", "series", "dtype", "expectednull", "json value", "polars", "infer_schema")


@pytest.mark.parametrize(
    ("parser", "data", "reason"),
    [
        (CsvParser, b"email,first_name\na@x.com,A,B\n", "line 2: 3 fields where the header has 2"),
        (CsvParser, b"email\nok@x.com\n\xff\n", "line 3, column 1: byte 0xff cannot be read as utf-8"),
        (CsvParser, b'email\n"never closed\n', "a quoted field is never closed"),
        (NdjsonParser, b'{"email": "a@x.com", "tags": "vip"}\n', "`tags` must be a list of strings"),
        (NdjsonParser, b'{"email": "a@x.com"}\n{"email": "b@x.com", "tags": {"a": 1}}\n', "`tags` must be"),
        (NdjsonParser, b'{"email": "a@x.com"}\nnot json\n', "a line is not a JSON object"),
    ],
)
def test_malformed_files_are_explained_in_the_platforms_words(
    parser: type[CsvParser] | type[NdjsonParser], data: bytes, reason: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        _feed(parser(), data, 1000)
    message = str(caught.value)
    assert reason in message
    assert not any(word in message.lower() for word in READER_WORDS), message


def test_a_short_row_after_a_field_over_128_kib_is_still_named() -> None:
    big = "x" * 200_000
    data = f'email,first_name\na@x.com,"{big}"\nb@x.com\n'.encode()
    with pytest.raises(ValidationError) as caught:
        _feed(CsvParser(), data, 1 << 20)
    assert caught.value.code == "ragged_row"
    assert str(caught.value).startswith("line 3: 1 field where the header has 2")
