"""Access tokens: JWTs signed with HS256 (shared secret) by default, or an asymmetric key pair.

The signing and verification keys are parsed once, when the codec is built, and reused for every token.
Only the configured algorithm is accepted, which rules out algorithm-confusion attacks (`none`, HS256 signed
with a public key).
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any

import jwt
import msgspec
from cryptography.hazmat.primitives import serialization

from crm_bulk.errors import AuthenticationError, ConfigError
from crm_bulk.settings import Settings, env_name

ISSUER = "crm-bulk"
AUDIENCE = "crm-bulk-api"
# Clock skew tolerated between the processes that issue and check tokens.
LEEWAY_SECONDS = 30


class Claims(msgspec.Struct, frozen=True):
    """What a valid token says: who (user) acting in which account."""

    user_id: int
    account_id: int
    expires_at: int


class IssuedToken(msgspec.Struct, frozen=True):
    """A freshly signed token and its lifetime in seconds."""

    access_token: str
    expires_in: int


class TokenCodec:
    """Signs and verifies access tokens with keys loaded once from settings."""

    def __init__(self, *, algorithm: str, signing_key: Any, verifying_key: Any, ttl_seconds: int) -> None:
        self.algorithm = algorithm
        self.ttl_seconds = ttl_seconds
        self._signing_key = signing_key
        self._verifying_key = verifying_key
        self._jwt = jwt.PyJWT(options={"require": ["exp", "iat", "sub", "iss", "aud"]})

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenCodec:
        """Build the codec from `jwt_*` settings; key files are read and parsed here, once."""
        algorithm = settings.jwt_algorithm
        if settings.jwt_symmetric:
            secret = settings.resolved_jwt_secret().encode()
            return cls(
                algorithm=algorithm,
                signing_key=secret,
                verifying_key=secret,
                ttl_seconds=settings.jwt_ttl_seconds,
            )
        private_key = None
        if settings.jwt_private_key_file:
            private_key = _load_private_key(Path(settings.jwt_private_key_file))
        if settings.jwt_public_key_file:
            public_key = _load_public_key(Path(settings.jwt_public_key_file))
        elif private_key is not None:
            public_key = private_key.public_key()
        else:
            raise ConfigError(env_name("jwt_public_key_file"), f"a key is required with {algorithm}")
        return cls(
            algorithm=algorithm,
            signing_key=private_key,
            verifying_key=public_key,
            ttl_seconds=settings.jwt_ttl_seconds,
        )

    @property
    def can_sign(self) -> bool:
        """False for a verify-only process (public key alone)."""
        return self._signing_key is not None

    def issue(self, *, user_id: int, account_id: int, now: float | None = None) -> IssuedToken:
        """A signed token for `user_id` acting in `account_id`."""
        if self._signing_key is None:
            raise ConfigError(env_name("jwt_private_key_file"), "this process has no key to sign tokens with")
        issued_at = int(time.time() if now is None else now)
        payload = {
            "sub": str(user_id),
            "acc": account_id,
            "iss": ISSUER,
            "aud": AUDIENCE,
            "iat": issued_at,
            "nbf": issued_at,
            "exp": issued_at + self.ttl_seconds,
            "jti": secrets.token_urlsafe(12),
        }
        token = self._jwt.encode(payload, self._signing_key, algorithm=self.algorithm)
        return IssuedToken(access_token=token, expires_in=self.ttl_seconds)

    def verify(self, token: str) -> Claims:
        """The claims of a valid token; anything else raises AuthenticationError with a short reason."""
        try:
            payload = self._jwt.decode(
                token,
                self._verifying_key,
                algorithms=[self.algorithm],
                audience=AUDIENCE,
                issuer=ISSUER,
                leeway=LEEWAY_SECONDS,
            )
        except jwt.ExpiredSignatureError:
            raise AuthenticationError("the access token has expired") from None
        except jwt.PyJWTError:
            raise AuthenticationError("the access token is not valid") from None
        subject, account = payload.get("sub"), payload.get("acc")
        if not isinstance(subject, str) or not subject.isdigit() or type(account) is not int:
            raise AuthenticationError("the access token is not valid")
        return Claims(user_id=int(subject), account_id=account, expires_at=int(payload["exp"]))


def _load_private_key(path: Path) -> Any:
    try:
        return serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(env_name("jwt_private_key_file"), f"cannot load {path}: {exc}") from None


def _load_public_key(path: Path) -> Any:
    try:
        return serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(env_name("jwt_public_key_file"), f"cannot load {path}: {exc}") from None
