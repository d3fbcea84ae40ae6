"""The one exception tree of crm-bulk.

Everything the platform raises on purpose derives from `CrmBulkError`. The split that matters to the
worker is retryable (a transient backend problem: try the chunk again) versus permanent (the same input
will fail the same way: record it and move on).
"""

from __future__ import annotations


class CrmBulkError(Exception):
    """Base of every error crm-bulk raises deliberately."""

    def __reduce__(self) -> tuple[object, ...]:
        # Errors cross process boundaries (the chDB host answers the API process with them). The default
        # pickling calls cls(*args), which breaks on keyword-only or multi-part constructors; restoring the
        # args and attributes as they are keeps every subclass intact.
        return (_restore, (type(self), self.args, dict(self.__dict__)))


def _restore(cls: type[CrmBulkError], args: tuple[object, ...], state: dict[str, object]) -> CrmBulkError:
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


class ConfigError(CrmBulkError):
    """A setting is missing or malformed; `setting` names the environment variable."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(f"{setting}: {message}")
        self.setting = setting
        self.message = message


class BackendUnavailableError(CrmBulkError):
    """A backend (Postgres, Kafka, ClickHouse, Redis) could not be reached."""

    def __init__(self, backend: str, setting: str, message: str) -> None:
        super().__init__(f"{backend} unreachable ({setting}): {message}")
        self.backend = backend
        self.setting = setting


class AuthenticationError(CrmBulkError):
    """Credentials or a token that do not prove who the caller is (HTTP 401)."""


class RetryableError(CrmBulkError):
    """A transient failure: the same work may succeed if tried again."""


class PermanentError(CrmBulkError):
    """A failure that retrying cannot fix."""


class ValidationError(PermanentError):
    """Client input that breaks the contract; `field` and `code` say where and what."""

    def __init__(self, message: str, *, field: str | None = None, code: str = "invalid") -> None:
        super().__init__(message)
        self.field = field
        self.code = code


class PayloadTooLargeError(PermanentError):
    """A request body over a size bound (HTTP 413); `setting` names the variable that sets the bound."""

    def __init__(self, message: str, *, setting: str) -> None:
        super().__init__(message)
        self.setting = setting


class NotFoundError(PermanentError):
    """The entity does not exist in the caller's account (other accounts' ids included)."""


class ConflictError(PermanentError):
    """The request conflicts with the current state (a duplicate email, a terminal job)."""

    def __init__(self, message: str, *, existing_id: int | str | None = None) -> None:
        super().__init__(message)
        self.existing_id = existing_id
