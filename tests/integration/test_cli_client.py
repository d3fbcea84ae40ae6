"""The `crm-bulk` client run as a person (or a script) runs it, against the whole platform (`crm-bulk up`):
login keeps its token owner-only, an import shows an upload and a processing bar and ends with the counts,
`--json` prints parseable JSON only, the exit code tells how the job ended, and every failure is one line."""

from __future__ import annotations

import json
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.integration.api_support import PASSWORD, unique_email
from tests.integration.client_support import Stack, platform, run_client
from tests.integration.pipeline_support import own_database

pytestmark = pytest.mark.postgres

ROWS = 1500


@pytest.fixture(scope="module")
def stack(pg_server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The platform on a database of this module's own (its API ships every outbox of its database)."""
    with own_database(pg_server_url) as url, platform(url, tmp_path_factory.mktemp("cli-stack")) as running:
        yield running


@pytest.fixture(scope="module")
def user(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """A registered admin, logged in through the client: (email, the config home holding the token)."""
    email = unique_email("cli")
    made = httpx.post(
        f"{stack.base}/auth/register", json={"email": email, "password": PASSWORD, "account_name": "Cli"}
    )
    assert made.status_code == 201, made.text
    home = tmp_path_factory.mktemp("cli-home")
    result = run_client(["login", "--email", email, "--password", PASSWORD], home=home, api=stack.base)
    assert result.returncode == 0, result.stderr
    assert f"as {email}" in result.stdout
    return email, home


def _csv(path: Path, rows: int, *, invalid: int = 0) -> Path:
    lines = ["email,first_name,company"]
    lines += [f"{uuid_prefix(path)}-{i}@example.com,User{i},Acme" for i in range(rows)]
    lines += [f"not-an-email-{i},Bad{i},Acme" for i in range(invalid)]
    path.write_text("\n".join(lines) + "\n")
    return path


def uuid_prefix(path: Path) -> str:
    return path.stem


def _json(stdout: str) -> Any:
    return json.loads(stdout)


def _one_line_error(result: Any, code: int, *needles: str) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("crm-bulk: error: ")
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return str(lines[0])


def test_login_keeps_the_token_owner_only(user: tuple[str, Path]) -> None:
    _, home = user
    path = home / "crm-bulk" / "credentials.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert _json(path.read_text())["access_token"]


def test_an_import_shows_both_bars_and_ends_with_the_counts(
    stack: Stack, user: tuple[str, Path], tmp_path: Path
) -> None:
    _, home = user
    source = _csv(tmp_path / "people-a.csv", ROWS, invalid=2)
    result = run_client(["import", str(source)], home=home, api=stack.base)
    assert result.returncode == 10, result.stderr  # completed_with_errors
    assert "upload" in result.stderr
    assert "kB" in result.stderr  # bytes sent
    assert "processing" in result.stderr
    assert f"{ROWS + 2}/{ROWS + 2}" in result.stderr  # entities done of the total
    summary = result.stdout.strip().splitlines()[-1]
    assert summary.startswith(f"completed_with_errors: {ROWS} succeeded, 2 failed, 0 skipped, 0 cancelled")
    assert f"of {ROWS + 2}" in summary


def test_json_output_parses_and_bars_stay_off(stack: Stack, user: tuple[str, Path], tmp_path: Path) -> None:
    _, home = user
    source = _csv(tmp_path / "people-b.csv", 300)
    result = run_client(["import", str(source), "--json"], home=home, api=stack.base)
    assert result.returncode == 0, result.stderr
    job = _json(result.stdout)
    assert (job["status"], job["total"], job["succeeded"]) == ("completed", 300, 300)
    assert "processing" not in result.stderr
    listed = run_client(["jobs", "--json", "--status", "completed"], home=home, api=stack.base)
    assert listed.returncode == 0, listed.stderr
    assert job["id"] in [j["id"] for j in _json(listed.stdout)]
    shown = run_client(["job", job["id"], "--json"], home=home, api=stack.base)
    assert _json(shown.stdout)["succeeded"] == 300


def test_update_tag_and_delete_over_a_filter_and_an_id_file(
    stack: Stack, user: tuple[str, Path], tmp_path: Path
) -> None:
    _, home = user
    source = _csv(tmp_path / "people-c.csv", 200)
    imported = _json(run_client(["import", str(source), "--json"], home=home, api=stack.base).stdout)
    assert imported["status"] == "completed"
    company = f"Co-{tmp_path.name[-8:]}"
    flt = json.dumps({"email": {"starts_with": "people-c-1"}})  # people-c-1, -10..-19, -100..-199: 111
    updated = run_client(
        ["update", "--set", f"company={company}", "--filter", flt, "--json"], home=home, api=stack.base
    )
    assert updated.returncode == 0, updated.stderr
    assert (_json(updated.stdout)["status"], _json(updated.stdout)["succeeded"]) == ("completed", 111)
    with psycopg.connect(stack.database_url) as conn:
        ids = [r[0] for r in conn.execute("SELECT id FROM contacts WHERE company = %s", [company])]
    assert len(ids) == 111
    id_file = tmp_path / "ids.txt"
    id_file.write_text("id\n" + "\n".join(map(str, ids[:10])) + "\n")
    tagged = run_client(
        ["tag", "add", "vip,cli", "--ids-from", str(id_file), "--json"], home=home, api=stack.base
    )
    assert tagged.returncode == 0, tagged.stderr
    assert _json(tagged.stdout)["succeeded"] == 10
    deleted = run_client(["delete", "--ids-from", str(id_file)], home=home, api=stack.base)
    assert deleted.returncode == 0, deleted.stderr
    assert deleted.stdout.strip().startswith("completed: 10 succeeded")


def _slow_account(stack: Stack, email: str) -> None:
    """The account's entities trickle (10 a second), so its jobs run long enough to be cancelled."""
    with psycopg.connect(stack.database_url) as conn:
        conn.execute(
            "UPDATE accounts SET entities_per_second = 10 WHERE id = "
            "(SELECT account_id FROM memberships m JOIN users u ON u.id = m.user_id WHERE u.email = %s)",
            [email],
        )


def test_exit_codes_tell_cancelled_and_failed(stack: Stack, tmp_path: Path) -> None:
    email = unique_email("slow")
    made = httpx.post(
        f"{stack.base}/auth/register", json={"email": email, "password": PASSWORD, "account_name": "Slow"}
    )
    assert made.status_code == 201, made.text
    home = tmp_path / "home"
    assert (
        run_client(["login", "--email", email, "--password", PASSWORD], home=home, api=stack.base).returncode
        == 0
    )
    _slow_account(stack, email)
    source = _csv(tmp_path / "slow.csv", 2000)
    started = _json(
        run_client(["import", str(source), "--no-wait", "--json"], home=home, api=stack.base).stdout
    )
    cancelled = run_client(["cancel", started["id"], "--json"], home=home, api=stack.base)
    assert cancelled.returncode == 0, cancelled.stderr
    watched = run_client(["job", started["id"], "--watch"], home=home, api=stack.base)
    assert watched.returncode == 12, watched.stderr  # cancelled
    assert watched.stdout.strip().startswith("cancelled: ")
    again = run_client(["cancel", started["id"]], home=home, api=stack.base)
    _one_line_error(again, 1, "409")
    # A job the platform failed (set here as the finaliser would) exits 11 for whoever watches it.
    other = _json(
        run_client(["import", str(source), "--no-wait", "--json"], home=home, api=stack.base).stdout
    )
    run_client(["cancel", other["id"]], home=home, api=stack.base)
    with psycopg.connect(stack.database_url) as conn:
        conn.execute("UPDATE bulk_actions SET status = 'failed' WHERE id = %s", [other["id"]])
    failed = run_client(["job", other["id"], "--watch", "--json"], home=home, api=stack.base)
    assert failed.returncode == 11, failed.stderr
    assert _json(failed.stdout)["status"] == "failed"


def test_errors_lists_codes_and_streams_csv(stack: Stack, user: tuple[str, Path], tmp_path: Path) -> None:
    _, home = user
    source = _csv(tmp_path / "people-d.csv", 20, invalid=3)
    job = _json(run_client(["import", str(source), "--json"], home=home, api=stack.base).stdout)
    report = run_client(["errors", job["id"], "--json"], home=home, api=stack.base)
    assert _json(report.stdout)["summary"] == {"invalid_email": 3}
    shown = run_client(["errors", job["id"]], home=home, api=stack.base)
    assert shown.stdout.splitlines()[0].split() == ["3", "invalid_email"]
    as_csv = run_client(["errors", job["id"], "--csv"], home=home, api=stack.base)
    lines = as_csv.stdout.strip().splitlines()
    assert lines[0].startswith("entity_id,email,outcome,code,message")
    assert len(lines) == 4


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["job", "00000000-0000-0000-0000-000000000000"], 1, "404 Not Found: bulk action"),
        (["update", "--set", "company=X", "--filter", "{not json"], 2, "--filter: not valid JSON"),
        (["update", "--set", "company=X", "--filter", '{"nope": {"eq": 1}}'], 1, "422"),
        (["delete"], 2, "exactly one of --filter, --ids-from, --all"),
        (["import", "missing.csv"], 2, "does not exist"),
    ],
)
def test_mistakes_are_one_line(
    stack: Stack, user: tuple[str, Path], args: list[str], code: int, needle: str
) -> None:
    _, home = user
    result = run_client(args, home=home, api=stack.base)
    assert result.returncode == code, result.stderr
    assert needle in result.stderr
    assert "Traceback" not in result.stderr


def test_unreachable_api_and_missing_or_expired_token(
    stack: Stack, user: tuple[str, Path], tmp_path: Path
) -> None:
    _, home = user
    unreachable = run_client(["jobs"], home=home, api="http://127.0.0.1:1")
    _one_line_error(unreachable, 4, "stored token is for")
    unreachable = run_client(["jobs"], home=home, api="http://127.0.0.1:1", env={"CRM_BULK_TOKEN": "x"})
    _one_line_error(unreachable, 3, "cannot reach the API at http://127.0.0.1:1")
    _one_line_error(run_client(["jobs"], home=tmp_path, api=stack.base), 4, "not logged in")
    bad_token = run_client(["jobs"], home=tmp_path, api=stack.base, env={"CRM_BULK_TOKEN": "not-a-token"})
    _one_line_error(bad_token, 4, "401", "crm-bulk login")
    stored = json.loads((home / "crm-bulk" / "credentials.json").read_text())
    expired_home = tmp_path / "expired"
    (expired_home / "crm-bulk").mkdir(parents=True)
    (expired_home / "crm-bulk" / "credentials.json").write_text(
        json.dumps(stored | {"expires_at": time.time() - 1})
    )
    _one_line_error(run_client(["jobs"], home=expired_home, api=stack.base), 4, "expired")
    wrong = run_client(
        ["login", "--email", "nobody@example.com", "--password", "wrong"], home=tmp_path, api=stack.base
    )
    _one_line_error(wrong, 4, "login refused: 401")
