"""Standard Webhooks signatures (symmetric, `v1`): secrets serialised as `whsec_<base64>`, and the
`webhook-id`, `webhook-timestamp`, `webhook-signature` headers over `{id}.{timestamp}.{body}`."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

from crm_bulk.errors import ValidationError

SECRET_PREFIX = "whsec_"
# The specification asks for 24 to 64 random bytes; 32 matches the HMAC-SHA256 block of security.
SECRET_BYTES = 32


def new_secret() -> str:
    """A fresh signing secret in the specification's serialisation."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key a `whsec_` secret serialises; `ValidationError` for anything else."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValidationError("a webhook secret starts with whsec_", field="secret")
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except binascii.Error:
        raise ValidationError("a webhook secret is base64 after whsec_", field="secret") from None
    if not key:
        raise ValidationError("a webhook secret may not be empty", field="secret")
    return key


def signature(secret: str, *, msg_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64 HMAC-SHA256 of "{msg_id}.{timestamp}.{body}">`."""
    if "." in msg_id:
        # A dot in the id would let one signed content pass for another (the specification forbids it).
        raise ValueError("a webhook id may not contain '.'")
    content = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(secret: str, *, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three headers of one attempt (the timestamp is the attempt's, not the event's)."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secret, msg_id=msg_id, timestamp=timestamp, body=body),
    }
