"""Endpoint signing secrets at rest: sealed with AES-256-GCM so the deliverer can sign with them while a
copy of the database alone reveals none.

The key comes from `CRM_BULK_WEBHOOK_SECRETS_KEY` or, when unset, from the JWT signing secret, each run
through HKDF-SHA256 with a label of its own (so the JWT key itself never encrypts anything). Each sealed
secret binds its endpoint id as associated data: a sealed value copied onto another endpoint's row does not
open. Changing the key (or, without one, the JWT secret) leaves existing endpoints unable to sign: their
deliveries fail with a clear reason until they are registered again.
"""

from __future__ import annotations

import os
from uuid import UUID

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from crm_bulk.errors import ConfigError, PermanentError
from crm_bulk.settings import Settings, env_name

_LABEL = b"crm-bulk webhook endpoint secrets v1"
_NONCE_BYTES = 12


class SecretBox:
    """Seals and opens endpoint secrets with one derived key."""

    def __init__(self, key_material: bytes) -> None:
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_LABEL).derive(key_material)
        self._aead = AESGCM(key)

    def __repr__(self) -> str:
        return "SecretBox(<key hidden>)"

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretBox:
        """The box of resolved `settings`; `ConfigError` when there is no key to derive from."""
        if settings.webhook_secrets_key:
            return cls(settings.webhook_secrets_key.encode())
        if settings.jwt_symmetric and settings.jwt_secret:
            return cls(settings.jwt_secret.encode())
        raise ConfigError(
            env_name("webhook_secrets_key"), "required for webhooks when tokens are signed with a key pair"
        )

    def seal(self, secret: str, *, endpoint_id: UUID) -> bytes:
        """nonce || ciphertext of `secret`, bound to `endpoint_id`."""
        nonce = os.urandom(_NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, secret.encode(), endpoint_id.bytes)

    def open(self, sealed: bytes, *, endpoint_id: UUID) -> str:
        """The secret sealed for `endpoint_id`; `PermanentError` when it was sealed with another key or
        for another endpoint."""
        nonce, ciphertext = sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:]
        try:
            return self._aead.decrypt(nonce, ciphertext, endpoint_id.bytes).decode()
        except InvalidTag:
            raise PermanentError(
                f"the signing secret of webhook endpoint {endpoint_id} does not open with this key "
                f"({env_name('webhook_secrets_key')} or the JWT secret changed?)"
            ) from None
