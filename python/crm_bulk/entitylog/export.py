"""CSV exports of the entity log, safe to open in a spreadsheet program.

A cell that begins with `=`, `+`, `-`, `@`, a tab or a carriage return is read as a formula by spreadsheet
programs (CSV injection). Following OWASP's guidance, every text cell an export writes that begins with one
of them gets a leading single quote, which spreadsheets show but never evaluate; cells holding a quote, the
separator or a line break are quoted by the CSV writer. Only the CSV is neutralised: JSON answers carry the
values exactly as stored.
"""

from __future__ import annotations

import io

import polars as pl

# The characters OWASP lists as starting a formula in at least one spreadsheet program.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_STARTS_FORMULA = r"^[=+\-@\t\r]"


def neutralise_cell(value: str) -> str:
    """`value` as a CSV cell no spreadsheet evaluates: prefixed with `'` when it begins a formula."""
    return "'" + value if value.startswith(FORMULA_STARTS) else value


def neutralise_frame(frame: pl.DataFrame) -> pl.DataFrame:
    """`frame` with every text column's cells neutralised as `neutralise_cell` does (nulls stay null)."""
    text_columns = [name for name, dtype in frame.schema.items() if dtype == pl.String]
    return frame.with_columns(
        pl.when(pl.col(name).str.contains(_STARTS_FORMULA))
        .then(pl.lit("'") + pl.col(name))
        .otherwise(pl.col(name))
        .alias(name)
        for name in text_columns
    )


def csv_bytes(frame: pl.DataFrame, *, include_header: bool) -> bytes:
    """`frame` as neutralised CSV (UTF-8, `\\n` line ends; cells with a quote, comma or line break quoted)."""
    out = io.BytesIO()
    neutralise_frame(frame).write_csv(out, include_header=include_header)
    return out.getvalue()
