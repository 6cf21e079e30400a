"""Record -> profile line: what a user sees in the NDJSON sent to Userpilot, or in a rejection."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from target_userpilot.profiles import (
    MappingSettings,
    Profile,
    Rejection,
    encode_exact,
    encode_json,
    encode_line,
    id_choice_note,
    merge,
    resolve_id_property,
    to_profile,
)

USERS = MappingSettings(
    kind="users",
    id_property="user_id",
    company_property="company_id",
    include=None,
    exclude=frozenset(),
)
COMPANIES = MappingSettings(
    kind="companies",
    id_property="company_id",
    company_property=None,
    include=None,
    exclude=frozenset(),
)
UTC = dt.timezone.utc
MEGABYTE = "é" * 500_000 + "x" * 48_576  # 1,048,576 bytes in UTF-8

USER_HINT = "(set the 'user_id_property' setting or map the stream)"
COMPANY_HINT = "(set the 'company_id_property' setting or map the stream)"
ASSOCIATION_HINT = (
    "(fix the value, or set the 'user_company_property' setting to the property naming the "
    "user's company)"
)
EXCLUDE_HINT = "fix it in the source, or leave the property out with 'exclude_properties'"


def u(**overrides: Any) -> MappingSettings:
    return replace(USERS, **overrides)


# (record, settings, the exact line sent, or the exact Rejection)
CASES: list[Any] = [
    # --- ids -------------------------------------------------------------------------------
    pytest.param(
        {"user_id": 42, "name": "Ada"},
        USERS,
        b'{"user_id":"42","metadata":{"name":"Ada"}}',
        id="int-id-becomes-string",
    ),
    pytest.param(
        {"user_id": 12345678901234567890123},
        USERS,
        b'{"user_id":"12345678901234567890123","metadata":{}}',
        id="big-int-id-exact",
    ),
    pytest.param(
        {"user_id": Decimal("42.0")},
        USERS,
        b'{"user_id":"42","metadata":{}}',
        id="integral-decimal-id-has-no-point",
    ),
    pytest.param(
        {"user_id": 42.0},
        USERS,
        b'{"user_id":"42","metadata":{}}',
        id="integral-float-id-has-no-point",
    ),
    pytest.param(
        {"user_id": Decimal("1E+3")},
        USERS,
        b'{"user_id":"1000","metadata":{}}',
        id="exponent-decimal-id-written-plain",
    ),
    pytest.param(
        {"user_id": Decimal("3.50")},
        USERS,
        b'{"user_id":"3.5","metadata":{}}',
        id="fractional-decimal-id",
    ),
    pytest.param(
        {"user_id": "42.0"},
        USERS,
        b'{"user_id":"42.0","metadata":{}}',
        id="float-looking-string-id-kept-exactly",
    ),
    pytest.param(
        {"user_id": " u 1 "},
        USERS,
        b'{"user_id":" u 1 ","metadata":{}}',
        id="string-id-not-stripped",
    ),
    pytest.param(
        {"name": "Ada"},
        USERS,
        Rejection(f"missing user id: property 'user_id' is absent {USER_HINT}"),
        id="missing-id",
    ),
    pytest.param(
        {"user_id": None},
        USERS,
        Rejection(f"missing user id: property 'user_id' is null {USER_HINT}"),
        id="null-id",
    ),
    pytest.param(
        {"user_id": ""},
        USERS,
        Rejection(f"invalid user id: property 'user_id' is an empty string {USER_HINT}"),
        id="empty-id",
    ),
    pytest.param(
        {"user_id": " \t"},
        USERS,
        Rejection(f"invalid user id: property 'user_id' is blank (whitespace only) {USER_HINT}"),
        id="whitespace-id",
    ),
    pytest.param(
        {"user_id": True},
        USERS,
        Rejection(
            "invalid user id: property 'user_id' is a boolean (true); ids must be strings or "
            f"numbers {USER_HINT}"
        ),
        id="bool-id",
    ),
    pytest.param(
        {"user_id": {"id": 1}},
        USERS,
        Rejection(
            "invalid user id: property 'user_id' is an object; ids must be strings or numbers "
            f"{USER_HINT}"
        ),
        id="object-id",
    ),
    pytest.param(
        {"user_id": [1]},
        USERS,
        Rejection(
            "invalid user id: property 'user_id' is an array; ids must be strings or numbers "
            f"{USER_HINT}"
        ),
        id="array-id",
    ),
    pytest.param(
        {"user_id": Decimal("NaN")},
        USERS,
        Rejection(
            "invalid user id: property 'user_id' is NaN; ids must be strings or finite numbers "
            f"{USER_HINT}"
        ),
        id="nan-id",
    ),
    pytest.param(
        {"id": "u1", "user_id": "ignored", "email": "a@x.io"},
        u(id_property="id"),
        b'{"user_id":"u1","metadata":{"user_id":"ignored","email":"a@x.io"}}',
        id="configured-id-property-not-repeated-in-metadata",
    ),
    # --- company association (users) -------------------------------------------------------
    pytest.param(
        {"user_id": "u1", "company_id": 7, "plan": "pro"},
        USERS,
        b'{"user_id":"u1","company_id":"7","metadata":{"plan":"pro"}}',
        id="company-association-present",
    ),
    pytest.param(
        {"user_id": "u1", "plan": "pro"},
        USERS,
        b'{"user_id":"u1","metadata":{"plan":"pro"}}',
        id="company-association-absent",
    ),
    pytest.param(
        {"user_id": "u1", "company_id": None},
        USERS,
        b'{"user_id":"u1","metadata":{}}',
        id="company-association-null-is-no-association",
    ),
    pytest.param(
        {"user_id": "u1", "org": {"id": "acme"}},
        u(company_property="org"),
        Rejection(
            "invalid company association: property 'org' is an object; ids must be strings or "
            f"numbers {ASSOCIATION_HINT}"
        ),
        id="company-association-object",
    ),
    pytest.param(
        {"user_id": "u1", "company_id": False},
        USERS,
        Rejection(
            "invalid company association: property 'company_id' is a boolean (false); ids must "
            f"be strings or numbers {ASSOCIATION_HINT}"
        ),
        id="company-association-bool",
    ),
    pytest.param(
        {"user_id": "u1", "company_id": ""},
        USERS,
        b'{"user_id":"u1","metadata":{}}',
        id="company-association-empty-is-no-association",
    ),
    pytest.param(
        {"user_id": "u1", "company_id": " \t"},
        USERS,
        b'{"user_id":"u1","metadata":{}}',
        id="company-association-blank-is-no-association",
    ),
    pytest.param(
        {"user_id": "u1", "company_id": "c" * 1001},
        USERS,
        Rejection(
            "invalid company association: property 'company_id' is longer than 1,000 "
            f"characters as text; Userpilot ids are short {ASSOCIATION_HINT}"
        ),
        id="company-association-too-long",
    ),
    pytest.param(
        {"user_id": "u1", "org": Decimal("9.0"), "company_id": "kept"},
        u(company_property="org"),
        b'{"user_id":"u1","company_id":"9","metadata":{"company_id":"kept"}}',
        id="company-association-custom-property",
    ),
    # --- ids too long: judged before their text is built ------------------------------------
    *(
        pytest.param(
            {"user_id": value},
            USERS,
            Rejection(
                "invalid user id: property 'user_id' is longer than 1,000 characters as text; "
                f"Userpilot ids are short {USER_HINT}"
            ),
            id=f"id-too-long-{name}",
        )
        for name, value in [
            ("string", "u" * 1001),
            ("huge-exponent", Decimal("1e999999999")),
            ("tiny-exponent", Decimal("1e-999999999")),
            ("many-digits", Decimal("1." + "1" * 1000)),
            ("big-int", 10**1000),
            ("negative-big-int", -(10**1000)),
        ]
    ),
    pytest.param(
        {"user_id": "u" * 1000},
        USERS,
        b'{"user_id":"' + b"u" * 1000 + b'","metadata":{}}',
        id="id-of-1000-characters-is-fine",
    ),
    pytest.param(
        {"user_id": Decimal("1e999")},
        USERS,
        b'{"user_id":"1' + b"0" * 999 + b'","metadata":{}}',
        id="id-of-1000-digits-is-fine",
    ),
    # --- Singer bookkeeping ----------------------------------------------------------------
    pytest.param(
        {
            "user_id": "u1",
            "_sdc_extracted_at": "2025-01-01T00:00:00Z",
            "_sdc_deleted_at": None,
            "_sdc_sequence": 1,
            "_sdc_custom": "x",
            "plan": "pro",
        },
        u(include=frozenset({"plan", "_sdc_custom"})),
        b'{"user_id":"u1","metadata":{"plan":"pro"}}',
        id="sdc-fields-never-metadata-even-when-included",
    ),
    # --- companies -------------------------------------------------------------------------
    pytest.param(
        {"company_id": "acme", "name": "Acme", "user_id": "u1", "seats": 10},
        COMPANIES,
        b'{"company_id":"acme","metadata":{"name":"Acme","user_id":"u1","seats":10}}',
        id="companies-kind",
    ),
    pytest.param(
        {"name": "Acme"},
        COMPANIES,
        Rejection(f"missing company id: property 'company_id' is absent {COMPANY_HINT}"),
        id="companies-missing-id",
    ),
    # --- keys and nesting ------------------------------------------------------------------
    pytest.param(
        {"user_id": "u1", "名前": "太郎", "🎉": "🎂", "Ünïcödé": 1},
        USERS,
        '{"user_id":"u1","metadata":{"名前":"太郎","🎉":"🎂","Ünïcödé":1}}'.encode(),
        id="unicode-and-emoji-kept-as-utf8",
    ),
    pytest.param(
        {"user_id": "u1", "a.b": 1, "first name": "Ada", " padded ": 2},
        USERS,
        b'{"user_id":"u1","metadata":{"a.b":1,"first name":"Ada"," padded ":2}}',
        id="keys-with-dots-and-spaces-kept",
    ),
    pytest.param(
        {"user_id": "u1", "a": {"b": {"c": {"d": {"e": 1}}}, "x": "y"}},
        USERS,
        b'{"user_id":"u1","metadata":{"a__b__c__d__e":1,"a__x":"y"}}',
        id="deep-nesting-flattened",
    ),
    pytest.param(
        {"user_id": "u1", "a": {"b": 1, "c": {"d": 2}}},
        u(separator="."),
        b'{"user_id":"u1","metadata":{"a.b":1,"a.c.d":2}}',
        id="custom-separator",
    ),
    pytest.param(
        {"user_id": "u1", "empty": {}, "a": {"b": {}}, "n": 0},
        USERS,
        b'{"user_id":"u1","metadata":{"n":0}}',
        id="empty-objects-contribute-nothing",
    ),
    pytest.param(
        {"user_id": "u1", "address": {"🏠 city": "Köln", "geo.lat": Decimal("50.9")}},
        USERS,
        '{"user_id":"u1","metadata":{"address__🏠 city":"Köln","address__geo.lat":50.9}}'.encode(),
        id="nested-unicode-keys-kept",
    ),
    pytest.param(
        {"user_id": "u1", "a__b": "top", "a": {"b": "nested"}, "z": 1},
        USERS,
        b'{"user_id":"u1","metadata":{"a__b":"nested","z":1}}',
        id="collision-later-value-wins-first-position-kept",
    ),
    pytest.param(
        {"user_id": "u1", "a": {"b": "nested"}, "a__b": "top"},
        USERS,
        b'{"user_id":"u1","metadata":{"a__b":"top"}}',
        id="collision-top-level-later-wins",
    ),
    # --- arrays ----------------------------------------------------------------------------
    pytest.param(
        {"user_id": "u1", "tags": [{"k": "v", "n": [1, 2]}, "x", None, True, Decimal("0.1")]},
        USERS,
        b'{"user_id":"u1","metadata":{"tags":"[{\\"k\\":\\"v\\",\\"n\\":[1,2]},\\"x\\",null,'
        b'true,0.1]"}}',
        id="array-of-objects-as-compact-json-string",
    ),
    pytest.param(
        {"user_id": "u1", "nums": [Decimal("123456789012345678901234567890.5"), "é"], "e": []},
        USERS,
        '{"user_id":"u1","metadata":{"nums":"[123456789012345678901234567890.5,\\"é\\"]",'
        '"e":"[]"}}'.encode(),
        id="array-decimals-exact-and-utf8",
    ),
    pytest.param(
        {"user_id": "u1", "tags": ["a"], "a": {"b": [1], "c": 2}},
        u(arrays="drop"),
        b'{"user_id":"u1","metadata":{"a__c":2}}',
        id="arrays-dropped-top-level-and-nested",
    ),
    pytest.param(
        {"user_id": "u1", "a": {"b": [1, {"c": 2}]}},
        USERS,
        b'{"user_id":"u1","metadata":{"a__b":"[1,{\\"c\\":2}]"}}',
        id="nested-array-as-json-string",
    ),
    pytest.param(
        {"user_id": "u1", "scores": [1, Decimal("NaN")]},
        USERS,
        Rejection(
            "metadata property 'scores' is an array holding NaN or Infinity, which JSON cannot "
            f"carry; {EXCLUDE_HINT}"
        ),
        id="array-with-nan",
    ),
    # --- strings ---------------------------------------------------------------------------
    pytest.param(
        {"user_id": "u1", "big": MEGABYTE},
        USERS,
        b'{"user_id":"u1","metadata":{"big":"' + MEGABYTE.encode() + b'"}}',
        id="one-megabyte-string",
    ),
    pytest.param(
        {"user_id": "u1\n", "note": 'a\nb\r\nc\t"q"\\ \u2028\x00'},
        USERS,
        (
            '{"user_id":"u1\\n","metadata":{"note":"a\\nb\\r\\nc\\t\\"q\\"\\\\ \u2028\\u0000"}}'
        ).encode(),
        id="newlines-and-controls-escaped",
    ),
    pytest.param(
        {"user_id": "u1", "active": True, "deleted": False, "flag": "true", "off": "false"},
        USERS,
        b'{"user_id":"u1","metadata":{"active":true,"deleted":false,"flag":"true","off":"false"}}',
        id="booleans-and-booleans-as-strings",
    ),
    # --- dates and times -------------------------------------------------------------------
    pytest.param(
        {"user_id": "u1", "at": dt.datetime(2025, 2, 1, 10, 20, 30, tzinfo=UTC)},
        USERS,
        b'{"user_id":"u1","metadata":{"at":"2025-02-01T10:20:30Z"}}',
        id="datetime-utc",
    ),
    pytest.param(
        {"user_id": "u1", "at": dt.datetime(2025, 3, 8, 18, 50, 14, 150722)},  # noqa: DTZ001 - naive on purpose
        USERS,
        b'{"user_id":"u1","metadata":{"at":"2025-03-08T18:50:14.150722Z"}}',
        id="naive-datetime-taken-as-utc-microseconds-kept",
    ),
    pytest.param(
        {
            "user_id": "u1",
            "at": dt.datetime(
                2025, 1, 31, 23, 30, 0, 500, tzinfo=dt.timezone(dt.timedelta(hours=-5))
            ),
            "at2": dt.datetime(
                2025, 2, 1, 1, 0, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30))
            ),
        },
        USERS,
        b'{"user_id":"u1","metadata":{"at":"2025-02-01T04:30:00.000500Z",'
        b'"at2":"2025-01-31T19:30:00Z"}}',
        id="datetime-with-offset-converted-to-utc",
    ),
    pytest.param(
        {
            "user_id": "u1",
            "day": dt.date(2025, 2, 1),
            "t": dt.time(9, 5, 7),
            "tus": dt.time(9, 5, 7, 250),
            "nested": {"at": "2025-02-01T10:20:30+02:00"},
        },
        USERS,
        b'{"user_id":"u1","metadata":{"day":"2025-02-01","t":"09:05:07","tus":"09:05:07.000250",'
        b'"nested__at":"2025-02-01T10:20:30+02:00"}}',
        id="date-time-and-nested-date-string-kept",
    ),
    # --- numbers ---------------------------------------------------------------------------
    pytest.param(
        {
            "user_id": "u1",
            "small": Decimal("0.1"),
            "integral": Decimal("42.0"),
            "trailing": Decimal("1.10"),
            "negzero": Decimal("-0.0"),
            "tiny": Decimal("1E-7"),
            "int": -7,
        },
        USERS,
        b'{"user_id":"u1","metadata":{"small":0.1,"integral":42,"trailing":1.1,"negzero":0,'
        b'"tiny":1e-07,"int":-7}}',
        id="decimals-as-plain-json-numbers",
    ),
    pytest.param(
        {
            "user_id": "u1",
            "big": Decimal("123456789012345678901234567890.123"),
            "bigint": Decimal("123456789012345678901234567890.000"),
            "tiny": Decimal("0.1000000000000000055511151231257827"),
        },
        USERS,
        b'{"user_id":"u1","metadata":{"big":123456789012345678901234567890.123,'
        b'"bigint":123456789012345678901234567890,"tiny":0.1000000000000000055511151231257827}}',
        id="long-decimals-exact",
    ),
    pytest.param(
        {"user_id": "u1", "f": 2.5, "fi": 3.0},
        USERS,
        b'{"user_id":"u1","metadata":{"f":2.5,"fi":3}}',
        id="python-floats",
    ),
    pytest.param(
        {"user_id": "u1", "score": Decimal("NaN")},
        USERS,
        Rejection(f"metadata property 'score' is NaN, which JSON cannot carry; {EXCLUDE_HINT}"),
        id="nan-decimal",
    ),
    pytest.param(
        {"user_id": "u1", "score": float("-inf")},
        USERS,
        Rejection(
            f"metadata property 'score' is -Infinity, which JSON cannot carry; {EXCLUDE_HINT}"
        ),
        id="infinite-float",
    ),
    pytest.param(
        {"user_id": "u1", "a": {"b": Decimal("Infinity")}},
        USERS,
        Rejection(f"metadata property 'a__b' is Infinity, which JSON cannot carry; {EXCLUDE_HINT}"),
        id="nested-infinity-named-by-flat-key",
    ),
    pytest.param(
        {"user_id": "u1", "huge": Decimal("1E+400")},
        USERS,
        Rejection(
            "metadata property 'huge' is 1E+400, beyond the range of a JSON number (about "
            f"±1.8e308); {EXCLUDE_HINT}"
        ),
        id="decimal-beyond-double-range",
    ),
    # --- nulls -----------------------------------------------------------------------------
    pytest.param(
        {"user_id": "u1", "x": None, "a": {"b": None}, "y": 1},
        USERS,
        b'{"user_id":"u1","metadata":{"x":null,"a__b":null,"y":1}}',
        id="nulls-sent",
    ),
    pytest.param(
        {"user_id": "u1", "x": None, "a": {"b": None}, "y": 1},
        u(nulls="drop"),
        b'{"user_id":"u1","metadata":{"y":1}}',
        id="nulls-dropped",
    ),
    # --- include / exclude -----------------------------------------------------------------
    pytest.param(
        {"user_id": "u1", "company_id": "c1", "email": "a@x.io", "a": {"b": 1}, "secret": "s"},
        u(include=frozenset({"email", "a"})),
        b'{"user_id":"u1","company_id":"c1","metadata":{"email":"a@x.io","a__b":1}}',
        id="include-list-ids-always-taken",
    ),
    pytest.param(
        {"user_id": "u1", "email": "a@x.io", "secret": "s", "a": {"secret": 1}},
        u(exclude=frozenset({"secret", "user_id"})),
        b'{"user_id":"u1","metadata":{"email":"a@x.io","a__secret":1}}',
        id="exclude-list-top-level-only",
    ),
    pytest.param(
        {"user_id": "u1", "email": "a@x.io", "secret": "s", "plan": "pro"},
        u(include=frozenset({"email", "secret", "missing"}), exclude=frozenset({"secret"})),
        b'{"user_id":"u1","metadata":{"email":"a@x.io"}}',
        id="exclude-wins-over-include",
    ),
    # --- other types -----------------------------------------------------------------------
    pytest.param(
        {"user_id": "u1", "raw": b"ab", "set": {3}},
        USERS,
        b'{"user_id":"u1","metadata":{"raw":"b\'ab\'","set":"{3}"}}',
        id="other-types-as-str",
    ),
]


@pytest.mark.parametrize(("record", "settings", "expected"), CASES)
def test_record_to_line(
    record: dict[str, Any], settings: MappingSettings, expected: bytes | Rejection
) -> None:
    result = to_profile(record, settings)
    if isinstance(expected, Rejection):
        assert result == expected
        return
    assert isinstance(result, Profile), result
    line = result.line(settings.kind)
    assert line == expected
    assert b"\n" not in line
    assert b"\r" not in line
    json.loads(line)  # valid JSON on its own


def test_record_is_not_modified() -> None:
    record = {"user_id": 1, "a": {"b": [1]}, "at": dt.datetime(2025, 1, 1, tzinfo=UTC)}
    before = repr(record)
    to_profile(record, USERS)
    assert repr(record) == before


def test_lone_surrogate_falls_back_to_ascii_escapes() -> None:
    profile = to_profile({"user_id": "u1", "s": "a\ud800é"}, USERS)
    assert isinstance(profile, Profile)
    assert profile.line("users") == b'{"user_id":"u1","metadata":{"s":"a\\ud800\\u00e9"}}'


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        pytest.param({"a": Decimal("1.5")}, '{"a":1.5}', id="float-exact"),
        pytest.param(
            {"bookmarks": {"s": {"v": Decimal("0.30000000000000000001")}}, "l": [Decimal("2.00")]},
            '{"bookmarks":{"s":{"v":0.30000000000000000001}},"l":[2]}',
            id="state-with-exact-decimal",
        ),
        pytest.param({"é": "ü\n"}, '{"é":"ü\\n"}', id="utf8-kept"),
        pytest.param([1, None, True, "x"], '[1,null,true,"x"]', id="array"),
        pytest.param(
            {"at": dt.datetime(2025, 1, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=1)))},
            '{"at":"2025-01-01T00:00:00Z"}',
            id="datetime",
        ),
    ],
)
def test_encode_json(obj: object, expected: str) -> None:
    assert encode_json(obj) == expected
    assert encode_line(obj) == expected.encode()


@pytest.mark.parametrize("bad", [float("nan"), Decimal("Infinity"), [Decimal("-NaN")]])
def test_encode_json_refuses_nan(bad: object) -> None:
    with pytest.raises(ValueError, match="not"):
        encode_json({"x": bad})


def test_profile_line_encodes_decimals_given_directly() -> None:
    # Profiles read back from a batch file carry Decimals (parse_float=Decimal).
    profile = Profile(
        id="c1",
        company_id=None,
        metadata={"a": Decimal("9.90"), "b": Decimal("3.0"), "c": Decimal("1." + "1" * 25)},
    )
    assert profile.line("companies") == (
        b'{"company_id":"c1","metadata":{"a":9.9,"b":3,"c":1.1111111111111111111111111}}'
    )


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1e16, b"1e+16"),
        (-1.5e300, b"-1.5e+300"),
        (9.999999999999999e-05, b"9.999999999999999e-05"),
        (1e-7, b"1e-07"),
        (0.0001, b"0.0001"),
        (9999999999999998.0, b"9999999999999998.0"),
        (-0.0, b"-0.0"),
        (23.45, b"23.45"),
        (2**64, b"18446744073709551616"),
        (None, b"null"),
        (
            '\x00\x1f\x7f\u2028"\\\u00e9\U0001f600',
            '"\\u0000\\u001f\x7f\u2028\\"\\\\\u00e9\U0001f600"'.encode(),
        ),
        ("a\ud800", b'"a\\ud800"'),
    ],
)
def test_profile_line_spells_values_as_ever(value: object, text: bytes) -> None:
    # Fingerprints from earlier runs are of these bytes: a new spelling would resend everyone.
    line = Profile("u1", None, {"v": value, "w": "\u00e9"}).line("users")  # type: ignore[dict-item]
    if value == "a\ud800":  # a lone surrogate: the whole line in ASCII escapes
        assert line == b'{"user_id":"u1","metadata":{"v":' + text + b',"w":"\\u00e9"}}'
    else:
        assert line == b'{"user_id":"u1","metadata":{"v":' + text + ',"w":"\u00e9"}}'.encode()


_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(),
    st.decimals(allow_nan=False, allow_infinity=False, places=3),
)


@given(st.dictionaries(st.text(), _SCALARS, max_size=6), st.one_of(st.none(), st.text(min_size=1)))
def test_profile_line_is_encode_lines_bytes(metadata: dict[str, Any], company: str | None) -> None:
    profile = Profile("u1", company, metadata)
    for kind in ("users", "companies"):
        assert profile.line(kind) == encode_line(profile.fields(kind))


@given(st.datetimes(timezones=st.sampled_from([None, UTC])))
def test_date_time_metadata_is_iso_8601_in_utc(value: dt.datetime) -> None:
    profile = to_profile({"user_id": "u1", "at": value}, USERS)
    assert isinstance(profile, Profile)
    assert profile.metadata["at"] == value.replace(tzinfo=None).isoformat() + "Z"


MERGES = [
    pytest.param(
        Profile("u1", "c1", {"a": 1, "b": "old", "gone": None}),
        Profile("u1", None, {"b": "new", "c": True}),
        Profile("u1", "c1", {"a": 1, "b": "new", "gone": None, "c": True}),
        id="newer-wins-key-by-key-company-kept",
    ),
    pytest.param(
        Profile("u1", "c1", {"a": 1}),
        Profile("u1", "c2", {"a": None}),
        Profile("u1", "c2", {"a": None}),
        id="newer-company-and-null-win",
    ),
    pytest.param(
        Profile("u1", None, {}),
        Profile("u1", None, {"x": Decimal("0.1")}),
        Profile("u1", None, {"x": Decimal("0.1")}),
        id="from-empty",
    ),
]


@pytest.mark.parametrize(("older", "newer", "expected"), MERGES)
def test_merge(older: Profile, newer: Profile, expected: Profile) -> None:
    merged = merge(older, newer)
    assert merged == expected
    assert list(merged.metadata) == list(expected.metadata)


def test_merge_keeps_older_key_order_and_line() -> None:
    merged = merge(Profile("u1", "c1", {"a": 1, "b": 2}), Profile("u1", None, {"c": 3, "a": 4}))
    assert (
        merged.line("users") == b'{"user_id":"u1","company_id":"c1","metadata":{"a":4,"b":2,"c":3}}'
    )


def test_merge_refuses_different_ids() -> None:
    with pytest.raises(ValueError, match="different ids: 'u1' and 'u2'"):
        merge(Profile("u1", None, {}), Profile("u2", None, {}))


@pytest.mark.parametrize(
    ("kind", "configured", "schema", "keys", "expected"),
    [
        pytest.param("users", "email", ["user_id", "email"], ["user_id"], "email", id="configured"),
        pytest.param("users", None, ["id", "user_id"], ["id"], "id", id="declared-key-wins"),
        pytest.param("users", None, ["id", "user_id"], [], "user_id", id="user-id-without-key"),
        pytest.param(
            "users", None, ["a", "b", "user_id"], ["a", "b"], "user_id", id="user-id-composite-key"
        ),
        pytest.param("users", "", ["user_id"], [], "user_id", id="empty-configured-is-unset"),
        pytest.param("users", None, ["uid", "x"], ["uid"], "uid", id="single-key-property"),
        pytest.param("users", None, ["a", "b"], ["a", "b"], "id", id="composite-key-falls-back"),
        pytest.param("users", None, ["company_id"], [], "id", id="users-ignore-company-id"),
        pytest.param(
            "companies", None, ["company_id", "id"], ["id"], "id", id="companies-declared-key-wins"
        ),
        pytest.param(
            "companies", None, ["company_id", "id"], [], "company_id", id="company-id-without-key"
        ),
        pytest.param(
            "companies",
            "company_id",
            ["company_id", "id"],
            ["id"],
            "company_id",
            id="companies-configured-over-key",
        ),
        pytest.param("companies", None, ["user_id", "org"], ["org"], "org", id="companies-key"),
        pytest.param("companies", "acct", [], [], "acct", id="companies-configured"),
        pytest.param("companies", None, [], [], "id", id="nothing-known"),
    ],
)
def test_resolve_id_property(
    kind: Any, configured: str | None, schema: list[str], keys: list[str], expected: str
) -> None:
    assert resolve_id_property(kind, configured, schema, keys) == expected


def test_resolve_id_property_accepts_schema_properties_dict() -> None:
    # The sink passes the schema's "properties" mapping itself.
    properties = {"user_id": {"type": "string"}}
    assert resolve_id_property("users", None, properties, []) == "user_id"


@pytest.mark.parametrize(
    ("kind", "configured", "id_property", "schema", "expected"),
    [
        pytest.param(
            "companies",
            None,
            "id",
            ["id", "company_id"],
            "ids come from the key property 'id', not from the 'company_id' property the stream "
            "also has; set `company_id_property: company_id` to use that one instead",
            id="key-won-over-company-id",
        ),
        pytest.param(
            "users",
            None,
            "uid",
            ["uid", "user_id"],
            "ids come from the key property 'uid', not from the 'user_id' property the stream "
            "also has; set `user_id_property: user_id` to use that one instead",
            id="key-won-over-user-id",
        ),
        pytest.param("users", "uid", "uid", ["uid", "user_id"], None, id="configured-no-note"),
        pytest.param("users", None, "user_id", ["id", "user_id"], None, id="user-id-used"),
        pytest.param("users", None, "id", ["id", "company_id"], None, id="no-competitor"),
    ],
)
def test_id_choice_note(
    kind: Any, configured: str | None, id_property: str, schema: list[str], expected: str | None
) -> None:
    assert id_choice_note(kind, configured, id_property, schema) == expected


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        pytest.param({"s": "k\ud800"}, b'{"s":"k\\ud800"}', id="lone-surrogate-escaped"),
        pytest.param({"n": Decimal("1e5000")}, b'{"n":1E+5000}', id="beyond-float-as-its-text"),
        pytest.param(
            {"n": Decimal("1e999999999")}, b'{"n":1E+999999999}', id="huge-exponent-at-once"
        ),
        pytest.param({"n": Decimal("-1e-999999999")}, b'{"n":-1E-999999999}', id="tiny"),
        pytest.param(
            {"n": Decimal("12345678901234567890.123"), "f": Decimal("0.1")},
            b'{"n":12345678901234567890.123,"f":0.1}',
            id="decimals-exact",
        ),
        pytest.param(
            {"nan": float("nan"), "inf": Decimal("-Infinity"), "dnan": Decimal("NaN")},
            b'{"nan":NaN,"inf":-Infinity,"dnan":NaN}',
            id="non-finite-as-read",
        ),
        pytest.param(
            {"at": dt.datetime(2025, 1, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=1)))},
            b'{"at":"2025-01-01T01:00:00+01:00"}',
            id="datetime-keeps-its-offset",
        ),
        pytest.param({"é": ["ü", None]}, '{"é":["ü",null]}'.encode(), id="utf8-kept"),
    ],
)
def test_encode_exact(obj: object, expected: bytes) -> None:
    line = encode_exact(obj)
    assert line == expected
    # Read back the way the Singer reader reads: the same values.
    assert json.loads(line, parse_float=Decimal) == json.loads(expected, parse_float=Decimal)


def test_profile_fields_leave_out_a_missing_company() -> None:
    assert Profile("u1", None, {"a": 1}).fields("users") == {"user_id": "u1", "metadata": {"a": 1}}
    assert Profile("u1", "c1", {}).fields("users") == {
        "user_id": "u1",
        "company_id": "c1",
        "metadata": {},
    }
    assert Profile("c1", None, {}).fields("companies") == {"company_id": "c1", "metadata": {}}
