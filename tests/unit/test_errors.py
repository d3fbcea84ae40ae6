"""The exception tree crosses process boundaries intact (the chDB store host answers with these errors)."""

from __future__ import annotations

import pickle

from crm_bulk.errors import (
    BackendUnavailableError,
    ConfigError,
    ConflictError,
    NotFoundError,
    ValidationError,
)


def test_errors_keep_type_message_and_fields_through_pickling() -> None:
    config = pickle.loads(pickle.dumps(ConfigError("CRM_BULK_X", "bad")))
    assert (type(config), config.setting, config.message, str(config)) == (
        ConfigError,
        "CRM_BULK_X",
        "bad",
        "CRM_BULK_X: bad",
    )
    down = pickle.loads(pickle.dumps(BackendUnavailableError("clickhouse", "CRM_BULK_Y", "gone")))
    assert (type(down), down.backend, down.setting, str(down)) == (
        BackendUnavailableError,
        "clickhouse",
        "CRM_BULK_Y",
        "clickhouse unreachable (CRM_BULK_Y): gone",
    )
    invalid = pickle.loads(pickle.dumps(ValidationError("no", field="f", code="c")))
    assert (type(invalid), invalid.field, invalid.code, str(invalid)) == (ValidationError, "f", "c", "no")
    conflict = pickle.loads(pickle.dumps(ConflictError("taken", existing_id=7)))
    assert (type(conflict), conflict.existing_id, str(conflict)) == (ConflictError, 7, "taken")
    missing = pickle.loads(pickle.dumps(NotFoundError("nothing")))
    assert (type(missing), str(missing)) == (NotFoundError, "nothing")
