"""Type stub of the compiled core (rust/src): column kernels over Arrow arrays.

Inputs are any object exporting the Arrow PyCapsule interface (a polars.Series, a pyarrow array);
outputs are `ArrowColumn`s, which ``pl.Series(column)`` and ``pa.array(column)`` adopt without copying.
"""

from collections.abc import Sequence
from typing import Protocol, final

__all__ = [
    "ArrowColumn",
    "SeenKeys",
    "core_version",
    "first_occurrence",
    "normalize_emails",
    "normalize_phones",
    "validate_custom_fields",
    "validate_lengths",
]

class _ArrowArrayExportable(Protocol):
    def __arrow_c_array__(self, requested_schema: object | None = None) -> tuple[object, object]: ...

class _ArrowStreamExportable(Protocol):
    def __arrow_c_stream__(self, requested_schema: object | None = None) -> object: ...

_Column = _ArrowArrayExportable | _ArrowStreamExportable

@final
class ArrowColumn:
    """One Arrow array produced by a kernel."""

    def __arrow_c_array__(self, requested_schema: object | None = None) -> tuple[object, object]: ...
    def __len__(self) -> int: ...

@final
class SeenKeys:
    """Keys met across calls, each with the number of the record that held it first."""

    def __init__(self) -> None: ...
    def repeats(self, keys: _Column, first_record: int) -> ArrowColumn: ...
    def __len__(self) -> int: ...

def core_version() -> str: ...
def normalize_emails(emails: _Column) -> tuple[ArrowColumn, ArrowColumn]: ...
def normalize_phones(phones: _Column, default_region: str = "US") -> tuple[ArrowColumn, ArrowColumn]: ...
def first_occurrence(keys: _Column) -> tuple[ArrowColumn, ArrowColumn]: ...
def validate_lengths(
    columns: Sequence[_Column], names: Sequence[str], limits: Sequence[int], rows: int
) -> ArrowColumn: ...
def validate_custom_fields(
    json_texts: _Column, *, max_bytes: int = 16384, max_depth: int = 5
) -> ArrowColumn: ...
