"""The client's own configuration: which API to talk to, and the token `crm-bulk login` stored.

The token file lives in the user's config folder (`$XDG_CONFIG_HOME/crm-bulk/credentials.json`, else
`~/.config/crm-bulk/`), readable by its owner only (mode 0600). The API's URL comes from `--api`, else
`CRM_BULK_API_URL`, else the one the token was issued by, else http://127.0.0.1:8000. `CRM_BULK_TOKEN`
overrides the stored token (for scripts and CI). None of this is a server setting.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from crm_bulk.cli.client.exits import EXIT_NOT_LOGGED_IN, ClientError

DEFAULT_API_URL = "http://127.0.0.1:8000"
API_URL_VARIABLE = "CRM_BULK_API_URL"
TOKEN_VARIABLE = "CRM_BULK_TOKEN"


def config_dir() -> Path:
    """`$XDG_CONFIG_HOME/crm-bulk`, or `~/.config/crm-bulk`."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "crm-bulk"


def credentials_path() -> Path:
    """Where `crm-bulk login` keeps the token."""
    return config_dir() / "credentials.json"


@dataclass(frozen=True)
class Credentials:
    """A stored access token: for which API and user, and until when (seconds since the epoch)."""

    api_url: str
    email: str
    access_token: str
    expires_at: float

    @property
    def expired(self) -> bool:
        """Whether the token is past its expiry (the API would answer 401)."""
        return time.time() >= self.expires_at


def save_credentials(credentials: Credentials) -> Path:
    """Write the token file, owner-only from its first byte (never world-readable, not even briefly)."""
    path = credentials_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(asdict(credentials), out)
    os.chmod(tmp, 0o600)  # a pre-existing file keeps its mode through O_CREAT
    tmp.replace(path)
    return path


def load_credentials() -> Credentials | None:
    """The stored token, or None when there is none (or the file is not one `login` wrote)."""
    path = credentials_path()
    try:
        raw = json.loads(path.read_text())
        return Credentials(
            api_url=str(raw["api_url"]),
            email=str(raw["email"]),
            access_token=str(raw["access_token"]),
            expires_at=float(raw["expires_at"]),
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ClientError(
            f"cannot read {path} ({exc}); run `crm-bulk login` again", EXIT_NOT_LOGGED_IN
        ) from None


def forget_credentials() -> bool:
    """Remove the token file; False when there was none."""
    try:
        credentials_path().unlink()
    except FileNotFoundError:
        return False
    return True


def api_url(flag: str | None, stored: Credentials | None = None) -> str:
    """The API to talk to: `--api`, `CRM_BULK_API_URL`, the stored token's API, the default."""
    url = flag or os.environ.get(API_URL_VARIABLE) or (stored.api_url if stored else None) or DEFAULT_API_URL
    if not url.startswith(("http://", "https://")):
        raise ClientError(f"the API URL must start with http:// or https://, got {url!r}", 2)
    return url.rstrip("/")


def access_token(url: str) -> str:
    """The bearer token for `url`: `CRM_BULK_TOKEN`, else the stored one if it was issued by that API."""
    from_env = os.environ.get(TOKEN_VARIABLE)
    if from_env:
        return from_env
    stored = load_credentials()
    if stored is None:
        raise ClientError("not logged in: run `crm-bulk login`", EXIT_NOT_LOGGED_IN)
    if stored.api_url != url:
        raise ClientError(
            f"the stored token is for {stored.api_url}, not {url}: run `crm-bulk login --api {url}`",
            EXIT_NOT_LOGGED_IN,
        )
    if stored.expired:
        raise ClientError("the token has expired: run `crm-bulk login`", EXIT_NOT_LOGGED_IN)
    return stored.access_token
