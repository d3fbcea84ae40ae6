"""A stand-in for a ClickHouse server in tests: the real ClickHouse engine (chDB) behind the part of
ClickHouse's HTTP interface that clickhouse-connect uses. It is NOT a ClickHouse server — none of version 22
or later installs here — but what answers every query is ClickHouse's own engine, so the entity log's
contract suite can run over HTTP, with shippers writing concurrently from their own clients, as well as
against chDB in process.

What it serves, as clickhouse-connect's HTTP client (`driver/_backend/http_sync.py`, `httpcommon.py`)
sends it:
- `GET /ping` answers `Ok.`.
- `GET` or `POST /` runs one statement: the `query` URL parameter, the body, or both (then the body is the
  data of an `INSERT … FORMAT <fmt>` in `query`, or the rest of the statement's text). A body that starts
  with `INSERT INTO … FORMAT <fmt>` and a newline carries its data after that line. Insert data (Native,
  Arrow, RowBinary, … whatever format is named) is handed to the engine as `INSERT … FROM INFILE`.
- Request bodies are decompressed per `Content-Encoding` (lz4 frame, zstd, gzip, deflate, br); chunked
  transfer encoding is read. Responses are never compressed (`Content-Encoding` absent, which the client
  accepts whatever it asked for).
- `param_<name>` URL parameters are the statement's bound parameters; `database` picks the database;
  `default_format` is the output format of a statement without a `FORMAT` clause (else TabSeparated, as a
  server's default). Other URL parameters are settings, applied with `SET` for that statement only and
  restored after it, except the HTTP transport's own (`TRANSPORT_PARAMS`), which are accepted and ignored:
  no sessions, no progress headers, and `client_protocol_version` is not honoured, so Native output is
  protocol 0 and clickhouse-connect's protocol probe settles on that.
- Response headers clickhouse-connect reads: `X-ClickHouse-Format` (for result-producing statements),
  `X-ClickHouse-Query-Id`, `X-ClickHouse-Summary` (JSON of read/written rows and bytes),
  `X-ClickHouse-Timezone`; on failure `X-ClickHouse-Exception-Code` with the engine's message as the body
  and status 404 (unknown table or database), 400 (syntax, unknown setting or identifier), else 500.

The engine allows one process per data path and is not shared between threads: the server runs in a process
of its own (`serve_chdb_over_http`), and its request threads take turns on one engine connection.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

if TYPE_CHECKING:
    from crm_bulk.entitylog.store import ClickHouseStore

ROOT = Path(__file__).resolve().parents[2]
# The engines the entity log's contract suite runs on: chDB in this process, and chDB behind this stand-in.
ENGINES = ("chdb", "http")

# URL parameters of the HTTP interface itself, not engine settings.
TRANSPORT_PARAMS = frozenset(
    {
        "query",
        "database",
        "default_format",
        "query_id",
        "session_id",
        "session_timeout",
        "session_check",
        "wait_end_of_query",
        "send_progress_in_http_headers",
        "http_headers_progress_interval_ms",
        "enable_http_compression",
        "http_zlib_compression_level",
        "cancel_http_readonly_queries_on_client_close",
        "client_protocol_version",
        "buffer_size",
        "compress",
        "decompress",
        "quota_key",
        "role",
        "user",
        "password",
    }
)
_SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_INSERT_HEAD = re.compile(rb"^\s*(INSERT\s+INTO\s+.+?)\s+FORMAT\s+(\w+)\s*$", re.IGNORECASE | re.DOTALL)
_INSERT_WITH_DATA = re.compile(
    rb"^\s*(INSERT\s+INTO\s+.+?)\s+FORMAT\s+(\w+)[ \t]*\r?\n", re.IGNORECASE | re.DOTALL
)
_TRAILING_FORMAT = re.compile(r"\bFORMAT\s+(\w+)\s*;?\s*$", re.IGNORECASE)
_RESULT_STATEMENT = re.compile(r"^\s*(SELECT|WITH|SHOW|DESC|DESCRIBE|EXISTS|EXPLAIN)\b", re.IGNORECASE)
_ERROR_CODE = re.compile(r"Code:\s*(\d+)")
_NOT_FOUND_CODES = frozenset({60, 81})  # UNKNOWN_TABLE, UNKNOWN_DATABASE
_BAD_REQUEST_CODES = frozenset({27, 36, 47, 53, 62, 115, 117, 456, 457})


def _quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def decompress_body(data: bytes, encoding: str | None) -> bytes:
    """A request body as sent, without its `Content-Encoding`."""
    if not encoding or encoding == "identity" or not data:
        return data
    if encoding == "lz4":
        import lz4.frame  # type: ignore[import-untyped]

        return bytes(lz4.frame.decompress(data))
    if encoding == "zstd":
        # The zstd module clickhouse-connect compresses with (the standard library's, or its backport).
        from clickhouse_connect.driver.compression import _zstd_decompress

        return bytes(_zstd_decompress(data))
    if encoding == "gzip":
        return zlib.decompress(data, 16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return zlib.decompress(data)
    if encoding == "br":
        import brotli  # type: ignore[import-untyped]

        return bytes(brotli.decompress(data))
    raise ValueError(f"unsupported Content-Encoding {encoding!r}")


@dataclass
class Statement:
    """One request as the engine runs it."""

    sql: str
    params: dict[str, str]
    settings: dict[str, str]
    database: str
    output_format: str | None
    insert_file: str | None = None


@dataclass
class Reply:
    """What a statement produced."""

    body: bytes
    output_format: str | None
    summary: dict[str, str] = field(default_factory=dict)


def parse_request(params: dict[str, str], body: bytes, *, spool_dir: str) -> Statement:
    """The statement of a request (its `query` parameter and body); insert data is spooled to a file."""
    query = params.get("query", "").encode()
    data: bytes | None = None
    head: re.Match[bytes] | None = None
    if query and body:
        head = _INSERT_HEAD.match(query)
        text = query if head else query + b"\n" + body
        data = body if head else None
    else:
        text = query or body
    if head is None:
        head = _INSERT_WITH_DATA.match(text)
        if head is not None:
            data = text[head.end() :]
    bound = {k.removeprefix("param_"): v for k, v in params.items() if k.startswith("param_")}
    settings = {k: v for k, v in params.items() if k not in TRANSPORT_PARAMS and not k.startswith("param_")}
    for name in settings:
        if not _SETTING_NAME.match(name):
            raise ValueError(f"bad setting name {name!r}")
    database = params.get("database") or "default"
    if head is not None and data is not None:
        target, data_format = head.group(1).decode(), head.group(2).decode()
        spool = tempfile.NamedTemporaryFile(dir=spool_dir, suffix=f".{data_format}", delete=False)  # noqa: SIM115
        with spool:
            spool.write(data)
        sql = f"{target} FROM INFILE {_quote(spool.name)} FORMAT {data_format}"
        return Statement(sql, bound, settings, database, None, insert_file=spool.name)
    sql = text.decode()
    trailing = _TRAILING_FORMAT.search(sql)
    if trailing is not None:
        fmt: str | None = trailing.group(1)
    elif _RESULT_STATEMENT.match(sql):
        fmt = params.get("default_format") or "TabSeparated"
    else:
        fmt = None
    return Statement(sql, bound, settings, database, fmt)


class ChdbEngine:
    """One chDB connection on a data path, used by one request at a time."""

    def __init__(self, path: str) -> None:
        import chdb

        self._conn = chdb.connect(path)  # type: ignore[no-untyped-call]
        self._lock = threading.Lock()
        self.spool_dir = tempfile.mkdtemp(prefix="chdb-http-spool-")
        self.timezone = self._conn.query("SELECT timezone()", "TabSeparated").bytes().decode().strip()

    def run(self, statement: Statement) -> Reply:
        """Run the statement with its settings (restored after) in its database."""
        with self._lock:
            try:
                self._conn.query(f"USE {statement.database}", "TabSeparated")
                previous = self._set(statement.settings)
                try:
                    result = self._conn.query(
                        statement.sql, statement.output_format or "TabSeparated", params=statement.params
                    )
                finally:
                    self._set(previous)
            finally:
                if statement.insert_file is not None:
                    os.unlink(statement.insert_file)
        summary = {
            "read_rows": str(result.rows_read()),
            "read_bytes": str(result.bytes_read()),
            "written_rows": str(
                result.rows_written() if statement.insert_file is None else result.rows_read()
            ),
            "written_bytes": str(result.bytes_written()),
            "elapsed_ns": str(int(result.elapsed() * 1e9)),
        }
        return Reply(result.bytes() or b"", statement.output_format, summary)

    def _set(self, settings: dict[str, str]) -> dict[str, str]:
        """Apply `settings`; return their values before."""
        if not settings:
            return {}
        names = ", ".join(_quote(name) for name in settings)
        rows = self._conn.query(
            f"SELECT name, value FROM system.settings WHERE name IN ({names})", "TabSeparated"
        ).bytes()
        before = dict(line.split("\t", 1) for line in rows.decode().splitlines() if "\t" in line)
        for name, value in settings.items():
            self._conn.query(f"SET {name} = {_quote(value)}", "TabSeparated")
        return before


class ChdbHttpServer(ThreadingHTTPServer):
    """The HTTP interface over one `ChdbEngine`."""

    daemon_threads = True

    def __init__(self, port: int, engine: ChdbEngine) -> None:
        super().__init__(("127.0.0.1", port), ChdbHttpHandler)
        self.engine = engine


class ChdbHttpHandler(BaseHTTPRequestHandler):
    """One connection of the stand-in (keep-alive, as clickhouse-connect's pool expects)."""

    protocol_version = "HTTP/1.1"
    server: ChdbHttpServer

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read failures from the responses."""

    def do_GET(self) -> None:
        """`/ping`, or a statement in the URL."""
        self._handle()

    def do_POST(self) -> None:
        """A statement in the URL and/or body."""
        self._handle()

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        url = urlsplit(self.path)
        body = self._read_body()
        if url.path.rstrip("/") == "/ping":
            self._reply(200, b"Ok.\n", {"Content-Type": "text/plain; charset=UTF-8"})
            return
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        query_id = params.get("query_id") or str(uuid.uuid4())
        try:
            content = decompress_body(body, self.headers.get("Content-Encoding"))
            statement = parse_request(params, content, spool_dir=self.server.engine.spool_dir)
            reply = self.server.engine.run(statement)
        except Exception as exc:
            self._fail(exc, query_id)
            return
        headers = {
            "Content-Type": "application/octet-stream",
            "X-ClickHouse-Query-Id": query_id,
            "X-ClickHouse-Summary": json.dumps(reply.summary),
            "X-ClickHouse-Timezone": self.server.engine.timezone,
        }
        if reply.output_format is not None:
            headers["X-ClickHouse-Format"] = reply.output_format
        self._reply(200, reply.body, headers)

    def _fail(self, exc: Exception, query_id: str) -> None:
        message = str(exc)
        found = _ERROR_CODE.search(message)
        code = int(found.group(1)) if found else 1002  # UNKNOWN_EXCEPTION
        status = 404 if code in _NOT_FOUND_CODES else 400 if code in _BAD_REQUEST_CODES or not found else 500
        text = message if found else f"Code: {code}. DB::Exception: {message}"
        self._reply(
            status,
            (text.rstrip() + "\n").encode(),
            {
                "Content-Type": "text/plain; charset=UTF-8",
                "X-ClickHouse-Exception-Code": str(code),
                "X-ClickHouse-Query-Id": query_id,
            },
        )

    def _reply(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@contextmanager
def serve_chdb_over_http(data_path: Path, *, start_timeout: float = 60.0) -> Iterator[str]:
    """The stand-in in a process of its own over `data_path`; yields its `http://127.0.0.1:<port>` URL."""
    from tests.integration.server_support import free_port

    port = free_port()
    env = dict(os.environ) | {"PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "python")])}
    log_path = data_path.parent / f"{data_path.name}-http.log"
    with log_path.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.clickhouse_http_support", str(data_path), str(port)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=out,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            assert process.poll() is None, log_path.read_text(errors="replace")
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=2) as response:
                    if response.read() == b"Ok.\n":
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the ClickHouse stand-in did not start"
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


@dataclass
class ContractLog:
    """The entity log under test: its kind (`ENGINES`), a migrated store, and its DSN."""

    kind: str
    store: ClickHouseStore
    dsn: str

    def another_client(self) -> ClickHouseStore:
        """A store with a client of its own over HTTP (as each worker process ships); chDB in process has
        one engine per process, so there it is the same store."""
        if self.kind == "chdb":
            return self.store
        from tests.integration.entitylog_support import in_process_store

        return in_process_store(self.dsn)


@contextmanager
def contract_log(kind: str, data_path: Path) -> Iterator[ContractLog]:
    """A migrated entity log of `kind` over `data_path`, closed (and its server stopped) at the end."""
    from tests.integration.entitylog_support import in_process_store

    if kind == "chdb":
        store = in_process_store(f"chdb://{data_path}")
        store.migrate()
        try:
            yield ContractLog(kind, store, f"chdb://{data_path}")
        finally:
            store.close()
        return
    with serve_chdb_over_http(data_path) as url:
        store = in_process_store(url)
        store.migrate()
        try:
            yield ContractLog(kind, store, url)
        finally:
            store.close()


def main(argv: list[str]) -> None:
    """`python -m tests.integration.clickhouse_http_support <data path> <port>`: serve until terminated."""
    data_path, port = argv
    server = ChdbHttpServer(int(port), ChdbEngine(data_path))
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()


if __name__ == "__main__":
    main(sys.argv[1:])
