"""A fast first look at records before the SDK's JSON schema validator.

The SDK validates every record with `jsonschema` (Draft 2020-12), which costs far more than
everything else a record goes through. Most records are valid, and most stream schemas only use
`type`, `properties`, `required`, `additionalProperties`, `items` and `anyOf`. For such a schema
`compile_check` builds a plain-Python check that answers True only for records `jsonschema`
accepts too (it looks at exact Python types, a subset of what `jsonschema` allows). When it
answers False, or the schema uses any other keyword, the full validator decides and gives its
usual error message: the outcome is always the validator's own.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

from singer_sdk.sinks.core import BaseJSONSchemaValidator

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

# Keywords that never make a record invalid (format assertions are off in the SDK's validator).
_ANNOTATIONS = frozenset(
    {
        "title",
        "description",
        "default",
        "examples",
        "$comment",
        "$schema",
        "format",
        "readOnly",
        "writeOnly",
        "deprecated",
        "contentMediaType",
        "contentEncoding",
    }
)
_SUPPORTED = _ANNOTATIONS | {
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "anyOf",
}
# Exact Python types a JSON type name surely admits (jsonschema admits more: subclasses,
# integral floats as integers); a value of any other type goes to the full validator.
_TYPES: dict[str, tuple[type, ...]] = {
    "null": (type(None),),
    "boolean": (bool,),
    "integer": (int,),
    "number": (int, float, Decimal),
    "string": (str,),
    "object": (dict,),
    "array": (list,),
}


class _UnsupportedError(Exception):
    """The schema uses something the fast check does not cover."""


def _never(_: object) -> bool:
    return False


def _always(_: object) -> bool:
    return True


def _allowed_types(schema: Mapping[str, Any]) -> frozenset[type] | None:
    """Python types the schema's `type` admits; None when it has no `type`."""
    if "type" not in schema:
        return None
    names = schema["type"]
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, list) or not all(isinstance(n, str) and n in _TYPES for n in names):
        raise _UnsupportedError
    return frozenset(t for name in names for t in _TYPES[name])


def _simple_types(schema: object) -> frozenset[type] | None:
    """For a schema that only constrains the type (plus annotations), its types; else None."""
    if not isinstance(schema, dict) or "type" not in schema:
        return None
    if any(key not in _ANNOTATIONS and key != "type" for key in schema):
        return None
    return _allowed_types(schema)


def _compile(schema: object) -> Callable[[object], bool]:  # noqa: C901 - one branch per keyword
    if schema is True:
        return _always
    if schema is False:
        return _never
    if not isinstance(schema, dict) or any(key not in _SUPPORTED for key in schema):
        raise _UnsupportedError
    types = _allowed_types(schema)
    any_of = schema.get("anyOf")
    alternatives: list[Callable[[object], bool]] | None = None
    if any_of is not None:
        if not isinstance(any_of, list) or not any_of:
            raise _UnsupportedError
        alternatives = [_compile(sub) for sub in any_of]
    check_object = _compile_object(schema)
    items = schema.get("items")
    check_items = _compile(items) if items is not None else None

    def check(value: object) -> bool:
        if types is not None and type(value) not in types:
            return False
        kind = type(value)
        if kind is dict:
            if check_object is not None and not check_object(value):  # type: ignore[arg-type]
                return False
        elif kind is list:
            if check_items is not None and not all(map(check_items, value)):  # type: ignore[call-overload]
                return False
        elif isinstance(value, (dict, list)):
            return False  # a subclass: leave it to jsonschema
        if alternatives is not None:
            return any(alternative(value) for alternative in alternatives)
        return True

    return check


def _compile_object(schema: Mapping[str, Any]) -> Callable[[dict[str, Any]], bool] | None:
    """The check of `properties`/`required`/`additionalProperties`; None when there are none."""
    properties = schema.get("properties", {})
    required = schema.get("required", [])
    additional = schema.get("additionalProperties", True)
    if not isinstance(properties, dict) or not isinstance(required, list):
        raise _UnsupportedError
    if not all(isinstance(key, str) for key in required):
        raise _UnsupportedError
    if not properties and not required and additional is True:
        return None
    simple, nested = _compile_properties(properties)
    other = _compile(additional)
    needed = frozenset(required)

    def check(record: dict[str, Any]) -> bool:
        for key, value in record.items():
            types = simple.get(key)
            if types is not None:
                if type(value) not in types:
                    return False
                continue
            sub = nested.get(key)
            if sub is None:
                sub = other
            if not sub(value):
                return False
        return needed <= record.keys()

    return check


def _compile_properties(
    properties: Mapping[str, Any],
) -> tuple[dict[str, frozenset[type]], dict[str, Callable[[object], bool]]]:
    """Properties that only constrain the type (as type sets), and the others (as checks)."""
    simple: dict[str, frozenset[type]] = {}
    nested: dict[str, Callable[[object], bool]] = {}
    for key, sub in properties.items():
        types = _simple_types(sub)
        if types is not None:
            simple[key] = types
        else:
            nested[key] = _compile(sub)
    return simple, nested


def compile_check(schema: object) -> Callable[[object], bool] | None:
    """A check that is True only for instances valid against `schema`; None if unsupported."""
    try:
        return _compile(schema)
    except (_UnsupportedError, RecursionError):
        return None


class FastPathValidator(BaseJSONSchemaValidator):
    """The SDK's validator, skipped for records the fast check accepts."""

    def __init__(self, full: BaseJSONSchemaValidator, check: Callable[[object], bool]) -> None:
        """`full` decides (and words the error) whenever `check` does not accept a record."""
        super().__init__(full.schema)
        self.full = full
        self.check = check

    def validate(self, record: dict[str, Any]) -> None:
        """Raise the SDK's `InvalidRecord` for an invalid record, as the full validator does."""
        if not self.check(record):
            self.full.validate(record)
