"""The bench's own isolated stack, so a benchmark never touches a user's data.

- PostgreSQL: its own `LocalPostgres` (the embedded server, same configuration) on a free loopback port in a
  temporary directory, or, with `database_url`, a database of its own created on that server and dropped.
- The real processes users run, as subprocesses configured only through `CRM_BULK_*` variables (every
  inherited `CRM_BULK_*` is dropped): `crm-bulk api` (which owns a chDB store in the temporary directory and
  ships the log), `crm-bulk worker --processes N` and `crm-bulk scheduler`.
- `kafka`: the queue is a broker given by address, with topics of a prefix of the bench's own (deleted at the
  end); `embedded`: the PostgreSQL-table queue.

`BenchStack` is a context manager: leaving it (normally, on an error or on Ctrl-C) stops every process it
started, deletes its topics and drops or stops its database, then removes the temporary directory.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Literal

import httpx
import psycopg
from psycopg import sql

from crm_bulk.auth.limits import MAX_ENTITIES_PER_SECOND, MAX_REQUESTS_PER_MINUTE
from crm_bulk.errors import BackendUnavailableError, CrmBulkError
from crm_bulk.local_postgres import LocalPostgres
from crm_bulk.settings import DEFAULT_CHUNK_SIZE
from crm_bulk.store.migrate import migrate

log = logging.getLogger(__name__)

Deployment = Literal["embedded", "kafka"]
READY_TIMEOUT_SECONDS = 90.0
STOP_TIMEOUT_SECONDS = 150.0
# The id-list scenario posts up to 1M ids (~8 MB of JSON); leave room above the 10 MiB default.
MAX_BODY_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, kw_only=True)
class StackOptions:
    """How the bench's stack is built."""

    processes: int = 2
    chunk_size: int = DEFAULT_CHUNK_SIZE
    partitions: int = 6
    deployment: Deployment = "embedded"
    kafka_bootstrap: str = "127.0.0.1:59092"
    database_url: str | None = None
    log_level: str = "WARNING"
    # Where to copy the services' and the server's logs when the stack stops (None: they are discarded).
    logs_dir: Path | None = None


def free_port() -> int:
    """A TCP port free on the loopback interface right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class _Service:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class BenchStack:
    """A running isolated stack; use as a context manager."""

    options: StackOptions
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="crm-bulk-bench-")))
    dsn: str = ""
    api_url: str = ""
    services: dict[str, _Service] = field(default_factory=dict)
    _server: LocalPostgres | None = None
    _database: str | None = None
    _topic_prefixes: list[str] = field(default_factory=list)
    _jwt_secret: str = field(default_factory=lambda: secrets.token_urlsafe(48))
    # Called with the DSN after migrations, before the services start (server settings for their sessions).
    before_services: Callable[[BenchStack], None] | None = None

    def __enter__(self) -> BenchStack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ---------------------------------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Database, migrations, `before_services`, then the three services; returns once the API answers."""
        self._start_database()
        migrate(self.dsn)
        if self.before_services is not None:
            self.before_services(self)
        self.start_services(self.options)

    def start_services(self, options: StackOptions) -> None:
        """Start api, worker pool and scheduler with `options` (the database stays as it is)."""
        self.options = options
        env = self._environment(options)
        self.api_url = f"http://127.0.0.1:{env['CRM_BULK_API_PORT']}"
        self._spawn("api", ["api"], env)
        self._spawn("worker", ["worker", "--processes", str(options.processes)], env)
        self._spawn("scheduler", ["scheduler"], env)
        self._wait_api()

    def stop_services(self) -> None:
        """SIGTERM every service (the worker pool drains), waiting for each; SIGKILL what outlives that."""
        for name in ("api", "scheduler", "worker"):
            service = self.services.get(name)
            if service is not None and service.process.poll() is None:
                service.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        for service in self.services.values():
            try:
                service.process.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in time; killing it", service.name)
            # Spawned children (worker processes) share the service's process group: none may outlive it.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(service.process.pid, signal.SIGKILL)
            service.process.wait(timeout=30)
        self.services.clear()
        self._delete_topics()

    def restart_services(self, options: StackOptions) -> None:
        """New settings (chunk size, processes): stop the services, start them again."""
        self.stop_services()
        self.start_services(options)

    def stop(self) -> None:
        """Stop everything this stack started and remove its directory."""
        try:
            self.stop_services()
        finally:
            try:
                self._stop_database()
            finally:
                self._keep_logs()
                shutil.rmtree(self.workdir, ignore_errors=True)

    def _keep_logs(self) -> None:
        target = self.options.logs_dir
        if target is None:
            return
        target.mkdir(parents=True, exist_ok=True)
        for path in [*self.workdir.glob("*.log"), self.workdir / "postgres" / "server.log"]:
            if path.exists():
                shutil.copyfile(path, target / path.name)

    def check_alive(self) -> None:
        """Raise when a service has exited (with the end of its log)."""
        for service in self.services.values():
            code = service.process.poll()
            if code is not None:
                raise CrmBulkError(f"`crm-bulk {service.name}` exited with code {code}:\n{service.tail()}")

    @property
    def server_log(self) -> Path | None:
        """The bench's own PostgreSQL server log (None with `database_url`)."""
        return None if self._server is None else self._server.data_dir / "server.log"

    @property
    def postgres_data_dir(self) -> Path | None:
        """The bench's own PostgreSQL data directory (None with `database_url`)."""
        return None if self._server is None else self._server.data_dir

    @property
    def owns_server(self) -> bool:
        """True when the bench started its own PostgreSQL (server settings are its to change)."""
        return self._server is not None

    def pid(self, name: str) -> int:
        """Process id of a running service (`api`, `worker`, `scheduler`)."""
        return self.services[name].process.pid

    # ----------------------------------------------------------------------------------------- database

    def _start_database(self) -> None:
        if self.options.database_url is None:
            server = LocalPostgres(self.workdir / "postgres", free_port())
            self._server = server
            server.start()
            self.dsn = server.dsn
            return
        name = f"crm_bulk_bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(self.options.database_url, autocommit=True, connect_timeout=10) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        self._database = name
        self.dsn = self.options.database_url.rsplit("/", 1)[0] + "/" + name

    def _stop_database(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
        if self._database is not None and self.options.database_url is not None:
            with psycopg.connect(self.options.database_url, autocommit=True, connect_timeout=10) as admin:
                admin.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self._database))
                )
            self._database = None

    # ----------------------------------------------------------------------------------------- services

    def _environment(self, options: StackOptions) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CRM_BULK_")}
        env.update(
            {
                "CRM_BULK_DATABASE_URL": self.dsn,
                "CRM_BULK_JWT_SECRET": self._jwt_secret,
                "CRM_BULK_JWT_TTL_SECONDS": str(24 * 3600),
                "CRM_BULK_DATA_DIR": str(self.workdir / "data"),
                "CRM_BULK_API_PORT": str(free_port()),
                "CRM_BULK_WORKER_METRICS_PORT": str(free_port()),
                "CRM_BULK_WORKER_PROCESSES": str(options.processes),
                "CRM_BULK_CHUNK_SIZE": str(options.chunk_size),
                "CRM_BULK_KAFKA_PARTITIONS": str(options.partitions),
                "CRM_BULK_MAX_BODY_BYTES": str(MAX_BODY_BYTES),
                "CRM_BULK_LOG_LEVEL": options.log_level,
                # The bench registers its accounts from one address and lifts their limits to the maxima.
                "CRM_BULK_REGISTRATION_BURST": "1000",
                "CRM_BULK_MAX_ACCOUNT_REQUESTS_PER_MINUTE": str(MAX_REQUESTS_PER_MINUTE),
                "CRM_BULK_MAX_ACCOUNT_ENTITIES_PER_SECOND": str(MAX_ENTITIES_PER_SECOND),
            }
        )
        if options.deployment == "kafka":
            prefix = f"crm-bulk-bench-{uuid.uuid4().hex[:10]}"
            self._topic_prefixes.append(prefix)
            env["CRM_BULK_QUEUE_URL"] = f"kafka://{options.kafka_bootstrap}"
            env["CRM_BULK_NAMESPACE"] = prefix
        return env

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> None:
        log_path = self.workdir / f"{name}.log"
        with log_path.open("ab") as out:
            # A session of its own: Ctrl-C in the terminal reaches the bench only, which then stops the
            # services in order (the worker pool drains) instead of every process dying at once.
            process = subprocess.Popen(
                [sys.executable, "-m", "crm_bulk.cli", *args],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,
            )
        self.services[name] = _Service(name, process, log_path)

    def _wait_api(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while True:
            self.check_alive()
            try:
                if httpx.get(f"{self.api_url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise BackendUnavailableError(
                    "api",
                    "CRM_BULK_API_PORT",
                    f"the bench's API did not become ready:\n{self.services['api'].tail()}",
                )
            time.sleep(0.25)

    def _delete_topics(self) -> None:
        if not self._topic_prefixes:
            return
        from crm_bulk.queue.kafka.admin import delete_topics

        for prefix in self._topic_prefixes:
            try:
                delete_topics(self.options.kafka_bootstrap, prefix=prefix)
            except Exception as exc:  # clean-up must go on to the database; say what was left behind
                log.warning("could not delete the bench's Kafka topics %s.*: %s", prefix, exc)
        self._topic_prefixes.clear()
