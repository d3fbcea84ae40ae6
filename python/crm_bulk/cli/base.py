"""What every command shares: the `main` group, settings loading, and one-line failures.

Every failure a user can cause (bad settings, unreachable backends) ends with one line naming the problem
and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from functools import wraps
from typing import ParamSpec, TypeVar

import click

from crm_bulk.errors import BackendUnavailableError, ConfigError, CrmBulkError
from crm_bulk.settings import Settings

P = ParamSpec("P")
R = TypeVar("R")

EXIT_CONFIG = 2
EXIT_BACKEND = 3
EXIT_FAILURE = 1


def _fail(message: str, code: int) -> None:
    click.echo(f"crm-bulk: error: {message}", err=True)
    sys.exit(code)


def friendly_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn the platform's own errors into one line and an exit code."""

    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except ConfigError as exc:
            _fail(str(exc), EXIT_CONFIG)
        except BackendUnavailableError as exc:
            _fail(str(exc), EXIT_BACKEND)
        except CrmBulkError as exc:
            _fail(str(exc), EXIT_FAILURE)
        except KeyboardInterrupt:
            sys.exit(130)
        raise AssertionError("unreachable")

    return wrapper


def load_settings() -> Settings:
    """Settings from the environment, with logging configured from them."""
    settings = Settings.from_env()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    return settings


def require_database(url: str) -> None:
    """Fail fast, in one line, when PostgreSQL does not answer."""
    from crm_bulk.health import probe_postgres

    status = probe_postgres(url, timeout=5)
    if not status.ok:
        raise BackendUnavailableError("postgres", "CRM_BULK_DATABASE_URL", status.error or "no answer")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """crm-bulk: bulk actions over CRM contacts."""
