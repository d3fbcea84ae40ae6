"""A batch of a file's columns (text, in file order) made into an import frame by a `ColumnMapping`.

Shared by every tabular format (CSV in any encoding and delimiter, XLSX): once a batch is text columns,
the same expressions place each column, split `tags` on `;`, and gather `custom_fields.<key>` columns into
one JSON object text per row. Empty cells count as absent; rows with every cell empty (blank lines, a
sheet's trailing empty rows) are dropped.
"""

from __future__ import annotations

import polars as pl

from crm_bulk.imports.headers import CUSTOM_PREFIX, ColumnMapping
from crm_bulk.ledger.payload import IMPORT_TEXT_COLUMNS, import_frame

TAG_SEPARATOR = ";"


def positional_names(width: int) -> list[str]:
    """Column names a batch is read under (headers may repeat letters, or be empty)."""
    return [f"column_{i}" for i in range(width)]


def blank_rows(frame: pl.DataFrame) -> pl.Series:
    """True for the rows whose every cell is empty."""
    if frame.width == 0:
        return pl.Series("blank", [True] * frame.height, dtype=pl.Boolean)
    return frame.select(pl.all_horizontal(pl.all().is_null()).alias("blank")).to_series()


def empty_as_null(frame: pl.DataFrame) -> pl.DataFrame:
    """Every empty text cell as null (a quoted "" is as empty as nothing between two delimiters)."""
    return frame.lazy().pipe(_empty_as_null).collect()


def drop_blank_rows(frame: pl.DataFrame) -> pl.DataFrame:
    """Empty cells as null, and only the rows with at least one non-empty cell."""
    if not frame.height or not frame.width:
        return frame
    return _without_blank_rows(frame.lazy()).collect()


def _empty_as_null(frame: pl.LazyFrame) -> pl.LazyFrame:
    return frame.with_columns(pl.when(pl.all() == "").then(None).otherwise(pl.all()).name.keep())


def _without_blank_rows(frame: pl.LazyFrame) -> pl.LazyFrame:
    if not frame.collect_schema().len():
        return frame
    return _empty_as_null(frame).filter(~pl.all_horizontal(pl.all().is_null()))


def import_columns(frame: pl.DataFrame, columns: ColumnMapping) -> pl.DataFrame:
    """`frame` (text columns named by `positional_names`) as an import frame: empty cells null, blank rows
    dropped and every column placed in one pass."""
    exprs: list[pl.Expr] = []
    custom: dict[str, str] = {}
    for name, target in zip(frame.columns, columns.fields, strict=False):
        if not target:
            continue
        if target in IMPORT_TEXT_COLUMNS:
            exprs.append(pl.col(name).alias(target))
        elif target == "tags":
            exprs.append(
                pl.col(name)
                .str.split(TAG_SEPARATOR)
                .list.eval(pl.element().str.strip_chars())
                .list.eval(pl.element().filter(pl.element() != ""))
                .alias("tags")
            )
        elif target == "custom_fields":
            exprs.append(pl.col(name).alias("custom_fields"))
        elif target.startswith(CUSTOM_PREFIX):
            custom[name] = target.removeprefix(CUSTOM_PREFIX)
    if custom:
        exprs.append(custom_fields_json(custom))
    if not exprs:
        return import_frame(pl.DataFrame())
    return import_frame(_without_blank_rows(frame.lazy()).select(exprs).collect())


def custom_fields_json(columns: dict[str, str]) -> pl.Expr:
    """A JSON object text per row from column → key, empty cells left out (null if all are empty)."""
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
