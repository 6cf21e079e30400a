"""Singer input as the SDK reads it, with every problem in it as one sentence naming the line.

The SDK's reader (`SimpleSingerReader`) runs the loop; this subclass only numbers the lines
and turns what the SDK raises about a line (bad JSON, a RECORD before its SCHEMA, an unknown
message type, a message of the wrong shape, an unreadable BATCH file) into an `InputError`.
A UTF-8 byte order mark at the start of the input and blank lines are skipped: both are
common in files written by other tools and carry no message.

Lines are parsed with msgspec first (numbers with a fraction as `Decimal`, as the SDK does),
about twice as fast as `json.loads`; a line msgspec refuses (NaN, Infinity, a lone surrogate
escape, malformed JSON) takes the SDK's own parse, which accepts it or names the problem.
"""

from __future__ import annotations

import json
import sys
from decimal import Decimal
from typing import IO, TYPE_CHECKING, Any

import msgspec
from singer_sdk.exceptions import InvalidJSONSchema, RecordsWithoutSchemaException
from singer_sdk.io_base import SingerMessageType, SingerReader
from singer_sdk.singerlib.json import deserialize_json

from target_userpilot.errors import UserFacingError
from target_userpilot.singer.batch_messages import BatchMessageError

if TYPE_CHECKING:
    from collections import Counter
    from collections.abc import Callable, Iterable, Iterator

BOM = "\ufeff"
_TYPES = ", ".join(kind.value for kind in SingerMessageType)
# The parts of a message the SDK uses without checking their type.
_SHAPES: dict[str, dict[str, type]] = {
    "RECORD": {"stream": str, "record": dict},
    "SCHEMA": {"stream": str, "schema": dict},
    "BATCH": {"stream": str, "encoding": dict, "manifest": list},
}
_NOUNS: dict[type, str] = {str: "a string", dict: "an object", list: "a list"}
_FAST = msgspec.json.Decoder(float_hook=Decimal)


class InputError(UserFacingError):
    """A line of input that is not a Singer message this target can act on."""

    def __init__(self, line: int, problem: str) -> None:
        """`problem` continues the sentence "input line N ..."."""
        super().__init__(f"input line {line:,} {problem}")
        self.line = line


class RecordBeforeSchemaError(InputError, RecordsWithoutSchemaException):
    """A RECORD before its stream's SCHEMA: still the exception the SDK documents for it."""


class _LineProblemError(Exception):
    """What is wrong with the current line; the reader adds the line number."""

    def __init__(self, problem: str, error: type[InputError] = InputError) -> None:
        super().__init__(problem)
        self.error = error


class LineReader(SingerReader):
    """The SDK's reader, numbering lines and naming the line of any input problem."""

    def __init__(self) -> None:
        """No line read yet."""
        super().__init__()
        self.line_number = 0

    def process_lines(
        self, file_input: IO[str] | None, callbacks: dict[str, Callable[[dict[str, Any]], None]]
    ) -> Counter[str]:
        """The SDK's loop over numbered lines; raises InputError for a line it cannot act on."""
        checked = {
            kind: self._checked(str(SingerMessageType(kind).value), callback)
            for kind, callback in callbacks.items()
        }
        lines = self._numbered(file_input if file_input is not None else self.default_input)
        try:
            return super().process_lines(lines, checked)  # type: ignore[arg-type]
        except _LineProblemError as exc:
            raise exc.error(self.line_number, str(exc)) from exc

    def _numbered(self, source: Iterable[str]) -> Iterator[str]:
        # A real file is read as bytes and decoded line by line, so a bad byte is reported
        # on its own line rather than on the first line of the chunk around it.
        lines: Iterator[str | bytes] = iter(getattr(source, "buffer", source))
        self.line_number = 1
        while True:
            try:
                line = next(lines)
                text = line.decode() if isinstance(line, bytes) else line
            except StopIteration:
                return
            except UnicodeDecodeError as exc:
                msg = f"is not UTF-8 text ({exc.reason} at byte {exc.start + 1:,} of the line)"
                raise _LineProblemError(msg) from exc
            if self.line_number == 1 and text.startswith(BOM):
                text = text[1:]
            if text and not text.isspace():
                yield text
            self.line_number += 1

    def deserialize_json(self, line: str) -> dict[str, Any]:
        """One JSON object, floats as Decimal (the SDK's parse, without its traceback)."""
        try:
            fast = _FAST.decode(line)
        except (msgspec.DecodeError, RecursionError):
            pass
        else:
            if isinstance(fast, dict):
                return fast
        try:
            parsed = deserialize_json(line)
        except json.JSONDecodeError as exc:
            msg = f"is not valid JSON ({exc.msg} at character {exc.pos + 1:,})"
            raise _LineProblemError(msg) from exc
        except RecursionError as exc:
            msg = "is nested too deeply to read (objects or arrays about 1,000 levels deep)"
            raise _LineProblemError(msg) from exc
        except ValueError as exc:  # Python's limit on the digits of an integer
            msg = (
                f"holds an integer of more than {sys.get_int_max_str_digits():,} digits, which "
                "Python does not read"
            )
            raise _LineProblemError(msg) from exc
        if not isinstance(parsed, dict):
            msg = f"is a JSON {_json_type(parsed)}, not an object as every Singer message is"
            raise _LineProblemError(msg)
        return parsed

    @staticmethod
    def assert_line_requires(line_dict: dict[str, Any], requires: set[str]) -> None:
        """The SDK's check of required keys, saying which without quoting the line."""
        for key in requires:  # once a line: no set, nor a list, built while nothing is missing
            if key not in line_dict:
                missing = sorted(name for name in requires if name not in line_dict)
                msg = f"lacks the required key(s) {', '.join(map(repr, missing))}"
                raise _LineProblemError(msg)
        if "type" in requires and not isinstance(line_dict["type"], str):
            msg = f"has a message type that is not a string ({line_dict['type']!r})"
            raise _LineProblemError(msg)

    def _process_unknown_message(self, message_dict: dict[str, Any]) -> None:
        msg = f"has the unknown message type {message_dict['type']!r} (Singer's are {_TYPES})"
        raise _LineProblemError(msg)

    def _checked(
        self, kind: str, callback: Callable[[dict[str, Any]], None]
    ) -> Callable[[dict[str, Any]], None]:
        """`callback`, after a check of the message's shape, naming what the SDK raises."""

        def checked(message: dict[str, Any]) -> None:
            problem = _shape_problem(kind, message)
            if problem is not None:
                raise _LineProblemError(problem)
            try:
                callback(message)
            except InvalidJSONSchema as exc:
                first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                msg = f"is a SCHEMA message whose JSON schema is invalid ({first})"
                raise _LineProblemError(msg) from exc
            except RecordsWithoutSchemaException as exc:
                msg = f"is a RECORD of stream {message['stream']!r} before any SCHEMA for it"
                raise _LineProblemError(msg, RecordBeforeSchemaError) from exc
            except BatchMessageError as exc:
                raise _LineProblemError(str(exc)) from exc
            except _LineProblemError as exc:
                if kind != "BATCH":
                    raise
                msg = f"is a BATCH message whose file has a line that {exc}"
                raise _LineProblemError(msg, exc.error) from exc
            except (OSError, EOFError, UnicodeDecodeError) as exc:  # EOFError: gzip cut short
                if kind != "BATCH":
                    raise
                msg = f"is a BATCH message whose file cannot be read ({exc})"
                raise _LineProblemError(msg) from exc

        return checked


def _shape_problem(kind: str, message: dict[str, Any]) -> str | None:
    """What makes a message of a known type unusable, before the SDK trips over it."""
    record, stream = message.get("record"), message.get("stream", "")
    if kind == "RECORD" and type(record) is dict and type(stream) is str:  # the common message
        return None
    for key, expected in _SHAPES.get(kind, {}).items():
        if key in message and not isinstance(message[key], expected):
            return f"is a {kind} message whose {key!r} is not {_NOUNS[expected]}"
    if kind == "SCHEMA":
        if "schema" in message and not isinstance(message["schema"].get("properties"), dict):
            return "is a SCHEMA message whose schema has no 'properties' object"
        keys = message.get("key_properties")
        if keys is not None and not (
            isinstance(keys, list) and all(isinstance(key, str) for key in keys)
        ):
            return "is a SCHEMA message whose 'key_properties' is not a list of names"
    return None


def _json_type(value: object) -> str:
    """JSON's name for the type of a parsed value that is not an object."""
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    return "null" if value is None else "number"
