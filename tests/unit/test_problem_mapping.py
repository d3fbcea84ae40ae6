"""Errors raised inside a request become problem documents: a setting the deployment lacks is the
operator's to fix, answered 503 naming the setting, never a 500 nor a traceback."""

from __future__ import annotations

from litestar import Litestar, get
from litestar.testing import TestClient

from crm_bulk.api.problems import EXCEPTION_HANDLERS, PROBLEM_JSON
from crm_bulk.errors import ConfigError


@get("/needs-a-setting", sync_to_thread=False)
def needs_a_setting() -> None:
    raise ConfigError(
        "CRM_BULK_WEBHOOK_SECRETS_KEY", "required for webhooks when tokens are signed with a key pair"
    )


def test_a_missing_setting_answers_503_naming_it() -> None:
    app = Litestar([needs_a_setting], exception_handlers=EXCEPTION_HANDLERS)  # type: ignore[arg-type]
    with TestClient(app) as client:
        answer = client.get("/needs-a-setting")
    assert answer.status_code == 503
    assert answer.headers["content-type"].startswith(PROBLEM_JSON)
    body = answer.json()
    assert body["type"].endswith("not-configured")
    assert "CRM_BULK_WEBHOOK_SECRETS_KEY" in body["detail"]
    assert "Traceback" not in answer.text
