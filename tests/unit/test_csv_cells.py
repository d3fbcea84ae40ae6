"""CSV exports neutralise cells that a spreadsheet would evaluate as formulas, and nothing else."""

from __future__ import annotations

import csv
import io

import polars as pl
import pytest

from crm_bulk.entitylog.export import FORMULA_STARTS, csv_bytes, neutralise_cell, neutralise_frame

HOSTILE = [
    '=HYPERLINK("http://evil.example","click")',
    "=2+2@x.example",
    "+1 555 0100",
    "-2+3",
    "@SUM(A1:A2)",
    "\tstarts with a tab",
    "\rstarts with a carriage return",
]
HARMLESS = [
    "",
    "ada@example.com",
    "invalid_email",
    "a value with = inside",
    "'already quoted",
    " =leading space",
    'comma, and "quotes"',
    "line\nbreak",
    "naïve café",
]


def test_every_formula_start_is_covered() -> None:
    assert {value[0] for value in HOSTILE} == set(FORMULA_STARTS)


@pytest.mark.parametrize("value", HOSTILE)
def test_a_cell_beginning_a_formula_gets_a_leading_quote(value: str) -> None:
    assert neutralise_cell(value) == "'" + value


@pytest.mark.parametrize("value", HARMLESS)
def test_other_cells_are_left_as_they_are(value: str) -> None:
    assert neutralise_cell(value) == value


def test_a_frame_is_neutralised_like_its_cells_and_numbers_and_nulls_are_untouched() -> None:
    values = [*HOSTILE, *HARMLESS, None]
    frame = pl.DataFrame({"entity_id": list(range(-1, len(values) - 1)), "email": values})
    result = neutralise_frame(frame)
    assert result["entity_id"].to_list() == frame["entity_id"].to_list()
    assert result["email"].to_list() == [None if v is None else neutralise_cell(v) for v in values]


@pytest.mark.parametrize("value", HOSTILE + HARMLESS)
def test_the_csv_reads_back_as_the_neutralised_cell(value: str) -> None:
    frame = pl.DataFrame({"email": [value], "code": ["invalid_email"]})
    text = csv_bytes(frame, include_header=True).decode()
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows == [["email", "code"], [neutralise_cell(value), "invalid_email"]]


def test_a_cell_with_a_carriage_return_is_quoted() -> None:
    frame = pl.DataFrame({"message": ["\rhidden"]})
    assert csv_bytes(frame, include_header=False) == b'"\'\rhidden"\n'


def test_the_header_is_written_only_when_asked() -> None:
    frame = pl.DataFrame({"email": ["=1"]})
    assert csv_bytes(frame, include_header=True) == b"email\n'=1\n"
    assert csv_bytes(frame, include_header=False) == b"'=1\n"
