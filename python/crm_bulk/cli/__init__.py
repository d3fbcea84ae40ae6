"""The `crm-bulk` command line: `up`, `api`, `worker`, `scheduler`, `webhooks`, `migrate` (`serve`),
`accounts`, `bench`, and the API's client (`client`): `login`, `import`, `update`, `delete`, `tag`, `jobs`,
`job`, `errors`, `cancel`.

Importing the command modules registers their commands on `main`.
"""

from crm_bulk.cli import accounts, bench, serve
from crm_bulk.cli.base import EXIT_BACKEND, EXIT_CONFIG, EXIT_FAILURE, main
from crm_bulk.cli.client import actions, auth, imports, jobs
from crm_bulk.cli.serve import uvicorn_config

__all__ = [
    "EXIT_BACKEND",
    "EXIT_CONFIG",
    "EXIT_FAILURE",
    "accounts",
    "actions",
    "auth",
    "bench",
    "imports",
    "jobs",
    "main",
    "serve",
    "uvicorn_config",
]
