"""Import files as people have them: column mapping by name and alias, delimiters, encodings, XLSX, preview.

Every format ends as import frames (`crm_bulk.ledger.payload.IMPORT_SCHEMA`) produced while the body
arrives, so the API's upload session stores chunks the same way for all of them.
"""

from crm_bulk.imports.csv_records import DelimitedParser
from crm_bulk.imports.headers import ColumnMapping, resolve_columns
from crm_bulk.imports.options import ImportOptions, import_options
from crm_bulk.imports.stream import RecordStream
from crm_bulk.imports.xlsx import XLSX_TYPES, XlsxParser

__all__ = [
    "XLSX_TYPES",
    "ColumnMapping",
    "DelimitedParser",
    "ImportOptions",
    "RecordStream",
    "XlsxParser",
    "import_options",
    "resolve_columns",
]
