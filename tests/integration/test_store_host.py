"""The chDB store host, the process that owns the engine for the API process: calls, errors, lifecycle."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client
from pathlib import Path
from uuid import uuid4

import pytest

from crm_bulk.entitylog import host as store_host
from crm_bulk.entitylog.host import HostEngine, StoreHost
from crm_bulk.entitylog.store import ClickHouseStore
from crm_bulk.errors import BackendUnavailableError, CrmBulkError, ValidationError
from crm_bulk.settings import Settings
from tests.integration.entitylog_support import count_outcomes, plain

pytestmark = pytest.mark.clickhouse


@pytest.fixture
def host(tmp_path: Path) -> Iterator[tuple[StoreHost, ClickHouseStore]]:
    dsn = f"chdb://{tmp_path / 'chdb'}"
    running = StoreHost(Settings(clickhouse_url=dsn), ship=False)
    running.start()
    remote = ClickHouseStore(HostEngine(running))
    try:
        yield running, remote
    finally:
        remote.close()
        running.stop()


def _gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        # A zombie child still answers kill(0): it is gone once its state says so.
        status = Path(f"/proc/{pid}/status")
        if status.exists() and "\nState:\tZ" in status.read_text():
            return True
        time.sleep(0.1)
    return False


def test_the_host_migrates_and_answers(host: tuple[StoreHost, ClickHouseStore]) -> None:
    running, remote = host
    assert running.pid is not None and running.pid != os.getpid()
    remote.check()
    assert remote.migrate() == []  # the host applied them when it started
    assert count_outcomes(remote, uuid4(), 1) == 0
    assert plain(remote.stats(uuid4(), 1))["outcomes"]["succeeded"] == 0


def test_errors_arrive_with_their_type_and_fields(host: tuple[StoreHost, ClickHouseStore]) -> None:
    _, remote = host
    engine = remote.engine
    assert isinstance(engine, HostEngine)
    # Raised in the host by the query layer: a query name that does not exist is a bug, reported not hung.
    with pytest.raises(CrmBulkError, match="no_such_query"):
        engine.rows("outcomes", "no_such_query", {})
    # Only the engine primitives run in the host.
    with pytest.raises(CrmBulkError, match="does not run"):
        engine._call("close")
    # Validation happens on the API's side, before anything is sent.
    with pytest.raises(ValidationError) as caught:
        remote.logs(uuid4(), 1, limit=0)
    assert caught.value.field == "limit"


def test_a_killed_host_is_started_again_by_the_next_call(host: tuple[StoreHost, ClickHouseStore]) -> None:
    running, remote = host
    first = running.pid
    assert first is not None
    remote.check()  # a pooled connection to the first host
    os.kill(first, signal.SIGKILL)
    assert _gone(first, 10)
    remote.check()
    assert running.pid not in (None, first)
    assert count_outcomes(remote, uuid4(), 1) == 0


def test_a_host_that_stops_answering_fails_the_call_instead_of_hanging_it(
    host: tuple[StoreHost, ClickHouseStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    running, remote = host
    pid = running.pid
    assert pid is not None
    monkeypatch.setattr(store_host, "CALL_TIMEOUT_SECONDS", 1.0)
    remote.check()  # a pooled, authenticated connection: the handshake itself needs a live host
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(BackendUnavailableError, match="did not answer"):
            remote.check()
        assert time.monotonic() - started < 10
    finally:
        os.kill(pid, signal.SIGCONT)
    remote.check()
    assert running.pid == pid


def test_stop_ends_the_process_and_calls_then_fail_as_unavailable(tmp_path: Path) -> None:
    dsn = f"chdb://{tmp_path / 'chdb'}"
    running = StoreHost(Settings(clickhouse_url=dsn), ship=False)
    running.start()
    pid = running.pid
    assert pid is not None
    running.stop()
    assert _gone(pid, 5)
    assert running.pid is None
    # The API stops its host only at shutdown; a call after that starts one again rather than fail forever.
    remote = ClickHouseStore(HostEngine(running))
    remote.check()
    assert running.pid not in (None, pid)
    running.stop()


def test_a_host_that_cannot_start_reports_why(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the chDB directory should be")
    dsn = f"chdb://{blocker}/chdb"
    running = StoreHost(Settings(clickhouse_url=dsn), ship=False)
    try:
        running.start()
        remote = ClickHouseStore(HostEngine(running))
        with pytest.raises(BackendUnavailableError):
            remote.check()
    finally:
        running.stop()


def test_a_wrong_key_is_refused(host: tuple[StoreHost, ClickHouseStore]) -> None:
    running, _ = host
    with pytest.raises(AuthenticationError):
        Client(running.address, family="AF_UNIX", authkey=b"not the key")


def test_the_host_exits_when_its_parent_dies(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "from crm_bulk.settings import Settings\n"
        "from crm_bulk.entitylog.host import StoreHost\n"
        "if __name__ == '__main__':\n"
        f"    settings = Settings(clickhouse_url='chdb://{tmp_path / 'chdb'}')\n"
        "    host = StoreHost(settings, ship=False)\n"
        "    host.start()\n"
        "    print(host.pid, flush=True)\n"
        "    sys.stdin.read()\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as parent:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert not _gone(child, 0.5)
        parent.kill()
        parent.wait()
    assert _gone(child, 15), "the orphaned host kept running"
