"""Result file columns and rows without services: layouts per action, changed values, records as sent."""

from __future__ import annotations

import csv
import io
import json

import polars as pl
import pyarrow as pa
import pytest

from crm_bulk.actions.specs import BulkActionRequest, Changes, Target
from crm_bulk.api.result_files import csv_chunks, layout_of, ndjson_chunks
from crm_bulk.entitylog.inputs import decode_inputs, encode_inputs
from crm_bulk.entitylog.store import RESULT_SCHEMA
from crm_bulk.ledger.payload import IMPORT_SCHEMA, encode_records, import_frame

LEAD = ["line", "entity_id", "outcome", "code", "message"]


def _rows(**columns: list[object]) -> pl.DataFrame:
    n = len(columns["line"])
    defaults: dict[str, list[object]] = {
        "entity_id": [None] * n,
        "outcome": ["succeeded"] * n,
        "code": ["succeeded"] * n,
        "message": [""] * n,
        "changed_fields": [[]] * n,
        "input": [""] * n,
    }
    table = pa.Table.from_pydict(defaults | columns, schema=RESULT_SCHEMA)
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame


def _payload(frame: pl.DataFrame) -> bytes:
    return encode_records(import_frame(frame).with_columns(pl.lit(None, pl.Int64).alias("repeat_of")))


@pytest.mark.parametrize(
    ("spec", "extra"),
    [
        (BulkActionRequest(action="import"), IMPORT_SCHEMA.names),
        (
            BulkActionRequest(
                action="update",
                target=Target(all=True),
                changes=Changes(
                    set={"job_title": "CTO", "company": "Acme"},
                    unset=["phone"],
                    custom_fields={"plan": "gold", "seats": 3},
                    remove_custom_fields=["old"],
                ),
            ),
            [
                "company",
                "job_title",
                "phone",
                "custom_fields.old",
                "custom_fields.plan",
                "custom_fields.seats",
            ],
        ),
        (BulkActionRequest(action="add_tags", target=Target(all=True), tags=["a", "b"]), ["tags"]),
        (BulkActionRequest(action="delete", target=Target(all=True)), []),
    ],
)
def test_each_action_has_its_columns(spec: BulkActionRequest, extra: list[str]) -> None:
    assert list(layout_of(spec).columns) == LEAD + list(extra)


def test_an_update_row_shows_new_values_only_for_the_fields_it_changed() -> None:
    spec = BulkActionRequest(
        action="update",
        target=Target(all=True),
        changes=Changes(set={"company": "=Acme"}, custom_fields={"seats": 3}),
    )
    rows = _rows(line=[1, 2], entity_id=[10, 11], changed_fields=[["company", "custom_fields"], []])
    text = b"".join(csv_chunks(iter([rows]), layout_of(spec))).decode()
    assert list(csv.reader(io.StringIO(text))) == [
        [*LEAD, "company", "custom_fields.seats"],
        ["1", "10", "succeeded", "succeeded", "", "'=Acme", "3"],  # neutralised for spreadsheets
        ["2", "11", "succeeded", "succeeded", "", "", ""],
    ]
    as_json = [
        json.loads(line) for line in b"".join(ndjson_chunks(iter([rows]), layout_of(spec))).splitlines()
    ]
    assert (as_json[0]["company"], as_json[1]["company"]) == ("=Acme", None)


def test_records_travel_as_sent_and_come_back_by_row_without_bookkeeping_columns() -> None:
    sent = pl.DataFrame(
        {
            "email": ["Ann@Example.COM", "+1 not, an email\n"],
            "tags": [["x", "y"], None],
            "custom_fields": ['{"plan": "gold"}', None],
        }
    )
    texts = encode_inputs(_payload(sent), pa.array([1, 0], pa.int32()))
    assert "repeat_of" not in json.loads(texts[0].as_py())
    back = decode_inputs(pl.Series([*texts.to_pylist(), ""]), IMPORT_SCHEMA)
    assert back.columns == IMPORT_SCHEMA.names
    assert back.get_column("email").to_list() == ["+1 not, an email\n", "Ann@Example.COM", None]
    assert back.get_column("tags").to_list() == [None, ["x", "y"], None]
    assert back.get_column("custom_fields").to_list() == [None, '{"plan": "gold"}', None]


def test_an_import_file_writes_the_record_columns_with_tags_joined() -> None:
    texts = encode_inputs(_payload(pl.DataFrame({"email": ["a@x.com"], "tags": [["p", "q"]]})), pa.array([0]))
    rows = _rows(line=[7], outcome=["failed"], code=["too_long"], input=texts.to_pylist())
    text = b"".join(csv_chunks(iter([rows]), layout_of(BulkActionRequest(action="import")))).decode()
    header, row = list(csv.reader(io.StringIO(text)))
    assert dict(zip(header, row, strict=True)) == {
        "line": "7",
        "entity_id": "",
        "outcome": "failed",
        "code": "too_long",
        "message": "",
        "email": "a@x.com",
        "first_name": "",
        "last_name": "",
        "phone": "",
        "company": "",
        "job_title": "",
        "tags": "p;q",
        "custom_fields": "",
    }
    assert b"".join(ndjson_chunks(iter([]), layout_of(BulkActionRequest(action="import")))) == b""
