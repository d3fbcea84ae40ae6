"""Access tokens (HS256 and key pairs, keys parsed once), password hashing, role ranks."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from crm_bulk.auth import passwords
from crm_bulk.auth.roles import role_allows
from crm_bulk.auth.tokens import TokenCodec
from crm_bulk.errors import AuthenticationError, ConfigError
from crm_bulk.settings import Settings

SECRET = "a shared secret of at least thirty-two characters"


def _write_keys(tmp_path: Path, key: object) -> tuple[str, str]:
    private = key.private_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "private.pem").write_bytes(private)
    (tmp_path / "public.pem").write_bytes(public)
    return str(tmp_path / "private.pem"), str(tmp_path / "public.pem")


def test_hs256_round_trip_and_claims(tmp_path: Path) -> None:
    codec = TokenCodec.from_settings(Settings(jwt_secret=SECRET, data_dir=tmp_path, jwt_ttl_seconds=120))
    issued = codec.issue(user_id=7, account_id=3)
    assert issued.expires_in == 120
    claims = codec.verify(issued.access_token)
    assert (claims.user_id, claims.account_id) == (7, 3)
    header = jwt.get_unverified_header(issued.access_token)
    assert header["alg"] == "HS256"


def test_embedded_secret_is_generated_once(tmp_path: Path) -> None:
    first = TokenCodec.from_settings(Settings(data_dir=tmp_path))
    second = TokenCodec.from_settings(Settings(data_dir=tmp_path))
    assert second.verify(first.issue(user_id=1, account_id=1).access_token).user_id == 1
    assert (tmp_path / "jwt-secret").stat().st_mode & 0o077 == 0


@pytest.mark.parametrize(
    ("algorithm", "make_key"),
    [
        ("RS256", lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        ("ES256", lambda: ec.generate_private_key(ec.SECP256R1())),
        ("EdDSA", ed25519.Ed25519PrivateKey.generate),
    ],
)
def test_asymmetric_keys_sign_and_a_public_key_alone_verifies(
    tmp_path: Path, algorithm: str, make_key: object
) -> None:
    private, public = _write_keys(tmp_path, make_key())  # type: ignore[operator]
    signer = TokenCodec.from_settings(
        Settings(jwt_algorithm=algorithm, jwt_private_key_file=private, data_dir=tmp_path)
    )
    verifier = TokenCodec.from_settings(
        Settings(jwt_algorithm=algorithm, jwt_public_key_file=public, data_dir=tmp_path)
    )
    token = signer.issue(user_id=5, account_id=9).access_token
    assert verifier.verify(token).account_id == 9
    assert not verifier.can_sign
    with pytest.raises(ConfigError):
        verifier.issue(user_id=1, account_id=1)


def test_algorithm_confusion_is_refused(tmp_path: Path) -> None:
    private, public = _write_keys(tmp_path, rsa.generate_private_key(public_exponent=65537, key_size=2048))
    verifier = TokenCodec.from_settings(
        Settings(jwt_algorithm="RS256", jwt_public_key_file=public, data_dir=tmp_path)
    )
    now = int(time.time())
    claims = {"sub": "1", "acc": 1, "iss": "crm-bulk", "aud": "crm-bulk-api", "iat": now, "exp": now + 60}
    forged = jwt.encode(claims, SECRET, algorithm="HS256")
    unsigned = jwt.encode(claims, "", algorithm="none")
    for token in (forged, unsigned):
        with pytest.raises(AuthenticationError):
            verifier.verify(token)
    assert Path(private).exists()


@pytest.mark.parametrize(
    "changes",
    [
        {"exp": -120},
        {"aud": "someone-else"},
        {"iss": "someone-else"},
        {"sub": "not-a-number"},
        {"acc": "3"},
        {"sub": None},
    ],
)
def test_tokens_with_wrong_claims_are_refused(tmp_path: Path, changes: dict[str, object]) -> None:
    codec = TokenCodec.from_settings(Settings(jwt_secret=SECRET, data_dir=tmp_path))
    now = int(time.time())
    claims: dict[str, object] = {
        "sub": "1",
        "acc": 3,
        "iss": "crm-bulk",
        "aud": "crm-bulk-api",
        "iat": now,
        "exp": now + 600,
    }
    for name, value in changes.items():
        if value is None:
            claims.pop(name)
        elif name == "exp":
            claims[name] = now + int(value)  # type: ignore[call-overload]
        else:
            claims[name] = value
    with pytest.raises(AuthenticationError):
        codec.verify(jwt.encode(claims, SECRET, algorithm="HS256"))


def test_an_expired_token_says_so(tmp_path: Path) -> None:
    codec = TokenCodec.from_settings(Settings(jwt_secret=SECRET, data_dir=tmp_path, jwt_ttl_seconds=1))
    token = codec.issue(user_id=1, account_id=1, now=time.time() - 120).access_token
    with pytest.raises(AuthenticationError, match="expired"):
        codec.verify(token)


@pytest.mark.parametrize(
    ("changes", "variable"),
    [
        ({"jwt_algorithm": "none"}, "CRM_BULK_JWT_ALGORITHM"),
        ({"jwt_algorithm": "RS256"}, "CRM_BULK_JWT_PRIVATE_KEY_FILE"),
        ({"database_url": "postgresql://h/db"}, "CRM_BULK_JWT_SECRET"),
    ],
)
def test_settings_refuse_unusable_jwt_configuration(
    tmp_path: Path, changes: dict[str, Any], variable: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        replace(Settings(data_dir=tmp_path), **changes).validate()
    assert caught.value.setting == variable


def test_an_unreadable_key_file_names_its_setting(tmp_path: Path) -> None:
    (tmp_path / "bad.pem").write_text("not a key")
    settings = Settings(
        jwt_algorithm="ES256", jwt_private_key_file=str(tmp_path / "bad.pem"), data_dir=tmp_path
    )
    with pytest.raises(ConfigError) as caught:
        TokenCodec.from_settings(settings)
    assert caught.value.setting == "CRM_BULK_JWT_PRIVATE_KEY_FILE"


def test_passwords_hash_with_argon2id_and_verify() -> None:
    encoded = passwords.hash_password("correct horse battery staple")
    assert encoded.startswith("$argon2id$")
    assert passwords.verify_password(encoded, "correct horse battery staple")
    assert not passwords.verify_password(encoded, "Correct horse battery staple")
    assert not passwords.verify_password("not a hash", "anything")
    assert not passwords.needs_rehash(encoded)
    assert passwords.needs_rehash("$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA")


@pytest.mark.parametrize(
    ("role", "required", "allowed"),
    [
        ("viewer", "viewer", True),
        ("viewer", "editor", False),
        ("editor", "editor", True),
        ("editor", "admin", False),
        ("admin", "editor", True),
        ("owner", "viewer", False),
    ],
)
def test_role_ranks(role: str, required: str, allowed: bool) -> None:
    assert role_allows(role, required) is allowed  # type: ignore[arg-type]
