"""The client's pure parts: reading an event stream, turning typed options into request parts, the token
file's mode, and the one-line messages of problem answers."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import httpx
import pytest

from crm_bulk.cli.client import config
from crm_bulk.cli.client.exits import EXIT_NOT_LOGGED_IN, ClientError, exit_code_for
from crm_bulk.cli.client.http import problem_message
from crm_bulk.cli.client.sse import StreamEvent, parse_events
from crm_bulk.cli.client.targets import changes_of, read_ids, tags_of, target_of


def test_events_are_dispatched_at_blank_lines_and_ids_carry_over() -> None:
    lines = [
        "retry: 2000",
        "id: 1-running",
        "event: progress",
        'data: {"a":',
        "data: 1}",
        "",
        ": keep-alive",
        "",
        "event: end",
        "data: {}",
        "",
        "data: unterminated",
    ]
    assert list(parse_events(lines)) == [
        StreamEvent("progress", '{"a":\n1}', "1-running"),
        StreamEvent("comment", "keep-alive"),
        StreamEvent("end", "{}", "1-running"),
    ]


@pytest.mark.parametrize(
    ("status", "code"),
    [("completed", 0), ("completed_with_errors", 10), ("failed", 11), ("cancelled", 12), ("running", 0)],
)
def test_exit_codes_by_end_state(status: str, code: int) -> None:
    assert exit_code_for(status) == code


def test_targets_changes_and_tags(tmp_path: Path) -> None:
    ids = tmp_path / "ids.txt"
    ids.write_text("id\n3\n\n# a comment\n5,extra\n")
    assert read_ids(str(ids)) == [3, 5]
    assert target_of(None, str(ids), False) == {"ids": [3, 5]}
    assert target_of('{"company": {"eq": "Acme"}}', None, False) == {"filter": {"company": {"eq": "Acme"}}}
    assert target_of(None, None, True) == {"all": True}
    assert changes_of(("company=Acme Inc", "custom_fields.plan=gold"), ("phone",)) == {
        "set": {"company": "Acme Inc"},
        "custom_fields": {"plan": "gold"},
        "unset": ["phone"],
    }
    assert tags_of(("vip,beta", " x ")) == ["vip", "beta", "x"]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: target_of(None, None, False), "exactly one of"),
        (lambda: target_of("[1]", None, False), "expected a JSON object"),
        (lambda: target_of("{bad", None, False), "not valid JSON"),
        (lambda: changes_of(("no-equals",), ()), "expected field=value"),
        (lambda: tags_of((",",)), "at least one tag"),
        (lambda: read_ids("/nonexistent/ids.txt"), "cannot read"),
    ],
)
def test_usage_mistakes_say_what_is_wrong(call: object, message: str) -> None:
    with pytest.raises(ClientError, match=message) as raised:
        call()  # type: ignore[operator]
    assert raised.value.exit_code == 2


def test_the_token_file_is_owner_only_and_names_its_api(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.delenv(config.TOKEN_VARIABLE, raising=False)
    path = config.save_credentials(config.Credentials("http://api:8000", "a@example.com", "tok", 4e9))
    assert path == tmp_path / "crm-bulk" / "credentials.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert config.access_token("http://api:8000") == "tok"
    with pytest.raises(ClientError, match="stored token is for http://api:8000") as raised:
        config.access_token("http://other:8000")
    assert raised.value.exit_code == EXIT_NOT_LOGGED_IN
    config.save_credentials(config.Credentials("http://api:8000", "a@example.com", "tok", 1.0))
    with pytest.raises(ClientError, match="expired"):
        config.access_token("http://api:8000")


def test_problem_answers_become_one_line() -> None:
    body = {
        "type": "urn:crm-bulk:problem:validation",
        "title": "Unprocessable Content",
        "status": 422,
        "detail": "invalid filter",
        "errors": [{"field": "filter.nope", "code": "unknown_field", "message": "unknown field"}],
    }
    response = httpx.Response(422, content=json.dumps(body), headers={"content-type": "application/json"})
    assert (
        problem_message(response) == "422 Unprocessable Entity: invalid filter (filter.nope: unknown field)"
    )
    assert problem_message(httpx.Response(502, text="<html>bad\ngateway</html>")) == (
        "502 Bad Gateway: <html>bad gateway</html>"
    )
