"""Request bodies documented by msgspec's own JSON Schema, so the document states exactly what is checked.

Litestar builds a Struct's schema field by field and drops what it does not carry over: constraints on list
items or dict values (a tag's length, an id's minimum) and `additionalProperties: false` for Structs that
refuse unknown fields. msgspec derives its schema from the same type annotations it validates a body with,
so for request bodies (Structs that refuse unknown fields) the OpenAPI component is msgspec's schema, turned
into Litestar's spec objects; response Structs keep Litestar's own rendering.
"""

from __future__ import annotations

from dataclasses import fields
from typing import TYPE_CHECKING, Any

import msgspec
from litestar.openapi.spec import Reference, Schema
from litestar.plugins import OpenAPISchemaPlugin
from litestar.typing import FieldDefinition

if TYPE_CHECKING:
    from litestar._openapi.schema_generation import SchemaCreator

REF_PREFIX = "#/components/schemas/"
# JSON Schema keywords whose value is one schema, a list of schemas, or a mapping of name to schema.
_ONE_SCHEMA = frozenset({"items", "not", "propertyNames", "contains"})
_SCHEMA_LIST = frozenset({"anyOf", "oneOf", "allOf", "prefixItems"})
_SCHEMA_MAP = frozenset({"properties", "patternProperties"})
_SCHEMA_FIELDS = {f.name for f in fields(Schema)}


def is_request_struct(annotation: Any) -> bool:
    """A Struct that refuses unknown fields: the shape of every request body here."""
    return (
        isinstance(annotation, type)
        and issubclass(annotation, msgspec.Struct)
        and annotation.__struct_config__.forbid_unknown_fields
    )


class RequestBodySchemaPlugin(OpenAPISchemaPlugin):
    """Documents request Structs with the schema msgspec validates them against."""

    def is_plugin_supported_field(self, field_definition: FieldDefinition) -> bool:
        return not field_definition.is_union and is_request_struct(field_definition.type_)

    def to_openapi_schema(self, field_definition: FieldDefinition, schema_creator: SchemaCreator) -> Schema:
        struct = field_definition.type_
        (top,), components = msgspec.json.schema_components([struct], ref_template=REF_PREFIX + "{name}")
        name = str(top["$ref"]).removeprefix(REF_PREFIX)
        nested = _structs_by_name(struct)
        # Registered before its properties are converted, as Litestar does, so references resolve to it.
        schema = schema_creator.schema_registry.get_schema_for_field_definition(field_definition)
        converted = _to_schema(components[name], nested, schema_creator)
        assert isinstance(converted, Schema)
        for spec_field in fields(Schema):
            setattr(schema, spec_field.name, getattr(converted, spec_field.name))
        schema.title = name
        return schema


def _structs_by_name(struct: type[msgspec.Struct]) -> dict[str, type[msgspec.Struct]]:
    """Every Struct type reachable from `struct`'s fields, by the name msgspec's references give it."""
    found: dict[str, type[msgspec.Struct]] = {}
    pending: list[object] = [msgspec.inspect.type_info(struct)]
    while pending:
        info = pending.pop()
        if isinstance(info, msgspec.inspect.StructType):
            if found.setdefault(info.cls.__name__, info.cls) is not info.cls:
                raise ValueError(f"two request Structs are named {info.cls.__name__}")
            pending.extend(field.type for field in info.fields)
        elif isinstance(info, msgspec.inspect.Type):
            pending.extend(
                value
                for value in (getattr(info, name) for name in info.__struct_fields__)
                if isinstance(value, msgspec.inspect.Type | tuple)
            )
        elif isinstance(info, tuple):
            pending.extend(info)
    return found


def _to_schema(
    node: dict[str, Any], nested: dict[str, type[msgspec.Struct]], creator: SchemaCreator
) -> Schema | Reference:
    """One JSON Schema object as Litestar's `Schema`; a reference to another Struct goes through Litestar,
    which registers that Struct's own component (through this plugin when it is a request Struct)."""
    if "$ref" in node:
        name = str(node["$ref"]).removeprefix(REF_PREFIX)
        return creator.for_field_definition(FieldDefinition.from_annotation(nested[name]))
    aliases = Schema.field_aliases()
    values: dict[str, Any] = {}
    for key, value in node.items():
        name = aliases.get(key, key)
        if name not in _SCHEMA_FIELDS or (name != key and key not in aliases):
            raise ValueError(f"JSON Schema keyword {key!r} has no OpenAPI spec field")
        values[name] = _convert(key, value, nested, creator)
    return Schema(**values)


def _convert(key: str, value: Any, nested: dict[str, type[msgspec.Struct]], creator: SchemaCreator) -> Any:
    if key in _ONE_SCHEMA or (key == "additionalProperties" and isinstance(value, dict)):
        return _to_schema(value, nested, creator)
    if key in _SCHEMA_LIST:
        return [_to_schema(item, nested, creator) for item in value]
    if key in _SCHEMA_MAP:
        return {name: _to_schema(item, nested, creator) for name, item in value.items()}
    return value
