"""Exit codes of the client commands: how a script tells a job's end, or why the command could not run.

0 is a job that `completed` (or a command with nothing to wait for that succeeded). Click's usage errors
exit 2 and the server commands keep 1-3 (`crm_bulk.cli.base`); these are the client's own.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_REFUSED = 1  # the API answered with a problem (4xx/5xx)
EXIT_UNREACHABLE = 3  # no answer from the API (same code as an unreachable backend for the server commands)
EXIT_NOT_LOGGED_IN = 4  # no token, or it expired
EXIT_COMPLETED_WITH_ERRORS = 10
EXIT_FAILED = 11
EXIT_CANCELLED = 12
EXIT_INTERRUPTED = 130

EXIT_BY_STATUS: dict[str, int] = {
    "completed": EXIT_OK,
    "completed_with_errors": EXIT_COMPLETED_WITH_ERRORS,
    "failed": EXIT_FAILED,
    "cancelled": EXIT_CANCELLED,
}


def exit_code_for(status: str) -> int:
    """The exit code of a command that waited for a job which ended in `status`."""
    return EXIT_BY_STATUS.get(status, EXIT_OK)


class ClientError(Exception):
    """A failure the user is told about in one line, with the exit code that says which kind it is."""

    def __init__(self, message: str, exit_code: int = EXIT_REFUSED) -> None:
        super().__init__(message)
        self.exit_code = exit_code
