"""The embedded ClickHouse engine (chDB) in a process of its own, beside the API process.

chDB loads the whole ClickHouse engine into the process that opens it — about 220 MB resident before it
stores a row, and one process per data path. Keeping it out of the API process leaves the API's memory to
requests (a 1M-row upload) and mirrors the scaled deployment, where ClickHouse is a server. So with a
`chdb://` store the API process spawns a `StoreHost`: the child owns the chDB engine, applies its migrations,
ships the outboxes (the shipper) and runs, for the API, the `LogEngine` calls. The API's `ClickHouseStore`
holds a `HostEngine`, which sends those calls over a Unix socket (`multiprocessing.connection`, Linux abstract
address, HMAC-authenticated with a per-host random key), so query building, validation and result shaping
stay in one place and run in the API process, and the API process never opens a chDB engine.

A host that dies (killed, crashed) is started again on the next call that finds it gone; the calls in
between fail as `BackendUnavailableError`, which the API answers 503, and the readiness probe reports.
The host exits when its parent does.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import os
import secrets
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.connection import Client, Connection, Listener
from multiprocessing.connection import wait as wait_for_any
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

import pyarrow as pa

from crm_bulk import orphan
from crm_bulk.entitylog.clickhouse import SETTING, ClickHouseEngine, check_dsn
from crm_bulk.entitylog.shipper import run_shipper
from crm_bulk.entitylog.store import ClickHouseStore
from crm_bulk.errors import BackendUnavailableError, CrmBulkError
from crm_bulk.retry import RetryPolicy, on_types
from crm_bulk.settings import Settings

log = logging.getLogger(__name__)

START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 40.0
REVIVE_GRACE_SECONDS = 2.0
CALL_TIMEOUT_SECONDS = 120.0
# What the API may ask the host to run: the `LogEngine` calls that reach the engine, nothing else.
PRIMITIVES = frozenset({"check", "migrate", "rows", "arrow", "insert_arrow"})
# The one call answered by many messages: a streamed query's blocks, then `_STREAM_END`.
STREAM = "stream"
_STREAM_END = "end"
_PARENT_POLL_SECONDS = 1.0


class _HostRestartedError(Exception):
    """A call found the host gone and started it again; the call is worth one more try."""


# A call that finds the host gone starts it again (reviving waited already) and is tried once more on the
# new host; failing there too, it reports ClickHouse unavailable.
HOST_CALL_ATTEMPTS = 2
HOST_CALL_RETRY = RetryPolicy(
    attempts=HOST_CALL_ATTEMPTS, wait_seconds=0.0, retry_on=on_types(_HostRestartedError)
)


class StoreHost:
    """The child process that owns a chDB engine; started, revived and stopped by the API process."""

    def __init__(self, settings: Settings, *, ship: bool = True) -> None:
        self._settings = settings
        self._ship = ship
        self.address = f"\0crm-bulk-chdb-{os.getpid()}-{secrets.token_hex(8)}"
        self.authkey = secrets.token_bytes(32)
        self._process: BaseProcess | None = None
        self._ready: Connection | None = None
        self._lock = threading.Lock()
        self._ready_lock = threading.Lock()

    @property
    def dsn(self) -> str:
        """The chDB DSN the host serves."""
        return self._settings.clickhouse_dsn

    @property
    def pid(self) -> int | None:
        """The host process's pid while it runs."""
        return self._process.pid if self._process is not None and self._process.is_alive() else None

    def start(self, *, wait: bool = True) -> None:
        """Spawn the host (no-op while it runs); with `wait`, return once it listens or raise."""
        with self._lock:
            if self._process is not None and self._process.is_alive():
                return
            context = multiprocessing.get_context("spawn")
            ready, ready_in_child = context.Pipe(duplex=False)
            self._process = context.Process(
                target=host_main,
                args=(self._settings, self.address, self.authkey, self._ship),
                kwargs={"ready": ready_in_child},
                name="crm-bulk-chdb-host",
                daemon=False,
            )
            self._process.start()
            ready_in_child.close()  # the child holds its own end
            self._ready = ready
            log.info("chdb host started (pid %s)", self._process.pid)
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = START_TIMEOUT_SECONDS) -> None:
        """Block until the host listens; `BackendUnavailableError` if it exits first or is too slow.

        The host says when it listens and its exit wakes the wait at once, so nothing is polled; the lock
        keeps two callers from both reading the one message."""
        with self._ready_lock:
            process, ready = self._process, self._ready
            if process is not None and ready is not None:
                if ready in wait_for_any([ready, process.sentinel], timeout) and _heard(ready):
                    self._ready = None  # later callers find a listening host
                    return
            elif process is not None and process.is_alive():
                return
            if process is None or not process.is_alive():
                code = None if process is None else process.exitcode
                raise BackendUnavailableError(
                    "clickhouse", SETTING, f"the chDB host process exited (code {code})"
                )
            raise BackendUnavailableError(
                "clickhouse", SETTING, f"the chDB host process did not answer in {timeout:.0f} s"
            )

    def revive(self) -> bool:
        """Start the host again if it is gone; True when it had to be (its caller may retry).

        Called after a connection failed: a host that was killed may still be tearing down its threads for a
        moment, so it gets `REVIVE_GRACE_SECONDS` to finish dying before it counts as alive."""
        process = self._process
        if process is not None:
            process.join(REVIVE_GRACE_SECONDS)
        if process is not None and process.is_alive():
            return False
        log.warning("chdb host is gone (exit code %s); starting it again", process and process.exitcode)
        self.start(wait=True)
        return True

    def stop(self) -> None:
        """Ask the host to finish (its shipper stops between batches) and wait; kill it if it hangs."""
        with self._lock:
            process, self._process = self._process, None
            self._ready = None
        if process is None or not process.is_alive():
            return
        process.terminate()
        process.join(STOP_TIMEOUT_SECONDS)
        if process.is_alive():
            log.error("chdb host did not stop in %.0f s; killing it", STOP_TIMEOUT_SECONDS)
            process.kill()
            process.join()


class HostEngine:
    """A `LogEngine` whose calls run in a `StoreHost`; it opens no engine in this process."""

    def __init__(self, host: StoreHost) -> None:
        """An engine reaching `host`; checks the host's DSN (a bad one raises `BackendUnavailableError`)."""
        check_dsn(host.dsn)
        self._host = host
        self._idle: list[Connection] = []
        self._idle_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"HostEngine(host pid {self._host.pid})"

    def rows(self, group: str, name: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        """The named query's rows, run by the host."""
        rows: list[tuple[Any, ...]] = self._call("rows", group, name, params)
        return rows

    def arrow(self, group: str, name: str, params: dict[str, Any]) -> pa.Table:
        """The named query's Arrow table, run by the host."""
        table: pa.Table = self._call("arrow", group, name, params)
        return table

    @contextmanager
    def stream(
        self, group: str, name: str, params: dict[str, Any], schema: pa.Schema
    ) -> Iterator[Iterator[pa.Table]]:
        """The named query's blocks, streamed by the host: it sends each block as its engine reads it, and
        waits (the socket's buffer full) while this process has not taken the last one, so neither process
        holds the result whole. Leaving early closes the connection, which ends the host's query."""
        # A connection of its own, never an idle one that a restarted host may have left dead.
        conn = self._connect()
        conn.send((STREAM, (group, name, params, schema)))
        finished = False

        def blocks() -> Iterator[pa.Table]:
            nonlocal finished
            while True:  # one message per block, until the end marker or an error
                try:
                    ok, value = _receive(conn, STREAM)
                except (OSError, EOFError) as exc:
                    raise BackendUnavailableError("clickhouse", SETTING, f"chDB host: {exc}") from exc
                if not ok:
                    finished = True
                    raise value
                kind, table = value
                if kind == _STREAM_END:
                    finished = True
                    return
                yield table

        try:
            yield blocks()
        finally:
            if finished:
                self._give_back(conn)
            else:
                conn.close()

    def insert_arrow(self, table: str, rows: pa.Table) -> None:
        """One Arrow insert, run by the host."""
        self._call("insert_arrow", table, rows)

    def migrate(self) -> list[int]:
        """The host's migrations (it applies them when it starts, so usually none)."""
        applied: list[int] = self._call("migrate")
        return applied

    def check(self) -> None:
        """Raise unless the host's engine answers."""
        self._call("check")

    def close(self) -> None:
        """Close this process's connections to the host; the host keeps running."""
        with self._idle_lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def _call(self, method: str, *args: Any) -> Any:
        failures = itertools.count(1)

        def attempt() -> Any:
            try:
                return self._exchange(method, args)
            except (OSError, EOFError) as exc:
                # The host died or was restarted under us: start it if it is gone and try once more.
                self.close()
                if next(failures) < HOST_CALL_ATTEMPTS and self._host.revive():
                    raise _HostRestartedError(f"chDB host started again after: {exc}") from exc
                raise BackendUnavailableError("clickhouse", SETTING, f"chDB host: {exc}") from exc

        return HOST_CALL_RETRY.call(attempt, what=f"chDB host call {method}", logger=log)

    def _connect(self) -> Connection:
        """A new connection to the host, started again first if it is gone."""
        try:
            return Client(self._host.address, family="AF_UNIX", authkey=self._host.authkey)
        except (OSError, EOFError) as exc:
            if not self._host.revive():
                raise BackendUnavailableError("clickhouse", SETTING, f"chDB host: {exc}") from exc
        return Client(self._host.address, family="AF_UNIX", authkey=self._host.authkey)

    def _give_back(self, conn: Connection) -> None:
        with self._idle_lock:
            self._idle.append(conn)

    def _exchange(self, method: str, args: tuple[Any, ...]) -> Any:
        with self._idle_lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = Client(self._host.address, family="AF_UNIX", authkey=self._host.authkey)
        try:
            conn.send((method, args))
            ok, value = _receive(conn, method)
        except BaseException:
            conn.close()
            raise
        self._give_back(conn)
        if not ok:
            raise value
        return value


def _receive(conn: Connection, method: str) -> tuple[bool, Any]:
    """The host's next answer on `conn`; a stuck engine must not hold the API's request thread forever."""
    if not conn.poll(CALL_TIMEOUT_SECONDS):
        conn.close()
        raise BackendUnavailableError(
            "clickhouse", SETTING, f"the chDB host did not answer {method} in {CALL_TIMEOUT_SECONDS:.0f} s"
        )
    answer: tuple[bool, Any] = conn.recv()
    return answer


def _heard(ready: Connection) -> bool:
    """True when the host said it listens; False when it exited before it could."""
    try:
        return bool(ready.recv())
    except EOFError:
        return False


def host_main(
    settings: Settings,
    address: str,
    authkey: bytes,
    ship: bool,
    *,
    ready: Connection | None = None,
) -> None:
    """Entry point of the host process (spawned): serve until SIGTERM/SIGINT or the parent's exit; once it
    listens, say so on `ready`."""
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(processName)s %(name)s %(message)s",
    )
    stop = _stop_on_signals()
    # Orphaned (the API process was killed): stop too, rather than keep the chDB path locked. No death
    # signal: the host may be revived from a request thread, whose end must not stop it.
    orphan.watch_parent(stop.set, poll_seconds=_PARENT_POLL_SECONDS, stop=stop)
    engine = ClickHouseEngine(settings.clickhouse_dsn)
    try:
        engine.migrate()
    except CrmBulkError as exc:
        # Still serve: every call then reports the problem, and /readyz shows ClickHouse down.
        log.warning("clickhouse not ready at startup: %s", exc)
    listener = Listener(address, family="AF_UNIX", authkey=authkey)
    threading.Thread(target=_accept, args=(listener, engine), name="chdb-host-accept", daemon=True).start()
    shipper: threading.Thread | None = None
    if ship:
        shipper = threading.Thread(
            target=run_shipper,
            args=(settings, stop),
            kwargs={"store": ClickHouseStore(engine)},
            name="crm-bulk-shipper",
        )
        shipper.start()
    if ready is not None:
        ready.send(True)
        ready.close()
    stop.wait()
    log.info("chdb host stopping")
    listener.close()
    if shipper is not None:
        shipper.join()
    engine.close()


def _stop_on_signals() -> threading.Event:
    """An event SIGTERM and SIGINT set."""
    stop = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        log.info("chdb host received %s, stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    return stop


def _accept(listener: Listener, engine: ClickHouseEngine) -> None:
    while True:  # the accept loop of a server: one thread per connection, until the listener closes
        try:
            conn = listener.accept()
        except OSError:
            return  # the listener was closed: the host is stopping
        except multiprocessing.AuthenticationError as exc:
            log.warning("chdb host refused a connection: %s", exc)
            continue
        threading.Thread(target=_serve, args=(conn, engine), name="chdb-host-conn", daemon=True).start()


def _serve(conn: Connection, engine: ClickHouseEngine) -> None:
    with conn:
        while True:  # one request after another on this connection, until the caller closes it
            try:
                method, args = conn.recv()
            except (EOFError, OSError):
                return
            if method == STREAM:
                if not _send_stream(conn, engine, args):
                    return
                continue
            if method not in PRIMITIVES:
                conn.send((False, CrmBulkError(f"the chDB host does not run {method!r}")))
                continue
            try:
                reply: tuple[bool, Any] = (True, getattr(engine, method)(*args))
            except CrmBulkError as exc:
                reply = (False, exc)
            except Exception as exc:  # a bug in the host: report it to the caller rather than hang it
                log.exception("chdb host failed running %s", method)
                reply = (False, CrmBulkError(f"chDB host failed running {method}: {exc}"))
            try:
                conn.send(reply)
            except (OSError, EOFError):
                return  # the caller went away
            except Exception as exc:  # the reply would not pickle
                log.exception("chdb host could not send the result of %s", method)
                conn.send((False, CrmBulkError(f"chDB host could not send the result of {method}: {exc}")))


def _send_stream(conn: Connection, engine: ClickHouseEngine, args: tuple[Any, ...]) -> bool:
    """Run a streamed query and send its blocks, then the end marker (or the error that stopped it); False
    when the caller went away, which ends the query."""
    try:
        with engine.stream(*args) as blocks:
            for table in blocks:
                conn.send((True, ("block", table)))
    except (OSError, EOFError):
        return False  # the caller closed its end: it wants no more blocks
    except CrmBulkError as exc:
        return _answer(conn, (False, exc))
    except Exception as exc:  # a bug in the host: report it to the caller rather than hang it
        log.exception("chdb host failed streaming %s", args[1] if len(args) > 1 else "?")
        return _answer(conn, (False, CrmBulkError(f"chDB host failed streaming: {exc}")))
    return _answer(conn, (True, (_STREAM_END, None)))


def _answer(conn: Connection, reply: tuple[bool, Any]) -> bool:
    try:
        conn.send(reply)
    except (OSError, EOFError):
        return False
    return True
