"""Standard Webhooks signing: the specification's published test vector, and signatures our sender makes
checked by the specification's own reference library (`standardwebhooks`), not by our code."""

from __future__ import annotations

import base64
import time
import uuid

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from crm_bulk.errors import PermanentError, ValidationError
from crm_bulk.webhooks.sealing import SecretBox
from crm_bulk.webhooks.signing import SECRET_BYTES, new_secret, secret_key, signature, signed_headers

# The reference library's test vector (standard-webhooks, libraries/python/tests/test_webhooks.py).
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_the_published_test_vector() -> None:
    got = signature(VECTOR_SECRET, msg_id=VECTOR_ID, timestamp=VECTOR_TIMESTAMP, body=VECTOR_BODY)
    assert got == VECTOR_SIGNATURE


def test_a_new_secret_is_whsec_base64_of_random_bytes() -> None:
    first, second = new_secret(), new_secret()
    assert first.startswith("whsec_")
    assert len(base64.b64decode(first.removeprefix("whsec_"), validate=True)) == SECRET_BYTES
    assert first != second


def test_the_reference_library_verifies_what_we_sign() -> None:
    secret = new_secret()
    body = b'{"type":"job.completed","timestamp":"2026-12-01T09:00:00Z","data":{"id":"x","total":3}}'
    headers = signed_headers(secret, msg_id="msg_" + uuid.uuid4().hex, timestamp=int(time.time()), body=body)
    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert Webhook(secret).verify(body, headers)["data"]["total"] == 3


@pytest.mark.parametrize(
    "tamper",
    [
        lambda h, b: (h, b.replace(b"3", b"4")),
        lambda h, b: ({**h, "webhook-id": "msg_other"}, b),
        lambda h, b: ({**h, "webhook-timestamp": str(int(h["webhook-timestamp"]) + 1)}, b),
    ],
    ids=["body", "id", "timestamp"],
)
def test_the_reference_library_refuses_a_tampered_delivery(tamper: object) -> None:
    secret = new_secret()
    body = b'{"data":{"total":3}}'
    headers = signed_headers(secret, msg_id="msg_abc", timestamp=int(time.time()), body=body)
    changed_headers, changed_body = tamper(headers, body)  # type: ignore[operator]
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(changed_body, changed_headers)


def test_another_secret_does_not_verify() -> None:
    body = b"{}"
    headers = signed_headers(new_secret(), msg_id="msg_abc", timestamp=int(time.time()), body=body)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers)


def test_an_id_with_a_dot_is_refused() -> None:
    with pytest.raises(ValueError, match="may not contain"):
        signature(new_secret(), msg_id="msg.1", timestamp=1, body=b"{}")


@pytest.mark.parametrize("bad", ["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_not base64!", "whsec_"])
def test_malformed_secrets_are_refused(bad: str) -> None:
    with pytest.raises(ValidationError):
        secret_key(bad)


def test_a_sealed_secret_opens_only_for_its_endpoint_and_key() -> None:
    box = SecretBox(b"k" * 40)
    endpoint = uuid.uuid4()
    secret = new_secret()
    sealed = box.seal(secret, endpoint_id=endpoint)
    assert secret.encode() not in sealed
    assert box.open(sealed, endpoint_id=endpoint) == secret
    with pytest.raises(PermanentError, match="does not open"):
        box.open(sealed, endpoint_id=uuid.uuid4())
    with pytest.raises(PermanentError, match="does not open"):
        SecretBox(b"j" * 40).open(sealed, endpoint_id=endpoint)
    assert "k" * 40 not in repr(box)
