"""The `crm-bulk` command line: `up`, `api`, `worker`, `scheduler`, `migrate` (`serve`), `accounts`, `bench`.

Importing the command modules registers their commands on `main`.
"""

from crm_bulk.cli import accounts, bench, serve
from crm_bulk.cli.base import EXIT_BACKEND, EXIT_CONFIG, EXIT_FAILURE, main
from crm_bulk.cli.serve import uvicorn_config

__all__ = [
    "EXIT_BACKEND",
    "EXIT_CONFIG",
    "EXIT_FAILURE",
    "accounts",
    "bench",
    "main",
    "serve",
    "uvicorn_config",
]
