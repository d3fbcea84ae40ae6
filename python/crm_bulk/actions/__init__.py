"""Bulk action requests: the validated specs and the contact filter language."""

from crm_bulk.actions.filters import compile_filter
from crm_bulk.actions.specs import (
    BulkActionRequest,
    Changes,
    ImportRecord,
    Target,
    decode_request,
    validate_request,
)

__all__ = [
    "BulkActionRequest",
    "Changes",
    "ImportRecord",
    "Target",
    "compile_filter",
    "decode_request",
    "validate_request",
]
