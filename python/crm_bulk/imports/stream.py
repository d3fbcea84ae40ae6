"""What a streamed import reads its body through, whatever the format: `RecordStream`."""

from __future__ import annotations

import builtins
from collections.abc import Iterable
from typing import Protocol

import polars as pl


class RecordStream(Protocol):
    """Bytes in (`feed`, then `finish` once), import frames out, in input order."""

    rows: int
    bytes: int

    @property
    def mapping_used(self) -> dict[str, str] | None:
        """Header → target of every column, once known (None for formats without a header row)."""
        ...

    def feed(self, data: builtins.bytes) -> list[pl.DataFrame]:
        """Take more bytes; the import frames now complete."""
        ...

    def finish(self) -> Iterable[pl.DataFrame]:
        """The rest of the frames once the body has ended (may be produced lazily)."""
        ...
