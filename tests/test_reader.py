"""The Singer reader: which input it takes, and the one sentence it gives for input it cannot."""

from __future__ import annotations

import io
import json
from decimal import Decimal
from typing import Any

import pytest

from target_userpilot.singer.reader import InputError, LineReader

SCHEMA = '{"type": "SCHEMA", "stream": "users", "schema": {"properties": {}}, "key_properties": []}'


def read(data: bytes) -> list[dict[str, Any]]:
    """Every message the reader hands on, from `data` as a binary stdin would give it."""
    seen: list[dict[str, Any]] = []
    kinds = ("SCHEMA", "RECORD", "STATE", "ACTIVATE_VERSION", "BATCH")
    callbacks = dict.fromkeys(kinds, seen.append)
    LineReader().process_lines(io.TextIOWrapper(io.BytesIO(data)), callbacks)
    return seen


def test_a_bom_and_blank_lines_are_skipped_and_floats_are_decimals() -> None:
    data = b"\xef\xbb\xbf" + SCHEMA.encode() + b"\n\n  \t\n" + b'{"type": "STATE", "value": 0.1}\n'
    assert read(data)[1] == {"type": "STATE", "value": Decimal("0.1")}
    assert len(read(data)) == 2


@pytest.mark.parametrize(
    ("data", "error"),
    [
        pytest.param(
            SCHEMA.encode() + b'\n{"type": "STATE", "value": "\xff"}\n',
            "input line 2 is not UTF-8 text (invalid start byte at byte 29 of the line)",
            id="invalid-utf8",
        ),
        pytest.param(
            b"\n\n" + b"\xef\xbb\xbf" + SCHEMA.encode(),
            "input line 3 is not valid JSON (Unexpected UTF-8 BOM (decode using utf-8-sig) at "
            "character 1)",
            id="bom-after-the-start",
        ),
        pytest.param(
            b'{"value": 1}', "input line 1 lacks the required key(s) 'type'", id="no-type"
        ),
        pytest.param(
            b'{"type": ["RECORD"]}',
            "input line 1 has a message type that is not a string (['RECORD'])",
            id="type-not-a-string",
        ),
        pytest.param(b'"RECORD"', "input line 1 is a JSON string, not an object", id="a-string"),
        pytest.param(
            b'{"type": "SCHEMA", "stream": "s", "schema": {"properties": {}}, '
            b'"key_properties": "id"}',
            "input line 1 is a SCHEMA message whose 'key_properties' is not a list of names",
            id="key-properties-a-string",
        ),
        pytest.param(
            b'{"type": "RECORD", "stream": 5, "record": {}}',
            "input line 1 is a RECORD message whose 'stream' is not a string",
            id="stream-not-a-string",
        ),
        pytest.param(
            b'{"type": "BATCH", "stream": "s", "encoding": {}, "manifest": "f"}',
            "input line 1 is a BATCH message whose 'manifest' is not a list",
            id="manifest-not-a-list",
        ),
    ],
)
def test_input_it_cannot_read_is_one_sentence_naming_the_line(data: bytes, error: str) -> None:
    with pytest.raises(InputError) as caught:
        read(data)
    assert str(caught.value).startswith(error)


def test_an_error_inside_a_handler_is_not_taken_for_an_input_problem() -> None:
    def fails(message: dict[str, Any]) -> None:
        raise OSError(message["type"])

    reader = LineReader()
    with pytest.raises(OSError, match="SCHEMA"):
        reader.process_lines(io.StringIO(SCHEMA), {"SCHEMA": fails})


@pytest.mark.parametrize(
    "line",
    [
        '{"type": "RECORD", "stream": "s", "record": {"a": 1.50, "b": [1e400, -0.0], "c": null}}\n',
        '{"type": "RECORD", "stream": "s", "record": {"big": 123456789012345678901234567890}}',
        '{"type":"STATE","value":{"x":"\\u00e9\\ud83d\\ude00", "y": "\u00e9"}}',
        '{"type": "RECORD", "stream": "s", "record": {"a": NaN, "b": -Infinity}}\n',
        '{"type": "RECORD", "stream": "s", "record": {"lone": "\\ud800"}}\n',
        '  {"type": "STATE", "value": {"a": 1, "a": 2}}\r\n',
    ],
    ids=[
        "decimals",
        "a big integer",
        "escapes",
        "NaN and Infinity",
        "a lone surrogate",
        "blanks, a repeated key",
    ],
)
def test_lines_parse_exactly_as_the_sdk_parses_them(line: str) -> None:
    expected = json.loads(line, parse_float=Decimal)
    parsed = LineReader().deserialize_json(line)

    assert parsed == expected
    assert repr(parsed) == repr(expected)  # Decimal stays Decimal, exactly
