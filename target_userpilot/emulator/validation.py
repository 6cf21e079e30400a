"""Parse and validate bulk identify payloads, the way the emulated server does before a job."""

from __future__ import annotations

import dataclasses
import json
import math
from http import HTTPStatus
from typing import IO, TYPE_CHECKING, Any, Literal, cast

from target_userpilot.emulator.config import MAX_RECORDS

if TYPE_CHECKING:
    from collections.abc import Mapping

API_VERSION = "2020-09-22"
"""The X-API-Version the Deletion and Track APIs require."""

Kind = Literal["users", "companies"]

ID_KEY: dict[str, str] = {"users": "user_id", "companies": "company_id"}
_ALLOWED_KEYS: dict[str, frozenset[str]] = {
    "users": frozenset({"user_id", "company_id", "metadata"}),
    "companies": frozenset({"company_id", "metadata"}),
}


@dataclasses.dataclass(frozen=True)
class Row:
    """One valid record of a submitted payload.

    Attributes:
        line: 1-based line of the uploaded file (or 1-based position in a JSON array).
        id: The record's `user_id` or `company_id`.
        record: The record as sent.
    """

    line: int
    id: str
    record: dict[str, Any]


class PayloadError(Exception):
    """A payload the server refuses before creating a job.

    Attributes:
        status: 400 or 413.
        message: The error text sent to the client.
        line: The offending 1-based line (or array position), when there is one.
        reason: The reason alone, without the position.
    """

    def __init__(
        self, status: int, message: str, *, line: int | None = None, reason: str = ""
    ) -> None:
        """Build the error; `message` is what the client sees in `{"error": ...}`."""
        super().__init__(message)
        self.status = status
        self.message = message
        self.line = line
        self.reason = reason or message

    def body(self, *, reference: bool = False) -> dict[str, Any]:
        """The JSON error body: the API reference's `errors` list, or the bulk pages' `error`."""
        if reference:
            entry: dict[str, Any] = {
                "message": self.message,
                "details": self.reason,
                "error": HTTPStatus(self.status).phrase,
                "error_code": f"E{self.status}",
            }
            if self.line is not None:
                entry["line"] = self.line
            return {"errors": [entry]}
        out: dict[str, Any] = {"error": self.message}
        if self.line is not None:
            out["line"] = self.line
            out["reason"] = self.reason
        return out


@dataclasses.dataclass(frozen=True)
class Rules:
    """A server stricter than the documented checks: any line breaking a rule fails the upload.

    Attributes:
        max_value_chars: Longest metadata string allowed (0: no limit).
        string_values_only: Metadata values must be strings (or null).
        reject_keys: Metadata keys refused outright.
        refuse_all: Every line is refused.
    """

    max_value_chars: int = 0
    string_values_only: bool = False
    reject_keys: frozenset[str] = frozenset()
    refuse_all: bool = False

    def __bool__(self) -> bool:
        """Whether any rule is on."""
        return bool(
            self.max_value_chars or self.string_values_only or self.reject_keys or self.refuse_all
        )

    def problem(self, record: dict[str, Any]) -> str | None:
        """The first rule `record`'s metadata breaks, or None."""
        if self.refuse_all:
            return "this account refuses every upload"
        metadata = record.get("metadata") or {}
        for key, value in metadata.items():
            if key in self.reject_keys:
                return f"metadata.{key} is not an allowed property"
            if self.string_values_only and value is not None and not isinstance(value, str):
                return f"metadata.{key} must be a string: only string values are supported"
            if (
                self.max_value_chars
                and isinstance(value, str)
                and len(value) > self.max_value_chars
            ):
                return f"metadata.{key} is longer than {self.max_value_chars} characters"
        return None


def check_rules(rows: list[Row], rules: Rules, where: str) -> None:
    """Refuse the upload (400 naming the first bad line) if any row breaks a rule."""
    if not rules:
        return
    for row in rows:
        problem = rules.problem(row.record)
        if problem is not None:
            raise PayloadError(400, f"{where} {row.line}: {problem}", line=row.line, reason=problem)


def too_many(count: int | str) -> PayloadError:
    """The 413 for a payload with more than MAX_RECORDS records."""
    return PayloadError(
        413, f"Payload Too Large: {count} records, at most {MAX_RECORDS:,} per request"
    )


def _reject_constant(name: str) -> Any:  # noqa: ANN401 - json hook signature
    msg = f"{name} is not valid JSON"
    raise ValueError(msg)


# Built once: `json.loads(text, parse_constant=...)` builds a new decoder on every call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def loads(text: str | bytes) -> Any:  # noqa: ANN401 - any JSON value
    """Strict JSON: no NaN or Infinity."""
    if isinstance(text, str):
        return _DECODER.decode(text)
    return json.loads(text, parse_constant=_reject_constant)


def versioned_json(headers: Mapping[str, str], body: bytes) -> Any:  # noqa: ANN401 - any JSON
    """The JSON body of a Deletion or Track API request (header names in lower case).

    Raises:
        PayloadError: a 400: no or another X-API-Version, or a body that is not JSON.
    """
    version = headers.get("x-api-version", "").strip()
    if version != API_VERSION:
        msg = (
            f"unsupported X-API-Version {version!r}, use {API_VERSION}"
            if version
            else f"the X-API-Version header is required ({API_VERSION})"
        )
        raise PayloadError(400, msg)
    try:
        return loads(body)
    except ValueError as e:
        msg = f"the body is not valid JSON ({e})"
        raise PayloadError(400, msg) from None


_PLAIN_TYPES = frozenset({str, int, bool, type(None)})


def _plain_id(value: object) -> bool:
    return type(value) is str and bool(value.strip())


def _plain_metadata(metadata: object) -> bool:
    return type(metadata) is dict and all(
        type(value) in _PLAIN_TYPES or (type(value) is float and math.isfinite(value))
        for value in metadata.values()
    )


def _plainly_valid(obj: object, kind: Kind) -> bool:
    """True only for records `record_problem` accepts: the common case, checked quickly.

    Looks at exact types (what `json` produces); anything else goes to `record_problem`.
    """
    if type(obj) is not dict or not obj.keys() <= _ALLOWED_KEYS[kind]:
        return False
    if not _plain_id(obj.get(ID_KEY[kind])):
        return False
    if kind == "users" and "company_id" in obj and not _plain_id(obj["company_id"]):
        return False
    return "metadata" not in obj or _plain_metadata(obj["metadata"])


def record_problem(obj: object, kind: Kind) -> str | None:  # noqa: PLR0911
    """Why `obj` is not a valid record of `kind`, or None when it is."""
    if not isinstance(obj, dict):
        return f"not a JSON object (got {_json_type(obj)})"
    id_key = ID_KEY[kind]
    unknown = sorted(set(obj) - _ALLOWED_KEYS[kind])
    if unknown:
        allowed = ", ".join(sorted(_ALLOWED_KEYS[kind]))
        return f"unknown field {unknown[0]!r} (allowed: {allowed})"
    if id_key not in obj:
        return f"{id_key} is missing"
    if not isinstance(obj[id_key], str):
        return f"{id_key} must be a string (got {_json_type(obj[id_key])})"
    if not obj[id_key].strip():
        return f"{id_key} must not be empty"
    if kind == "users" and "company_id" in obj:
        company = obj["company_id"]
        if not isinstance(company, str):
            return f"company_id must be a string (got {_json_type(company)})"
        if not company.strip():
            return "company_id must not be empty"
    if "metadata" in obj:
        return metadata_problem(obj["metadata"])
    return None


def metadata_problem(metadata: object, name: str = "metadata") -> str | None:
    """Why `metadata` is not an object of primitives, or None when it is."""
    if not isinstance(metadata, dict):
        return f"{name} must be an object (got {_json_type(metadata)})"
    for key, value in metadata.items():
        if not _primitive(value):
            return (
                f"{name}.{key} must be a string, number, boolean or null (got {_json_type(value)})"
            )
    return None


def _primitive(value: object) -> bool:
    if value is None or isinstance(value, (str, bool, int)):
        return True
    return isinstance(value, float) and math.isfinite(value)


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _row(obj: object, kind: Kind, line: int, where: str) -> Row:
    if _plainly_valid(obj, kind):
        plain = cast("dict[str, Any]", obj)
        return Row(line=line, id=plain[ID_KEY[kind]], record=plain)
    problem = record_problem(obj, kind)
    if problem is not None:
        raise PayloadError(400, f"{where} {line}: {problem}", line=line, reason=problem)
    assert isinstance(obj, dict)  # noqa: S101 - record_problem checked it
    return Row(line=line, id=obj[ID_KEY[kind]], record=obj)


def parse_ndjson(stream: IO[bytes], kind: Kind) -> list[Row]:  # noqa: C901
    """Every record of an NDJSON file, in order.

    Blank lines at the end are fine; a blank line followed by a record is an error. More than
    MAX_RECORDS records answers 413, which wins over a bad line.

    Raises:
        PayloadError: 413 for too many records, else 400 naming the first bad line.
    """
    rows: list[Row] = []
    first_error: PayloadError | None = None
    blank_at: int | None = None
    count = 0
    for number, raw in enumerate(stream, start=1):
        if not raw.strip():
            blank_at = blank_at or number
            continue
        count += 1
        if count > MAX_RECORDS:
            raise too_many(f"more than {MAX_RECORDS:,}")  # noqa: EM102, TRY003
        if first_error is not None:
            continue  # only counting now, so a 413 still wins
        if blank_at is not None:
            first_error = PayloadError(
                400, f"line {blank_at}: empty line", line=blank_at, reason="empty line"
            )
            continue
        try:
            text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            obj = loads(text)
            rows.append(_row(obj, kind, number, "line"))
        except UnicodeDecodeError:
            first_error = PayloadError(
                400, f"line {number}: not UTF-8", line=number, reason="not UTF-8"
            )
        except PayloadError as e:
            first_error = e
        except ValueError as e:
            reason = f"not valid JSON ({e})"
            first_error = PayloadError(400, f"line {number}: {reason}", line=number, reason=reason)
    if first_error is not None:
        raise first_error
    if not rows:
        raise PayloadError(400, "the file holds no records")
    return rows


def parse_json_body(body: bytes, kind: Kind) -> list[Row]:
    """Every record of a `{"users": [...]}` / `{"companies": [...]}` body, in order.

    Raises:
        PayloadError: 413 for too many records, else 400 naming the first bad record.
    """
    try:
        payload = loads(body)
    except (UnicodeDecodeError, ValueError) as e:
        raise PayloadError(400, f"the body is not valid JSON ({e})") from None
    if not isinstance(payload, dict) or not isinstance(payload.get(kind), list):
        raise PayloadError(400, f'the body must be a JSON object {{"{kind}": [...]}}')
    records: list[Any] = payload[kind]
    if len(records) > MAX_RECORDS:
        raise too_many(len(records))
    if not records:
        raise PayloadError(400, f"{kind} is empty")
    return [_row(obj, kind, n, "record") for n, obj in enumerate(records, start=1)]
