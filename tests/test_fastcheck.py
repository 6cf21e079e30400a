"""The fast record check never accepts what jsonschema rejects, and takes the common records."""

from __future__ import annotations

import datetime as dt
import io
import itertools
import json
from decimal import Decimal
from typing import Any

import pytest
from singer_sdk.exceptions import InvalidRecord
from singer_sdk.sinks.core import JSONSchemaValidator

from target_userpilot.emulator.validation import PayloadError, parse_ndjson, record_problem
from target_userpilot.singer.fastcheck import FastPathValidator, compile_check

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "email": {"type": ["string", "null"], "format": "email", "title": "Email"},
        "score": {"type": ["number", "null"]},
        "flag": {"type": "boolean"},
        "seen": {"anyOf": [{"type": "string", "format": "date-time"}, {"type": "null"}]},
        "tags": {"type": "array", "items": {"type": "string"}},
        "address": {
            "type": ["object", "null"],
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
        "free": {},
        "never": False,
    },
    "required": ["id"],
}

VALUES: list[object] = [
    None,
    True,
    False,
    0,
    7,
    -3,
    1.0,
    2.5,
    float("nan"),
    Decimal("1.5"),
    Decimal(2),
    "",
    "x",
    "2024-01-01T00:00:00Z",
    [],
    ["a"],
    [1],
    {},
    {"city": "Lyon"},
    {"city": 1},
    {"city": "Lyon", "zip": "1"},
    dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc),
]


def _jsonschema_accepts(schema: dict[str, Any], record: dict[str, Any]) -> bool:
    """The SDK's own validator (jsonschema, Draft 2020-12, formats not checked)."""
    try:
        JSONSchemaValidator(schema).validate(record)
    except InvalidRecord:
        return False
    return True


def _records() -> list[dict[str, Any]]:
    keys = [k for k in SCHEMA["properties"] if k != "id"]
    records: list[dict[str, Any]] = [{}, {"id": 1}, {"id": True}, {"id": 1.0}, {"extra": 1}]
    for key, value in itertools.product(keys, VALUES):
        records.append({"id": 1, key: value})
        records.append({key: value})
    return records


@pytest.mark.parametrize("record", _records(), ids=repr)
def test_accepts_only_what_jsonschema_accepts(record: dict[str, Any]) -> None:
    check = compile_check(SCHEMA)
    assert check is not None
    if check(record):
        assert _jsonschema_accepts(SCHEMA, record)


def test_accepts_the_common_record() -> None:
    check = compile_check(SCHEMA)
    assert check is not None
    record = {
        "id": 4,
        "email": "a@b.c",
        "score": Decimal("9.5"),
        "flag": False,
        "seen": "2024-01-01T00:00:00Z",
        "tags": ["a", "b"],
        "address": {"city": "Lyon"},
        "free": {"anything": [1]},
    }
    assert check(record)


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0}}},
        {"type": "object", "properties": {"n": {"enum": [1, 2]}}},
        {"type": "object", "properties": {"n": {"$ref": "#/$defs/x"}}, "$defs": {"x": {}}},
        {"type": "object", "patternProperties": {"^a": {"type": "string"}}},
        {"type": "object", "properties": {"n": {"type": "decimal"}}},
    ],
)
def test_other_keywords_leave_it_to_jsonschema(schema: dict[str, Any]) -> None:
    assert compile_check(schema) is None


def test_the_validator_raises_the_sdk_error_for_what_the_check_refuses() -> None:
    full = JSONSchemaValidator(SCHEMA)
    check = compile_check(SCHEMA)
    assert check is not None
    validator = FastPathValidator(full, check)
    validator.validate({"id": 1})
    validator.validate({"id": 1, "score": 2.5})  # refused by the check, accepted by jsonschema
    with pytest.raises(InvalidRecord) as caught:
        validator.validate({"id": "one"})
    with pytest.raises(InvalidRecord) as expected:
        full.validate({"id": "one"})
    assert caught.value.error_message == expected.value.error_message


@pytest.mark.parametrize(
    "obj",
    [
        {"user_id": "u", "metadata": {"a": 1, "b": "x", "c": None, "d": True, "e": 1.5}},
        {"user_id": "u", "company_id": "c"},
        {"user_id": " "},
        {"user_id": "u", "company_id": ""},
        {"user_id": "u", "company_id": 3},
        {"user_id": 1},
        {"user_id": "u", "metadata": {"a": [1]}},
        {"user_id": "u", "metadata": {"a": {}}},
        {"user_id": "u", "metadata": []},
        {"user_id": "u", "extra": 1},
        {"company_id": "c"},
    ],
)
def test_emulator_fast_path_agrees_with_record_problem(obj: dict[str, Any]) -> None:
    problem = record_problem(obj, "users")
    stream = io.BytesIO(json.dumps(obj).encode() + b"\n")
    if problem is None:
        assert parse_ndjson(stream, "users")[0].record == obj
    else:
        with pytest.raises(PayloadError) as caught:
            parse_ndjson(stream, "users")
        assert caught.value.reason == problem
