"""The embedded ClickHouse engine (chDB) in a process of its own, beside the API process.

chDB loads the whole ClickHouse engine into the process that opens it — about 220 MB resident before it
stores a row, and one process per data path. Keeping it out of the API process leaves the API's memory to
requests (a 1M-row upload) and mirrors the scaled deployment, where ClickHouse is a server. So with a
`chdb://` store the API process spawns a `StoreHost`: the child owns the chDB store, applies its migrations,
ships the outboxes (the shipper) and runs, for the API, the few primitives of `ClickHouseStore` that touch the
engine. The API holds a `RemoteStore`: the same class with those primitives sent over a Unix socket
(`multiprocessing.connection`, Linux abstract address, HMAC-authenticated with a per-host random key), so
query building, validation and result shaping stay in one place and run in the API process.

A host that dies (killed, crashed) is started again on the next call that finds it gone; the calls in
between fail as `BackendUnavailableError`, which the API answers 503, and the readiness probe reports.
The host exits when its parent does.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import secrets
import signal
import threading
import time
from multiprocessing.connection import Client, Connection, Listener
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

import pyarrow as pa
from clickhouse_connect.driver.client import Client as ClickHouseClient

from crm_bulk.errors import BackendUnavailableError, CrmBulkError
from crm_bulk.settings import Settings
from crm_bulk.store.clickhouse import SETTING, ClickHouseStore

log = logging.getLogger(__name__)

START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 40.0
REVIVE_GRACE_SECONDS = 2.0
CALL_TIMEOUT_SECONDS = 120.0
# What the API may ask the host to run: the engine-facing primitives of ClickHouseStore, nothing else.
PRIMITIVES = frozenset({"check", "migrate", "_rows", "_arrow", "_insert_arrow"})
_PARENT_POLL_SECONDS = 1.0


class StoreHost:
    """The child process that owns a chDB store; started, revived and stopped by the API process."""

    def __init__(self, settings: Settings, database_url: str, *, ship: bool = True) -> None:
        self._settings = settings
        self._database_url = database_url
        self._ship = ship
        self.address = f"\0crm-bulk-chdb-{os.getpid()}-{secrets.token_hex(8)}"
        self.authkey = secrets.token_bytes(32)
        self._process: BaseProcess | None = None
        self._lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        """The host process's pid while it runs."""
        return self._process.pid if self._process is not None and self._process.is_alive() else None

    def start(self, *, wait: bool = True) -> None:
        """Spawn the host (no-op while it runs); with `wait`, return once it answers or raise."""
        with self._lock:
            if self._process is not None and self._process.is_alive():
                return
            context = multiprocessing.get_context("spawn")
            self._process = context.Process(
                target=host_main,
                args=(self._settings, self._database_url, self.address, self.authkey, self._ship),
                name="crm-bulk-chdb-host",
                daemon=False,
            )
            self._process.start()
            log.info("chdb host started (pid %s)", self._process.pid)
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = START_TIMEOUT_SECONDS) -> None:
        """Block until the host accepts a connection; `BackendUnavailableError` if it died or is too slow."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                Client(self.address, family="AF_UNIX", authkey=self.authkey).close()
                return
            except OSError as exc:
                process = self._process
                if process is None or not process.is_alive():
                    code = None if process is None else process.exitcode
                    raise BackendUnavailableError(
                        "clickhouse", SETTING, f"the chDB host process exited (code {code})"
                    ) from exc
                if time.monotonic() > deadline:
                    raise BackendUnavailableError(
                        "clickhouse", SETTING, f"the chDB host process did not answer in {timeout:.0f} s"
                    ) from exc
                time.sleep(0.05)

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
        if process is None or not process.is_alive():
            return
        process.terminate()
        process.join(STOP_TIMEOUT_SECONDS)
        if process.is_alive():
            log.error("chdb host did not stop in %.0f s; killing it", STOP_TIMEOUT_SECONDS)
            process.kill()
            process.join()


class RemoteStore(ClickHouseStore):
    """A `ClickHouseStore` whose engine-facing primitives run in a `StoreHost`."""

    def __init__(self, dsn: str, host: StoreHost) -> None:
        super().__init__(dsn)
        self._host = host
        self._idle: list[Connection] = []
        self._idle_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"RemoteStore(host pid {self._host.pid})"

    def check(self) -> None:
        self._call("check")

    def migrate(self) -> list[int]:
        applied: list[int] = self._call("migrate")
        return applied

    def _rows(self, name: str, params: dict[str, Any], *, group: str = "outcomes") -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = self._call("_rows", name, params, group=group)
        return rows

    def _arrow(self, name: str, params: dict[str, Any], *, group: str = "outcomes") -> pa.Table:
        table: pa.Table = self._call("_arrow", name, params, group=group)
        return table

    def _insert_arrow(self, table: str, rows: pa.Table) -> None:
        self._call("_insert_arrow", table, rows)

    def close(self) -> None:
        with self._idle_lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def client(self) -> ClickHouseClient:
        raise CrmBulkError("a RemoteStore runs no engine here; its calls go to the chDB host")

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        for attempt in (1, 2):
            try:
                return self._exchange(method, args, kwargs)
            except (OSError, EOFError) as exc:
                # The host died or was restarted under us: start it if it is gone and try once more.
                self.close()
                if attempt == 2 or not self._host.revive():
                    raise BackendUnavailableError("clickhouse", SETTING, f"chDB host: {exc}") from exc
        raise AssertionError("unreachable")

    def _exchange(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        with self._idle_lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = Client(self._host.address, family="AF_UNIX", authkey=self._host.authkey)
        try:
            conn.send((method, args, kwargs))
            # A stuck engine must not hold the API's request thread forever.
            if not conn.poll(CALL_TIMEOUT_SECONDS):
                conn.close()
                raise BackendUnavailableError(
                    "clickhouse",
                    SETTING,
                    f"the chDB host did not answer {method} in {CALL_TIMEOUT_SECONDS:.0f} s",
                )
            ok, value = conn.recv()
        except BaseException:
            conn.close()
            raise
        with self._idle_lock:
            self._idle.append(conn)
        if not ok:
            raise value
        return value


def host_main(settings: Settings, database_url: str, address: str, authkey: bytes, ship: bool) -> None:
    """Entry point of the host process (spawned): serve until SIGTERM/SIGINT or the parent's exit."""
    from crm_bulk.shipper import run_shipper

    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(processName)s %(name)s %(message)s",
    )
    stop = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        log.info("chdb host received %s, stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    parent = os.getppid()
    store = ClickHouseStore(settings.clickhouse_dsn)
    try:
        store.migrate()
    except CrmBulkError as exc:
        # Still serve: every call then reports the problem, and /readyz shows ClickHouse down.
        log.warning("clickhouse not ready at startup: %s", exc)
    listener = Listener(address, family="AF_UNIX", authkey=authkey)
    threads = [threading.Thread(target=_accept, args=(listener, store), name="chdb-host-accept", daemon=True)]
    if ship:
        threads.append(
            threading.Thread(
                target=run_shipper,
                args=(settings, stop),
                kwargs={"store": store, "database_url": database_url},
                name="crm-bulk-shipper",
            )
        )
    for thread in threads:
        thread.start()
    # Orphaned (the API process was killed): stop too, rather than keep the chDB path locked.
    while not stop.wait(_PARENT_POLL_SECONDS):
        if os.getppid() != parent:
            log.warning("chdb host's parent is gone; stopping")
            stop.set()
    listener.close()
    for thread in threads[1:]:
        thread.join()
    store.close()


def _accept(listener: Listener, store: ClickHouseStore) -> None:
    while True:
        try:
            conn = listener.accept()
        except OSError:
            return  # the listener was closed: the host is stopping
        except multiprocessing.AuthenticationError as exc:
            log.warning("chdb host refused a connection: %s", exc)
            continue
        threading.Thread(target=_serve, args=(conn, store), name="chdb-host-conn", daemon=True).start()


def _serve(conn: Connection, store: ClickHouseStore) -> None:
    with conn:
        while True:
            try:
                method, args, kwargs = conn.recv()
            except (EOFError, OSError):
                return
            if method not in PRIMITIVES:
                conn.send((False, CrmBulkError(f"the chDB host does not run {method!r}")))
                continue
            try:
                reply: tuple[bool, Any] = (True, getattr(store, method)(*args, **kwargs))
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
