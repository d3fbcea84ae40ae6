"""The few operations the entity log needs from a ClickHouse engine, whichever process runs the engine.

`ClickHouseStore` holds the queries' parameters, validation and result shaping once; an engine only runs a
named query of `sql/clickhouse/queries/` (whole, or streamed block by block), inserts an Arrow table,
applies the DDL, answers a probe and closes. Two implement it: `ClickHouseEngine` (a clickhouse-connect
client in this process: a ClickHouse server, or chDB in the one process that owns it) and `HostEngine`
(the same calls sent to the store host, the process that owns chDB beside the API process). Every call
fails as a `CrmBulkError`: unreachable (`BackendUnavailableError`), worth another try (`RetryableError`) or
a bug (`PermanentError`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any, Protocol

import pyarrow as pa


class LogEngine(Protocol):
    """A ClickHouse engine reachable from this process."""

    def rows(self, group: str, name: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        """The result rows of query `name` in `sql/clickhouse/queries/<group>.sql`, with bound `params`."""
        ...

    def arrow(self, group: str, name: str, params: dict[str, Any]) -> pa.Table:
        """The same as `rows`, as one Arrow table (large results: no Python object per value)."""
        ...

    def stream(
        self, group: str, name: str, params: dict[str, Any], schema: pa.Schema
    ) -> AbstractContextManager[Iterator[pa.Table]]:
        """The named query's result as Arrow tables of `schema`, one per ClickHouse block, read while they
        are consumed (never held whole); leaving the context ends the query."""
        ...

    def insert_arrow(self, table: str, rows: pa.Table) -> None:
        """Insert `rows` (columns in the table's order and types) into ClickHouse table `table`."""
        ...

    def migrate(self) -> list[int]:
        """Apply pending `sql/clickhouse/NNN_name.sql` files; return the versions applied now."""
        ...

    def check(self) -> None:
        """Raise unless the engine answers a trivial query."""
        ...

    def close(self) -> None:
        """Release what this process holds of the engine; the next call opens it again."""
        ...
