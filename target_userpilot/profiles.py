"""From one tap record to one Userpilot profile line (or a rejection saying what to fix).

Pure functions, standard library and msgspec only. Records arrive as the SDK hands them to a sink:
top-level `date-time`/`date`/`time` properties as `datetime`/`date`/`time` objects, numbers
with a fraction as `Decimal`, nested values as plain JSON types.

Metadata conversion (Userpilot takes flat primitives only):

- `datetime` -> ISO 8601 in UTC with a `Z` suffix (naive values are taken as UTC),
  microseconds only when non-zero; `date` -> `YYYY-MM-DD`; `time` -> `HH:MM:SS[.ffffff]`
  (plus its UTC offset if the value carries one).
- `Decimal` -> an exact JSON number: an integral value becomes an int, a value that a float
  represents exactly (by `repr`) becomes that float, anything else keeps its exact decimal text.
  NaN and Infinity reject the record.
- Nested objects are flattened into `parent{separator}child` keys (an empty object adds
  nothing); arrays become compact JSON strings or are dropped; anything else becomes `str()`.
- `include`/`exclude` act on top-level property names only; `_sdc_*` properties (Singer
  bookkeeping) never become metadata.
- A user whose company property is null, absent or empty has no `company_id` in its line.
- An id (or company id) whose text would pass `MAX_ID_CHARS` rejects the record, judged
  before the text is built.
- Key collisions (a top-level `a__b` next to `{"a": {"b": ...}}`): the value that comes later
  in the record wins; the key keeps the position where it first appeared.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import math
import re
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, TypeGuard

import msgspec

from target_userpilot.kinds import NOUN

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

    from target_userpilot.kinds import Kind

Scalar: TypeAlias = "str | int | float | bool | Decimal | None"
Metadata: TypeAlias = "dict[str, Scalar]"

# Integral decimals up to this many digits become ints (exact, readable); larger ones are
# written in exponent form, which also keeps clear of Python's int-to-str digit limit.
_MAX_INT_DIGITS = 64
# Userpilot ids are short; a longer one is a mapping mistake (and `1e999999999` as text would
# be a gigabyte). Checked on the number's size before its text is built.
MAX_ID_CHARS = 1000
_MAX_ID_INT = 10**MAX_ID_CHARS

_ID_SETTING: dict[str, str] = {"users": "user_id_property", "companies": "company_id_property"}
_DEFAULT_ID: dict[str, str] = {"users": "user_id", "companies": "company_id"}
_UTC = dt.timezone.utc
# Singer bookkeeping fields (`_sdc_extracted_at`, `_sdc_deleted_at`, ...; the SDK adds seven
# with `add_record_metadata`): never metadata.
SDC_PREFIX = "_sdc_"
# Keys `MappingSettings.sends` remembers per stream (a dict of about 0.5 MB at most).
_JUDGED_KEYS = 4096
_EXCLUDE_HINT = "fix it in the source, or leave the property out with 'exclude_properties'"


@dataclass(frozen=True)
class MappingSettings:
    """How records of one stream become profiles."""

    kind: Kind
    id_property: str
    company_property: str | None
    include: frozenset[str] | None
    exclude: frozenset[str]
    separator: str = "__"
    arrays: Literal["json", "drop"] = "json"
    nulls: Literal["send", "drop"] = "send"

    @functools.cached_property
    def dropped(self) -> frozenset[str]:
        """Properties never sent as metadata: the id, a user's company link, the excluded."""
        links = {self.id_property}
        if self.kind == "users" and self.company_property is not None:
            links.add(self.company_property)
        return self.exclude | links

    @functools.cached_property
    def judged(self) -> dict[str, bool]:
        """`sends` of the keys seen so far (a stream's records share a handful of keys)."""
        return {}

    def sends(self, key: str) -> bool:
        """Whether a record's top-level property becomes metadata; `judged` remembers it."""
        sent = (
            key not in self.dropped
            and (self.include is None or key in self.include)
            and not key.startswith(SDC_PREFIX)  # the SDK's and taps' bookkeeping, never a trait
        )
        if len(self.judged) < _JUDGED_KEYS:  # a record may bring any key: the memo is bounded
            self.judged[key] = sent
        return sent


def resolve_id_property(
    kind: Kind,
    configured: str | None,
    schema_properties: Iterable[str],
    key_properties: Sequence[str],
) -> str:
    """The property holding a profile's id.

    The configured name if given (an empty string counts as not given); else the stream's
    single key property, as the tap declared it; else `user_id` (users) / `company_id`
    (companies) if the schema has it; else `id`.
    """
    if configured:
        return configured
    if len(key_properties) == 1:
        return key_properties[0]
    default = _DEFAULT_ID[kind]
    if default in set(schema_properties):
        return default
    return "id"


def id_choice_note(
    kind: Kind, configured: str | None, id_property: str, schema_properties: Iterable[str]
) -> str | None:
    """What to tell the user when the key won over a `user_id`/`company_id` property.

    None when there was no choice to make (configured, or the stream has only one of them).
    """
    default = _DEFAULT_ID[kind]
    if configured or id_property == default or default not in set(schema_properties):
        return None
    return (
        f"ids come from the key property {id_property!r}, not from the {default!r} property "
        f"the stream also has; set `{_ID_SETTING[kind]}: {default}` to use that one instead"
    )


@dataclass(frozen=True)
class Profile:
    """One Userpilot user or company: id, (users) company association, flat metadata."""

    id: str
    company_id: str | None
    metadata: Metadata

    def fields(self, kind: Kind) -> dict[str, object]:
        """The profile as Userpilot takes it; a user without a company has no `company_id`."""
        if kind == "users":
            obj: dict[str, object] = {"user_id": self.id}
            if self.company_id is not None:
                obj["company_id"] = self.company_id
            obj["metadata"] = self.metadata
            return obj
        return {"company_id": self.id, "metadata": self.metadata}

    def line(self, kind: Kind) -> bytes:
        """The profile as one NDJSON line, without the trailing newline (`encode_line`'s bytes)."""
        fields = self.fields(kind)
        if _msgspec_writes_alike(self.metadata):
            try:
                return _MSGSPEC.encode(fields)
            except UnicodeEncodeError:  # a lone surrogate: `encode_line` escapes the whole line
                pass
        return encode_line(fields)


@dataclass(frozen=True)
class Rejection:
    """A record that cannot become a profile; `reason` says what to fix."""

    reason: str


def merge(older: Profile, newer: Profile) -> Profile:
    """Two profiles of the same id as one: metadata key by key, newer values win.

    The company association is the newer one unless that is None. Raises ValueError for
    profiles of different ids.
    """
    if older.id != newer.id:
        msg = f"cannot merge profiles of different ids: {older.id!r} and {newer.id!r}"
        raise ValueError(msg)
    return Profile(
        id=newer.id,
        company_id=newer.company_id if newer.company_id is not None else older.company_id,
        metadata={**older.metadata, **newer.metadata},
    )


# --- JSON encoding -------------------------------------------------------------------------


class _NeedsExactError(Exception):
    """A Decimal that neither an int nor a float can carry exactly: take the slow path."""


def _decimal_number(value: Decimal) -> int | float | Decimal:
    """A finite Decimal as int, float or Decimal, whichever carries it exactly and simply.

    `int()` only runs below `_MAX_INT_DIGITS` digits: on `1E+999999999` it would run for
    minutes. `float()` and `str()` of a Decimal are cheap whatever its exponent.
    """
    as_float = float(value)
    if not as_float.is_integer() and repr(as_float) == str(value):
        return as_float  # the common case ("99.5"), without the Decimal arithmetic below
    if value == value.to_integral_value() and value.adjusted() < _MAX_INT_DIGITS:
        return int(value)
    # Other spellings of a float's value: "1.10", "1E-7".
    if math.isfinite(as_float) and Decimal(repr(as_float)) == value:
        return as_float
    return value


def _text(value: object) -> str:
    """Text for a value JSON has no type for (dates as ISO 8601, anything else `str()`)."""
    if isinstance(value, dt.datetime):
        return _datetime_text(value)
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    return str(value)


def _float_or_int(value: Decimal) -> int | float:
    """A finite Decimal that an int or float carries exactly; else `_NeedsExactError`."""
    number = _decimal_number(value)
    if isinstance(number, Decimal):
        raise _NeedsExactError
    return number


def _fast_default(value: object) -> object:
    if isinstance(value, Decimal):
        if not value.is_finite():
            msg = f"{value} is not allowed in JSON"
            raise ValueError(msg)
        return _float_or_int(value)
    return _text(value)


def _non_finite_float(value: Decimal) -> float:
    return math.nan if value.is_nan() else float(value)


def _lossless_default(value: object) -> object:
    """As `_fast_default`, but NaN/Infinity pass and dates keep their own offset."""
    if isinstance(value, Decimal):
        return _float_or_int(value) if value.is_finite() else _non_finite_float(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    return str(value)


_Encode: TypeAlias = "Callable[[object], str]"


def _make_encoder(
    *, ensure_ascii: bool, default: Callable[[object], object], allow_nan: bool
) -> _Encode:
    """Compact JSON text through the C encoder, built once.

    `JSONEncoder.encode` builds a new C encoder on every call; building it once saves about a
    sixth of a line's encoding time. The C encoder's constructor is not a public API, so it is
    only used if it gives the same text as `JSONEncoder` on a probe; otherwise `encode` is.
    """
    encoder = json.JSONEncoder(
        ensure_ascii=ensure_ascii, separators=(",", ":"), allow_nan=allow_nan, default=default
    )
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - CPython always has it
        return encoder.encode
    escape = (
        json.encoder.encode_basestring_ascii if ensure_ascii else json.encoder.encode_basestring
    )
    probe: dict[str, object] = {
        "a": [1, 2.5, True, None, '\u00e9\n"', {}],
        "b": {"c": Decimal("0.1")},
    }
    try:
        c_encode = make(None, default, escape, None, ":", ",", False, False, allow_nan)  # noqa: FBT003
        if "".join(c_encode(probe, 0)) != encoder.encode(probe):  # pragma: no cover
            return encoder.encode
    except Exception:  # noqa: BLE001  # pragma: no cover - a Python whose C encoder differs
        return encoder.encode

    def encode(obj: object) -> str:
        return "".join(c_encode(obj, 0))

    return encode


def _exact_text(
    obj: object, *, ensure_ascii: bool, default: Callable[[object], object], allow_nan: bool
) -> str:
    """Slow path: JSON text with every Decimal that no float holds written as its exact text.

    Such a Decimal is encoded as a quoted placeholder first, then the placeholder is replaced
    by the Decimal's text (short whatever its exponent: `1E+5000`), so the C encoder still
    walks the structure: a Python walk would run out of stack on a record nested 500 deep.
    """
    token = f"exact-{uuid.uuid4().hex}-"
    texts: list[str] = []

    def exact_default(value: object) -> object:
        if isinstance(value, Decimal) and value.is_finite():
            number = _decimal_number(value)
            if not isinstance(number, Decimal):
                return number
            texts.append(str(number))
            return f"{token}{len(texts) - 1}"
        return default(value)

    encoder = json.JSONEncoder(
        ensure_ascii=ensure_ascii, separators=(",", ":"), allow_nan=allow_nan, default=exact_default
    )
    return re.sub(f'"{token}(\\d+)"', lambda match: texts[int(match[1])], encoder.encode(obj))


@dataclass(frozen=True)
class _Codec:
    """One JSON dialect: a UTF-8 encoder, its ASCII twin, and whether NaN may pass."""

    utf8: _Encode
    ascii: _Encode
    default: Callable[[object], object]
    allow_nan: bool

    @classmethod
    def build(cls, default: Callable[[object], object], *, allow_nan: bool) -> _Codec:
        return cls(
            _make_encoder(ensure_ascii=False, default=default, allow_nan=allow_nan),
            _make_encoder(ensure_ascii=True, default=default, allow_nan=allow_nan),
            default,
            allow_nan,
        )

    def text(self, obj: object, *, ascii_only: bool = False) -> str:
        """Fast (the C encoder) unless a Decimal needs more digits than a float carries."""
        try:
            return (self.ascii if ascii_only else self.utf8)(obj)
        except _NeedsExactError:
            return _exact_text(
                obj, ensure_ascii=ascii_only, default=self.default, allow_nan=self.allow_nan
            )

    def line(self, obj: object) -> bytes:
        r"""UTF-8 bytes; a lone surrogate makes the whole line ASCII escapes (`\ud800`)."""
        try:
            return self.text(obj).encode()
        except UnicodeEncodeError:
            return self.text(obj, ascii_only=True).encode()


_STRICT = _Codec.build(_fast_default, allow_nan=False)
# A profile line is fingerprinted: stores filled by earlier runs hold `encode_line`'s bytes.
# msgspec writes strings, ints, booleans and nulls byte for byte as `json` does (every code
# point but lone surrogates, which it refuses), and floats too but in exponent form (`1e16`
# where `json` writes `1e+16`, `1e-5` for `1e-05`), used only where `repr` has none. It is
# about seven times faster than the C encoder, a tenth of an unchanged rerun.
_MSGSPEC = msgspec.json.Encoder()
_MSGSPEC_ALIKE = frozenset({str, int, bool, type(None)})
_EXPONENT_BELOW = 1e-4
_EXPONENT_FROM = 1e16


def _msgspec_writes_alike(metadata: Metadata) -> bool:
    """Whether msgspec writes these values exactly as `encode_line` does (strings may yet fail)."""
    for value in metadata.values():
        if type(value) in _MSGSPEC_ALIKE:
            continue
        if type(value) is float and (_EXPONENT_BELOW <= abs(value) < _EXPONENT_FROM or value == 0):
            continue
        return False
    return True


_LOSSLESS = _Codec.build(_lossless_default, allow_nan=True)


def encode_json(obj: object) -> str:
    """Compact JSON text, UTF-8 characters kept, Decimals exact; NaN/Infinity raise ValueError.

    Fast (the C encoder) unless a Decimal needs more digits than a float carries.
    """
    return _STRICT.text(obj)


def encode_line(obj: object) -> bytes:
    r"""`encode_json` as UTF-8 bytes.

    A string with a lone surrogate (which UTF-8 cannot carry) makes the whole line fall
    back to ASCII escapes (`\ud800`), which is still valid JSON.
    """
    return _STRICT.line(obj)


def encode_exact(obj: object) -> bytes:
    r"""Anything the Singer reader accepted, as one line of UTF-8 JSON, never failing.

    For dead letters and STATE: numbers exactly as read (a Decimal no float can hold, such as
    `1E+5000`, as its own text), NaN and Infinity as Python's JSON writes them, dates and times
    as ISO 8601 with their own offset, lone surrogates as `\ud800` escapes, any other object
    as `str()`.
    """
    return _LOSSLESS.line(obj)


# --- Record -> profile ---------------------------------------------------------------------


class _RejectError(Exception):
    """Raised while converting metadata; carries the rejection reason."""


def _datetime_text(value: dt.datetime) -> str:
    """ISO 8601 in UTC with a `Z`; naive values are taken as UTC. Raises OverflowError."""
    tz = value.tzinfo
    if type(value) is dt.datetime and (tz is _UTC or tz is None):
        # The SDK's parse of a `Z` or `+00:00` timestamp, or a naive one: msgspec writes
        # `isoformat`'s text (UTC as `Z`) about six times faster (it refuses subclasses).
        text = _MSGSPEC.encode(value)[1:-1].decode()
        return text if tz is _UTC else text + "Z"
    if tz is _UTC:
        return value.isoformat()[:-6] + "Z"
    if tz is None:
        return value.isoformat() + "Z"
    offset = value.utcoffset()
    naive = value.replace(tzinfo=None)
    if offset:
        naive -= offset
    return naive.isoformat() + "Z"


def _non_finite(value: Decimal | float) -> str:
    if isinstance(value, Decimal):
        if value.is_nan():
            return "NaN"
        return "-Infinity" if value < 0 else "Infinity"
    if math.isnan(value):
        return "NaN"
    return "-Infinity" if value < 0 else "Infinity"


def _array_text(key: str, value: list[Any] | tuple[Any, ...]) -> str:
    try:
        return encode_json(value)
    except ValueError:
        msg = (
            f"metadata property {key!r} is an array holding NaN or Infinity, which JSON "
            f"cannot carry; {_EXCLUDE_HINT}"
        )
        raise _RejectError(msg) from None


def _add(metadata: Metadata, key: str, value: object, settings: MappingSettings) -> None:  # noqa: C901, PLR0912
    """Convert one value and put it (or its flattened parts) into `metadata`."""
    kind = type(value)
    if kind is str or kind is int or kind is bool:
        metadata[key] = value  # type: ignore[assignment]
    elif value is None:
        if settings.nulls == "send":
            metadata[key] = None
    elif isinstance(value, Decimal):
        if not value.is_finite():
            msg = f"metadata property {key!r} is {_non_finite(value)}, which JSON cannot carry; "
            raise _RejectError(msg + _EXCLUDE_HINT)
        number = _decimal_number(value)
        if isinstance(number, Decimal) and math.isinf(float(number)):
            msg = (
                f"metadata property {key!r} is {number}, beyond the range of a JSON number "
                f"(about ±1.8e308); {_EXCLUDE_HINT}"
            )
            raise _RejectError(msg)
        metadata[key] = number
    elif isinstance(value, dt.datetime):
        try:
            metadata[key] = _datetime_text(value)
        except OverflowError:
            msg = (
                f"metadata property {key!r} holds the date-time {value.isoformat()}, which "
                f"cannot be expressed in UTC; {_EXCLUDE_HINT}"
            )
            raise _RejectError(msg) from None
    elif isinstance(value, (dt.date, dt.time)):
        metadata[key] = value.isoformat()
    elif isinstance(value, dict):
        prefix = key + settings.separator
        for child, item in value.items():
            _add(metadata, prefix + str(child), item, settings)
    elif isinstance(value, (list, tuple)):
        if settings.arrays == "json":
            metadata[key] = _array_text(key, value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            msg = f"metadata property {key!r} is {_non_finite(value)}, which JSON cannot carry; "
            raise _RejectError(msg + _EXCLUDE_HINT)
        integral = value.is_integer() and abs(value) < 10.0**_MAX_INT_DIGITS
        metadata[key] = int(value) if integral else value
    elif isinstance(value, int):  # int subclasses (IntEnum, ...): bool was handled above
        metadata[key] = int(value)
    else:
        metadata[key] = str(value)


def _plain_id(value: object) -> TypeGuard[str]:
    """The common id, judged at once: a string, neither blank nor too long (see `_id_problem`)."""
    return type(value) is str and 0 < len(value) <= MAX_ID_CHARS and not value.isspace()


def _id_problem(value: object) -> str | None:
    """Why a present, non-null value cannot be an id; None when it can."""
    problem: str | None = None
    if isinstance(value, bool):
        problem = f"is a boolean ({json.dumps(value)}); ids must be strings or numbers"
    elif isinstance(value, dict):
        problem = "is an object; ids must be strings or numbers"
    elif isinstance(value, (list, tuple)):
        problem = "is an array; ids must be strings or numbers"
    elif isinstance(value, str) and not value.strip():
        problem = "is an empty string" if not value else "is blank (whitespace only)"
    elif (isinstance(value, Decimal) and not value.is_finite()) or (
        isinstance(value, float) and not math.isfinite(value)
    ):
        problem = f"is {_non_finite(value)}; ids must be strings or finite numbers"
    elif _too_long_for_an_id(value):
        problem = f"is longer than {MAX_ID_CHARS:,} characters as text; Userpilot ids are short"
    return problem


def _too_long_for_an_id(value: object) -> bool:
    """Whether an id's text would pass MAX_ID_CHARS, judged without building it."""
    if isinstance(value, str):
        return len(value) > MAX_ID_CHARS
    if isinstance(value, int) and not isinstance(value, bool):
        return bool(abs(value) >= _MAX_ID_INT)
    if isinstance(value, Decimal):
        # Plain text of a Decimal has about max(digits, |exponent|) characters.
        exponent = value.as_tuple().exponent
        return (
            abs(value.adjusted()) >= MAX_ID_CHARS
            or len(value.as_tuple().digits) > MAX_ID_CHARS
            or (isinstance(exponent, int) and -exponent > MAX_ID_CHARS)
        )
    return False


def _id_text(value: object) -> str:
    """A valid id value as text: 42 -> "42", 42.0 -> "42", 3.50 -> "3.5", strings as they are."""
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        value = Decimal(repr(value))
    if isinstance(value, Decimal):
        if value == 0:
            return "0"
        if value == value.to_integral_value():
            return format(value.to_integral_value(), "f")
        return format(value.normalize(), "f")
    return _text(value)


def _id_hint(settings: MappingSettings) -> str:
    return f"set the '{_ID_SETTING[settings.kind]}' setting or map the stream"


def _profile_id(record: Mapping[str, Any], settings: MappingSettings) -> str:
    """The profile id as a string; raises _RejectError."""
    raw_id = record.get(settings.id_property)
    if _plain_id(raw_id):  # the common id, without the words a rejection would need
        return raw_id
    return _required_id(
        record, settings.id_property, f"{NOUN[settings.kind]} id", _id_hint(settings)
    )


def _required_id(record: Mapping[str, Any], id_property: str, noun: str, hint: str) -> str:
    """The id-like value of `id_property` as a string; raises _RejectError naming `noun`."""
    raw_id = record.get(id_property)
    if _plain_id(raw_id):
        return raw_id
    problem = None
    if raw_id is None:
        problem = "is null" if id_property in record else "is absent"
        noun = "missing " + noun
    else:
        problem = _id_problem(raw_id)
        noun = "invalid " + noun
    if problem is not None:
        msg = f"{noun}: property {id_property!r} {problem} ({hint})"
        raise _RejectError(msg)
    return _id_text(raw_id)


def _ids(record: Mapping[str, Any], settings: MappingSettings) -> tuple[str, str | None]:
    """The profile id and (users) company association; raises _RejectError."""
    profile_id = _profile_id(record, settings)
    company_property = settings.company_property if settings.kind == "users" else None
    if company_property is None:
        return profile_id, None
    raw_company = record.get(company_property)
    if _plain_id(raw_company):
        return profile_id, raw_company
    # No company (null, absent, empty): the line has no `company_id`, and Userpilot keeps
    # whatever association the user already has.
    if raw_company is None or (isinstance(raw_company, str) and not raw_company.strip()):
        return profile_id, None
    problem = _id_problem(raw_company)
    if problem is not None:
        msg = (
            f"invalid company association: property {company_property!r} {problem} (fix the "
            "value, or set the 'user_company_property' setting to the property naming the "
            "user's company)"
        )
        raise _RejectError(msg)
    return profile_id, _id_text(raw_company)


def _metadata(record: Mapping[str, Any], settings: MappingSettings) -> Metadata:
    """Every other property, converted; raises _RejectError."""
    metadata: Metadata = {}
    judged = settings.judged
    for key, value in record.items():
        sent = judged.get(key)
        if sent is None:
            sent = settings.sends(key)
        if not sent:
            continue
        kind = type(value)
        if kind is str or kind is int or kind is bool:  # the common case, inlined
            metadata[key] = value
        else:
            _add(metadata, key, value, settings)
    return metadata


def deletion_id(record: Mapping[str, Any], settings: MappingSettings) -> str | Rejection:
    """The id a deletion record deletes, read as a profile's; or why it has none."""
    try:
        return _profile_id(record, settings)
    except _RejectError as exc:
        return Rejection(str(exc))


def required_id(
    record: Mapping[str, Any], id_property: str, noun: str, hint: str
) -> str | Rejection:
    """An id-like value (an event's user id or name) read as a profile id is; or why not."""
    try:
        return _required_id(record, id_property, noun, hint)
    except _RejectError as exc:
        return Rejection(str(exc))


def metadata_of(record: Mapping[str, Any], settings: MappingSettings) -> Metadata | Rejection:
    """Every property but the dropped ones, converted as a profile's metadata; or why not."""
    try:
        return _metadata(record, settings)
    except _RejectError as exc:
        return Rejection(str(exc))


def to_profile(record: Mapping[str, Any], settings: MappingSettings) -> Profile | Rejection:
    """One record as a Profile, or a Rejection whose reason says what to fix."""
    try:
        profile_id, company_id = _ids(record, settings)
        return Profile(profile_id, company_id, _metadata(record, settings))
    except _RejectError as exc:
        return Rejection(str(exc))
