"""SQL kept in named `.sql` files, loaded once, shipped inside the package (`crm_bulk/sql`).

A query file holds blocks introduced by `-- name: <identifier>`; each block is one statement.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from pathlib import Path

_NAME = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


def sql_root() -> Path:
    """The folder holding `postgres/` and `clickhouse/`."""
    return Path(str(resources.files("crm_bulk") / "sql"))


def parse_named_blocks(text: str) -> dict[str, str]:
    """Split a file into {name: statement}; text before the first name marker is ignored."""
    matches = list(_NAME.finditer(text))
    blocks: dict[str, str] = {}
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        name = match.group(1)
        if name in blocks:
            raise ValueError(f"duplicate query name {name!r}")
        blocks[name] = text[match.end() : end].strip().rstrip(";")
    return blocks


@cache
def queries(dialect: str, group: str) -> dict[str, str]:
    """All named statements of `sql/<dialect>/queries/<group>.sql`."""
    path = sql_root() / dialect / "queries" / f"{group}.sql"
    return parse_named_blocks(path.read_text())


def query(dialect: str, group: str, name: str) -> str:
    """One named statement; KeyError names what is missing."""
    try:
        return queries(dialect, group)[name]
    except KeyError:
        raise KeyError(f"no query {name!r} in sql/{dialect}/queries/{group}.sql") from None
