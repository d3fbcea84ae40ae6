"""The entity log's engine in this process: a clickhouse-connect client for chDB (`chdb:///path`) or a server.

`ClickHouseEngine` opens its client lazily, so an engine can be built while ClickHouse is down and every call
reports that as `BackendUnavailableError`. chDB hosts one engine per process and per data path: clients on the
same path share it, a second path in the same process is refused; in the embedded deployment only the store
host builds a chDB engine (see `crm_bulk.entitylog.host`). DDL lives in `sql/clickhouse/NNN_name.sql`, applied
once each by `migrate()`; the reads are the named queries of `sql/clickhouse/queries/`, always with bound
parameters.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import SplitResult, urlsplit

import clickhouse_connect
import pyarrow as pa
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import Error as ClickHouseClientError
from clickhouse_connect.driver.exceptions import OperationalError

from crm_bulk.errors import BackendUnavailableError, PermanentError, RetryableError
from crm_bulk.sqlfiles import query, sql_root
from crm_bulk.store.migrate import discover

log = logging.getLogger(__name__)

SETTING = "CRM_BULK_CLICKHOUSE_URL"

# Server error codes that a later attempt can clear: overload, timeouts, network, too many parts.
_TRANSIENT_CODES = frozenset(
    {3, 159, 160, 202, 203, 209, 210, 236, 241, 242, 252, 319, 394, 425, 439, 473, 999}
)
_STATEMENT_END = re.compile(r";\s*$", re.MULTILINE)
# Rows per table a streamed query yields: a few MB of result rows, whatever ClickHouse's block size.
STREAM_ROWS = 4096


class ClickHouseEngine:
    """A `LogEngine` over one lazily opened clickhouse-connect client, shared by this process's threads."""

    def __init__(self, dsn: str, *, connect_timeout: float = 5.0, send_receive_timeout: float = 60.0) -> None:
        """Check the DSN's shape (a bad one raises `BackendUnavailableError`); open nothing yet."""
        parts = check_dsn(dsn)
        self.kind = "chdb" if parts.scheme == "chdb" else "server"
        self._dsn = dsn
        self._connect_timeout = connect_timeout
        self._send_receive_timeout = send_receive_timeout
        self._lock = threading.Lock()
        self._client: Client | None = None

    def __repr__(self) -> str:
        return f"ClickHouseEngine({_redact(self._dsn)!r}, open={self._client is not None})"

    def client(self) -> Client:
        """The clickhouse-connect client, opened on first use; failure raises `BackendUnavailableError`."""
        with self._lock:
            if self._client is None:
                self._client = self._open()
            return self._client

    def _open(self) -> Client:
        options: dict[str, Any] = {"tz_mode": "aware"}
        if self.kind == "server":
            # One client is shared by threads; a generated session id would make their queries collide.
            options |= {
                "connect_timeout": self._connect_timeout,
                "send_receive_timeout": self._send_receive_timeout,
                "autogenerate_session_id": False,
            }
        try:
            client = clickhouse_connect.get_client(dsn=self._dsn, **options)
        except (ClickHouseClientError, OSError, RuntimeError, ValueError) as exc:
            raise BackendUnavailableError("clickhouse", SETTING, f"{_redact(self._dsn)}: {exc}") from exc
        log.info("clickhouse client open: %s (server %s)", _redact(self._dsn), client.server_version)
        return client

    def close(self) -> None:
        """Close the client; the next call opens a new one."""
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def check(self) -> None:
        """Raise unless ClickHouse answers a trivial query (readiness probes report the message)."""
        with _translated("SELECT 1"):
            self.client().command("SELECT 1")

    def migrate(self) -> list[int]:
        """Apply pending `sql/clickhouse/NNN_name.sql` files in order; return the versions applied now.

        Every statement is idempotent (`IF NOT EXISTS`), so concurrent starts that both apply a file are safe.
        """
        applied_now: list[int] = []
        with _translated("migrate"):
            client = self.client()
            client.command(query("clickhouse", "migrate", "create_migrations_table"))
            done = {
                int(r[0])
                for r in client.query(query("clickhouse", "migrate", "applied_versions")).result_rows
            }
            for migration in discover(sql_root() / "clickhouse"):
                if migration.version in done:
                    continue
                for statement in split_statements(migration.path.read_text()):
                    client.command(statement)
                client.command(
                    query("clickhouse", "migrate", "record_version"),
                    parameters={"version": migration.version, "name": migration.name},
                )
                log.info("applied clickhouse migration %03d_%s", migration.version, migration.name)
                applied_now.append(migration.version)
        return applied_now

    def rows(self, group: str, name: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        """The result rows of the named query, as tuples."""
        with _translated(name):
            result = self.client().query(query("clickhouse", group, name), parameters=params)
        return [tuple(r) for r in result.result_rows]

    def arrow(self, group: str, name: str, params: dict[str, Any]) -> pa.Table:
        """The result of the named query as one Arrow table."""
        with _translated(name):
            return self.client().query_arrow(query("clickhouse", group, name), parameters=params)

    @contextmanager
    def stream(
        self, group: str, name: str, params: dict[str, Any], schema: pa.Schema
    ) -> Iterator[Iterator[pa.Table]]:
        """The named query's result as Arrow tables of `schema`, one per ClickHouse block, decoded as they
        are read (Native format: chDB and a server both stream it block by block).

        The stream runs on a client of its own: chDB holds a client's engine handle for as long as a stream
        of that client is open, which would hold up every other call (the shipper's inserts, the API's
        reads) until a slow reader has taken the last block."""
        client = self._open()
        try:
            with _translated(name):
                blocks = client.query_column_block_stream(query("clickhouse", group, name), parameters=params)
            with blocks:
                yield _tables(blocks, schema, name)
        finally:
            client.close()

    def insert_arrow(self, table: str, rows: pa.Table) -> None:
        """One Arrow insert into `table`."""
        with _translated(f"insert into {table}"):
            self.client().insert_arrow(table, rows)


def _tables(blocks: Iterable[Sequence[Sequence[Any]]], schema: pa.Schema, name: str) -> Iterator[pa.Table]:
    """Each block's columns (as clickhouse-connect decodes them) as Arrow tables of `schema`, at most
    `STREAM_ROWS` rows each, so a reader (and the store host's pipe) never holds a large block at once."""
    with _translated(name):
        for columns in blocks:
            rows = len(columns[0]) if columns else 0
            for start in range(0, rows, STREAM_ROWS):
                arrays = [
                    pa.array(column[start : start + STREAM_ROWS], type=kind)
                    for column, kind in zip(columns, schema.types, strict=True)
                ]
                yield pa.Table.from_arrays(arrays, schema=schema)


def split_statements(text: str) -> list[str]:
    """The statements of a DDL file: split at a `;` that ends a line, comment-only pieces dropped."""
    statements = []
    for piece in _STATEMENT_END.split(text):
        code_lines = [
            line for line in piece.splitlines() if line.strip() and not line.strip().startswith("--")
        ]
        if code_lines:
            statements.append(piece.strip())
    return statements


def check_dsn(dsn: str) -> SplitResult:
    """The parts of a ClickHouse DSN (`chdb:///path`, `http(s)://host[:port]`); `BackendUnavailableError`
    naming the setting for anything else."""
    try:
        parts = urlsplit(dsn)
        port = parts.port
    except ValueError as exc:
        raise BackendUnavailableError("clickhouse", SETTING, f"malformed URL: {exc}") from None
    if parts.scheme == "chdb":
        if not (parts.path or parts.netloc):
            raise BackendUnavailableError("clickhouse", SETTING, "expected chdb:///absolute/data/path")
    elif parts.scheme in {"http", "https"}:
        if not parts.hostname:
            raise BackendUnavailableError("clickhouse", SETTING, f"no host in {_redact(dsn)!r}")
        if port == 0:
            raise BackendUnavailableError("clickhouse", SETTING, f"bad port in {_redact(dsn)!r}")
    else:
        raise BackendUnavailableError(
            "clickhouse",
            SETTING,
            f"unsupported scheme in {_redact(dsn)!r}; expected chdb://, http:// or https://",
        )
    return parts


def _redact(dsn: str) -> str:
    """The DSN with its password masked, fit for logs and errors."""
    try:
        password = urlsplit(dsn).password
    except ValueError:
        return "<malformed URL>"
    return dsn if password is None else dsn.replace(f":{password}@", ":***@")


@contextmanager
def _translated(what: str) -> Iterator[None]:
    """Map clickhouse-connect errors onto the crm-bulk tree: unreachable, transient, or a bug."""
    try:
        yield
    except OperationalError as exc:
        if exc.code is None:
            raise BackendUnavailableError("clickhouse", SETTING, f"{what}: {exc}") from exc
        raise RetryableError(f"clickhouse {what}: {exc}") from exc
    except ClickHouseClientError as exc:
        if exc.code in _TRANSIENT_CODES:
            raise RetryableError(f"clickhouse {what}: {exc}") from exc
        raise PermanentError(f"clickhouse {what}: {exc}") from exc
