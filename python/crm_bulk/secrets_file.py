"""Secrets the embedded deployment generates for itself: one file each, created once, mode 0600.

The JWT signing secret and the embedded PostgreSQL's password live beside each other in the data directory.
Both follow one rule: generated on first use, never rewritten, and refused once group or others can read or
write the file, since then any local user could act as the platform.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import tempfile
from pathlib import Path

from crm_bulk.errors import ConfigError

# 48 random bytes, URL-safe: usable as is in a connection URL or a signing key.
SECRET_BYTES = 48


def read_or_create_secret(path: Path, *, setting: str) -> str:
    """The secret kept in `path`, generated there first if the file does not exist.

    `setting` names the environment variable an operator would look at (it heads the ConfigError raised
    when the file is readable or writable by group or others, or empty)."""
    if not path.exists():
        _create(path)
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        raise ConfigError(setting, f"{path} must not be readable by others (chmod 600)")
    secret = path.read_text().strip()
    if not secret:
        raise ConfigError(setting, f"{path} is empty: remove it to have a new secret generated")
    return secret


def _create(path: Path) -> None:
    """Publish a new secret at `path` atomically, unless another process just did."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written in full under a temporary name, then linked into place: a concurrent reader never sees a
    # half-written file, and link() fails rather than replaces when another process won the race.
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mkstemp creates it 0600
    try:
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(SECRET_BYTES))
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
    finally:
        os.unlink(temporary)
