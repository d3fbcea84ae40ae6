"""The embedded PostgreSQL lets nobody in without its password; old trusting data directories switch over."""

from __future__ import annotations

import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from crm_bulk.deployment import embedded_server, running_database
from crm_bulk.env_values import redact
from crm_bulk.local_postgres import HBA_CONF, NO_PASSFILE, SUPERUSER, LocalPostgres, _server_user, bin_dir
from crm_bulk.settings import Settings
from tests.integration.server_support import free_port


@pytest.fixture
def server_parent() -> Iterator[Path]:
    """A folder for one server of the test's own, world-traversable: under root the server runs as a system
    user, which pytest's 0700 temp folders would lock out."""
    parent = Path(tempfile.mkdtemp(prefix="crm-bulk-pg-auth-"))
    parent.chmod(0o755)
    try:
        yield parent
    finally:
        for data_dir in parent.iterdir():
            if (data_dir / "PG_VERSION").exists():
                LocalPostgres(data_dir, port=0).stop()  # stopping goes by the data directory alone
        shutil.rmtree(parent, ignore_errors=True)


def _connect_without_password(server: LocalPostgres, host: str = "127.0.0.1") -> None:
    # An explicit empty password and no password file: nothing from the environment fills one in.
    with psycopg.connect(
        host=host,
        port=server.port,
        user=SUPERUSER,
        dbname="crm_bulk",
        password="",
        passfile=NO_PASSFILE,
        connect_timeout=5,
    ):
        pass


def _assert_password_required(server: LocalPostgres) -> None:
    with pytest.raises(psycopg.OperationalError):
        _connect_without_password(server)
    with pytest.raises(psycopg.OperationalError):
        _connect_without_password(server, host=str(server.data_dir))  # the server's Unix socket
    wrong = server.dsn.replace(server.password(), "not-the-password")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(wrong, connect_timeout=5).close()
    with psycopg.connect(server.dsn, connect_timeout=5) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (SUPERUSER,)


def test_a_fresh_server_requires_its_password(server_parent: Path) -> None:
    server = LocalPostgres(server_parent / "postgres", free_port())
    assert server.start() is True
    secret = server_parent / "postgres-password"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert server.password() == secret.read_text()
    assert (server.data_dir / "pg_hba.conf").read_text() == HBA_CONF
    _assert_password_required(server)


def test_the_embedded_deployment_connects_with_the_password_kept_beside_the_jwt_secret(
    server_parent: Path,
) -> None:
    environ = {"CRM_BULK_DATA_DIR": str(server_parent), "CRM_BULK_EMBEDDED_POSTGRES_PORT": str(free_port())}
    settings = Settings.from_env(environ)
    with running_database(settings, start=True) as resolved:
        server = embedded_server(settings)
        assert resolved.postgres_dsn == server.dsn
        assert server.password() in resolved.postgres_dsn
        assert server.password() not in redact(resolved.postgres_dsn)
        with psycopg.connect(resolved.postgres_dsn) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == ("crm_bulk",)
        _assert_password_required(server)
        for name in ("jwt-secret", "postgres-password"):
            assert stat.S_IMODE((server_parent / name).stat().st_mode) == 0o600
    assert not server.is_running()


def _legacy_trusting_data_dir(data_dir: Path) -> None:
    """A data directory as earlier releases created it: `initdb --auth=trust`, no password."""
    user = _server_user()
    data_dir.mkdir(mode=0o700)
    if user is not None:
        shutil.chown(data_dir, user, user)
    initdb = [str(bin_dir() / "initdb"), "-D", str(data_dir), "-U", SUPERUSER, "--auth=trust"]
    initdb += ["--encoding=UTF8", "--no-locale"]
    subprocess.run(initdb, capture_output=True, user=user, group=user, check=True)


@pytest.mark.parametrize("running", [True, False], ids=["running", "stopped"])
def test_a_trusting_data_dir_is_switched_to_passwords_keeping_its_data(
    server_parent: Path, running: bool
) -> None:
    server = LocalPostgres(server_parent / "postgres", free_port())
    _legacy_trusting_data_dir(server.data_dir)
    server._pg_ctl_start(_server_user())  # as an earlier release ran it: trusting everyone
    _connect_without_password_to_postgres(server)
    with psycopg.connect(server.url("postgres"), autocommit=True) as conn:
        conn.execute("CREATE DATABASE crm_bulk")
    with psycopg.connect(server.dsn) as conn:
        conn.execute("CREATE TABLE kept AS SELECT 42 AS answer")
    if not running:
        server.stop()

    # Attaches to the running server, or starts the stopped one, and switches it over.
    assert server.start() is not running
    _assert_password_required(server)
    assert "trust" not in (server.data_dir / "pg_hba.conf").read_text()
    server.stop()
    assert server.start() is True
    _assert_password_required(server)
    with psycopg.connect(server.dsn) as conn:
        assert conn.execute("SELECT answer FROM kept").fetchone() == (42,)


def _connect_without_password_to_postgres(server: LocalPostgres) -> None:
    with psycopg.connect(
        host="127.0.0.1",
        port=server.port,
        user=SUPERUSER,
        dbname="postgres",
        password="",
        passfile=NO_PASSFILE,
    ):
        pass
