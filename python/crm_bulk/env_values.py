"""Environment values as settings read them: typed parsing and URL checks, each failure a `ConfigError`
naming the variable (and never echoing credentials)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from crm_bulk.errors import ConfigError

_BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def parse_value(variable: str, type_name: str, raw: str) -> object:
    """`raw` as the field type named `type_name` (int, float, bool, Path, else text)."""
    try:
        if type_name == "int":
            return int(raw)
        if type_name == "float":
            return float(raw)
    except ValueError:
        raise ConfigError(variable, f"expected a number, got {raw!r}") from None
    if type_name == "bool":
        if raw.lower() not in _BOOLEANS:
            raise ConfigError(variable, f"expected true or false, got {raw!r}")
        return _BOOLEANS[raw.lower()]
    if type_name == "Path":
        return Path(raw)
    return raw


def check_url(variable: str, url: str, schemes: set[str]) -> None:
    """Raise unless `url` parses, has one of `schemes` and (but for chdb:// and unix://) a host."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ConfigError(variable, f"malformed URL: {exc}") from None
    if parts.scheme not in schemes:
        allowed = ", ".join(sorted(f"{s}://" for s in schemes))
        raise ConfigError(variable, f"unsupported scheme in {redact(url)!r}; expected {allowed}")
    if parts.scheme not in {"chdb", "unix"} and not parts.hostname:
        raise ConfigError(variable, f"no host in {redact(url)!r}")


def redact(url: str) -> str:
    """A URL without credentials, fit for messages, logs and health bodies."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return parts._replace(netloc=host).geturl()
