"""Hypothesis strategies for realistic and hostile Singer streams, settings and emulator faults.

A drawn `Case` is the input lines (JSON text, so numbers keep their exact spelling and strings
may carry lone surrogates), the target's settings, and the emulator's fault configuration.
Known-bug input classes can be left out with `Switches` (see `SWITCHES`), so CI stays green while
a fix is in flight; the lead turns a switch back on once the fix has landed.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from hypothesis import strategies as st

if TYPE_CHECKING:
    from collections.abc import Callable

Json = Any


@dataclass(frozen=True)
class Switches:
    """Which input classes the strategies draw; each is on unless a known bug is being fixed."""

    lone_surrogates: bool = True
    """Strings (values, keys, ids, STATE) with lone UTF-16 surrogates."""
    huge_numbers: bool = True
    """Numbers outside float range, e.g. `1e5000`, `-1e5000`, `1e-5000`."""
    oversized_profiles: bool = True
    """A profile line longer than `max_batch_bytes` (off: that setting is at least 64 KiB)."""
    all_invalid: bool = True
    """Streams whose every record is invalid."""
    sdk_invalid_under_fail: bool = True
    """Records the SDK rejects (a key property missing, the schema failed) under `fail`."""
    non_string_dates: bool = True
    """A non-string value (a number, an object) in a `date` or `date-time` property."""
    sdk_invalid: bool = True
    """Records lacking a key property or failing the schema (derived per case)."""
    failed_jobs_past_retries: bool = True
    """More failed jobs than `job_retries` (the run stops; its other batches must go too)."""
    rejects_under_fail: bool = True
    """Rows Userpilot rejects while `on_invalid_record` is `fail` (the run stops on them)."""
    faults: bool = True
    """Emulator faults: 5xx, 429, dropped connections, failed jobs, lost responses, rejects."""


KNOWN_BUGS_OFF: frozenset[str] = frozenset()
"""Input classes left out of the default run while a known bug in them awaits its fix."""


def active_switches() -> Switches:
    """The default switches; `FUZZ_ALL=1` turns every class on, known bugs included."""
    if os.environ.get("FUZZ_ALL") == "1":
        return Switches()
    return replace(Switches(), **dict.fromkeys(KNOWN_BUGS_OFF, False))


class Special:
    """A JSON number token the stdlib cannot write from a Python value (`NaN`, `1e5000`)."""

    def __init__(self, token: str) -> None:
        """Keep the token's exact spelling."""
        self.token = token

    def __repr__(self) -> str:
        """Shown in shrunk examples as the token itself."""
        return f"Special({self.token!r})"


def encode(value: Json) -> str:
    """JSON text for a drawn value: Decimals and `Special` tokens as written, no whitespace."""
    if isinstance(value, dict):
        items = ",".join(f"{json.dumps(k)}:{encode(v)}" for k, v in value.items())
        return "{" + items + "}"
    if isinstance(value, list):
        return "[" + ",".join(encode(v) for v in value) + "]"
    if isinstance(value, Special):
        return value.token
    if isinstance(value, Decimal):
        return str(value)
    return json.dumps(value)


@dataclass
class Case:
    """One generated run: the input lines, the target's settings, the emulator's faults.

    Off the main road (`road`, see `off_road_cases`): `files` are BATCH files the runner writes
    into the run's folder (`{work}` in a line stands for it); `signal_after` is when SIGTERM is
    sent, in seconds from the target's first log line; `store_gone_after` is how many statements
    the fingerprint store's database answers before it is gone.
    """

    lines: list[str]
    settings: dict[str, Any]
    faults: dict[str, Any] = field(default_factory=dict)
    road: str = "main"
    files: dict[str, str] = field(default_factory=dict)
    signal_after: float | None = None
    store_gone_after: int | None = None


# --- values -------------------------------------------------------------------------------

_PLAIN_KEYS = ("email", "plan", "note", "ünïcødé 🔑", "a.b c", "", "tenant", "name")
_OFFSETS = ("Z", "+02:00", "-05:30", "+00:00", "")


@functools.cache
def texts(sw: Switches) -> st.SearchStrategy[str]:
    """Short unicode text, NUL and line separators included; lone surrogates when on."""
    parts = [
        st.text(max_size=12),
        st.sampled_from(["", "\x00", "ü", "🙂", "\u2028", '"\\', "null", "Berlin"]),
    ]
    if sw.lone_surrogates:
        surrogate = st.integers(0xD800, 0xDFFF).map(chr)
        parts.append(st.tuples(st.text(max_size=3), surrogate).map("".join))
    return st.one_of(*parts)


@functools.cache
def long_texts(sw: Switches) -> st.SearchStrategy[str]:
    """Text, sometimes thousands of characters long (top-level string properties only)."""
    return st.one_of(texts(sw), st.integers(1000, 6000).map(lambda n: "x" * n))


@functools.cache
def numbers(sw: Switches) -> st.SearchStrategy[Json]:
    """Integers (huge ones too) and exact decimals, tiny and large."""
    spelled = [
        "0.1",
        "12345678901234567890.123",
        "5.0",
        "-0.0",
        "1E-7",
        "1e308",
        "2.5e-308",
        "0.30000000000000004",
    ]
    if sw.huge_numbers:
        spelled += ["1e5000", "-1e5000", "1e-5000"]
    return st.one_of(
        st.integers(-(10**25), 10**25),
        st.integers(-5, 5),
        st.decimals(min_value=-(10**9), max_value=10**9, places=3, allow_nan=False),
        st.sampled_from(spelled).map(Decimal),
    )


def datetimes() -> st.SearchStrategy[str]:
    """RFC 3339 date-times with and without a zone."""
    moments = st.datetimes(min_value=_dt(1970), max_value=_dt(2100))
    return st.tuples(moments, st.sampled_from(_OFFSETS)).map(
        lambda p: p[0].isoformat(timespec="seconds") + p[1]
    )


def _dt(year: int) -> Any:
    import datetime as dt  # noqa: PLC0415

    return dt.datetime(year, 1, 1)  # noqa: DTZ001 - naive, the zone is drawn separately


@functools.cache
def nested(sw: Switches, depth: int) -> st.SearchStrategy[Json]:
    """Objects nested up to `depth` levels, empty ones and arrays inside included."""
    leaf = st.one_of(st.none(), st.booleans(), numbers(sw), texts(sw))
    keys = st.one_of(st.sampled_from(_PLAIN_KEYS), texts(sw))
    return st.recursive(
        leaf,
        lambda inner: st.one_of(
            st.dictionaries(keys, inner, max_size=3), st.lists(inner, max_size=3)
        ),
        max_leaves=depth * 3,
    ).filter(lambda v: isinstance(v, dict))


# --- fields: (schema, value strategy) -------------------------------------------------------


def _nullable(kind: str | list[str]) -> dict[str, Any]:
    kinds = [kind] if isinstance(kind, str) else kind
    return {"type": [*kinds, "null"]}


@functools.cache
def field_kinds(sw: Switches) -> dict[str, tuple[dict[str, Any], st.SearchStrategy[Json]]]:
    """Property kinds a schema can hold, each with values that conform to it."""
    nan = st.sampled_from([Special("NaN"), Special("Infinity"), Special("-Infinity")])
    return {
        "string": (_nullable("string"), st.one_of(st.none(), long_texts(sw))),
        "integer": (_nullable("integer"), st.one_of(st.none(), st.integers(-(10**20), 10**20))),
        "number": (_nullable("number"), st.one_of(st.none(), numbers(sw), nan)),
        "boolean": (_nullable("boolean"), st.one_of(st.none(), st.booleans())),
        "date-time": (
            {**_nullable("string"), "format": "date-time"},
            st.one_of(st.none(), datetimes()),
        ),
        "date": (
            {**_nullable("string"), "format": "date"},
            st.one_of(st.none(), st.dates().map(lambda d: d.isoformat())),
        ),
        "object": (
            {
                **_nullable("object"),
                "properties": {
                    "city": _nullable("string"),
                    "geo": {"type": "object", "properties": {"lat": {"type": "number"}}},
                },
            },
            st.one_of(
                st.none(),
                st.just({}),
                st.fixed_dictionaries(
                    {},
                    optional={
                        "city": st.one_of(st.none(), texts(sw)),
                        "geo": st.fixed_dictionaries({}, optional={"lat": numbers(sw)}),
                    },
                ),
            ),
        ),
        "deep": ({"type": ["object", "null"]}, st.one_of(st.none(), nested(sw, 6))),
        "array": (
            {**_nullable("array"), "items": {"type": ["string", "integer", "null"]}},
            st.one_of(
                st.none(),
                st.lists(st.one_of(st.none(), texts(sw), st.integers(-99, 99)), max_size=4),
            ),
        ),
        "anyOf": (
            {"anyOf": [{"type": "string"}, {"type": "integer"}, {"type": "null"}]},
            st.one_of(st.none(), texts(sw), st.integers(-(10**6), 10**6)),
        ),
    }


# Values that break a property's declared type: invalid when `validate_records` is on.
WRONG_TYPE: st.SearchStrategy[Json] = st.sampled_from([{"not": "scalar"}, ["x"], "text", 7, True])

ID_SCHEMAS: tuple[dict[str, Any], ...] = (
    {"type": "integer"},
    {"type": ["string", "null"]},
    {"anyOf": [{"type": "integer"}, {"type": "string"}]},
    {"type": ["integer", "number", "string", "boolean", "object", "null"]},
)


@functools.cache
def id_values(sw: Switches) -> st.SearchStrategy[Json]:
    """Ids that collide often, in every spelling README names, valid and invalid."""
    strings = st.one_of(
        st.sampled_from(["1", "2", "a", "ü", " ", "0", "x" * 300]),
        texts(sw),
    )
    return st.one_of(
        st.integers(0, 6),
        st.integers(0, 6).map(lambda i: Decimal(f"{i}.0")),
        st.integers(-(10**30), 10**30),
        strings,
        st.sampled_from([None, "", True, False, {}, {"a": 1}]),
    )


# --- streams --------------------------------------------------------------------------------

STREAMS = ("users", "companies", "contacts", "accounts")
MISSING = object()


@dataclass
class StreamPlan:
    """A stream's current schema: the property kinds it has and its key properties."""

    name: str
    kinds: dict[str, str]
    key_properties: list[str]
    id_schema: dict[str, Any]
    has_user_id: bool


def carries_company(plan: StreamPlan) -> bool:
    """Whether the stream declares (and its records carry) `company_id`."""
    return plan.has_user_id or plan.name in {"users", "contacts"}


def _schema_message(plan: StreamPlan, sw: Switches) -> dict[str, Any]:
    kinds = field_kinds(sw)
    props: dict[str, Any] = {"id": plan.id_schema}
    if plan.has_user_id:
        props["user_id"] = plan.id_schema
    if carries_company(plan):
        props["company_id"] = {"type": ["integer", "string", "null"]}
    for name, kind in plan.kinds.items():
        props[name] = kinds[kind][0]
    return {
        "type": "SCHEMA",
        "stream": plan.name,
        "schema": {"type": "object", "properties": props},
        "key_properties": plan.key_properties,
    }


_PROPERTY_NAMES = st.sampled_from((*_PLAIN_KEYS[:5], "mrr", "seen_at", "address", "tags", "blob"))
_KINDS = st.sampled_from(
    (
        "string",
        "integer",
        "number",
        "boolean",
        "date-time",
        "date",
        "object",
        "deep",
        "array",
        "anyOf",
    )
)
_PLANS = st.tuples(
    st.dictionaries(_PROPERTY_NAMES, _KINDS, max_size=4),
    st.sampled_from((["id"], ["id"], [], ["id", "tenant"], ["uid"])),
    st.sampled_from(ID_SCHEMAS),
    st.integers(0, 3),
)


def stream_plans(name: str) -> st.SearchStrategy[StreamPlan]:
    """A schema for one stream: nullable, nested, arrays, formats, anyOf, odd key properties."""
    return _PLANS.map(
        lambda p: StreamPlan(
            name=name,
            kinds=p[0],
            key_properties=p[1],
            id_schema=p[2],
            # The `user_id`/`company_id` property takes precedence over the key property.
            has_user_id=p[3] == 0,
        )
    )


_VALID_INTS = st.integers(0, 6)
_VALID_STRINGS = st.sampled_from(("a", "b", "c", "1"))
_VALID_IDS = st.one_of(_VALID_INTS, _VALID_STRINGS)
_COMPANIES = st.one_of(st.just(MISSING), st.none(), st.integers(0, 4), st.just("c1"))
_DATES = ("date", "date-time")
_TENANTS = st.sampled_from(["t1", "t2"])
_DIE = st.integers(0, 5)


@functools.cache
def _maybe_missing(strategy: st.SearchStrategy[Json]) -> st.SearchStrategy[Json]:
    return st.one_of(strategy, st.just(MISSING))


@functools.cache
def _extra_values(sw: Switches) -> st.SearchStrategy[Json]:
    return st.one_of(st.none(), texts(sw))


def _valid_ids(id_schema: dict[str, Any]) -> st.SearchStrategy[Json]:
    """Plain ids that the id property's own schema accepts."""
    if id_schema == {"type": "integer"}:
        return _VALID_INTS
    if id_schema == {"type": ["string", "null"]}:
        return _VALID_STRINGS
    return _VALID_IDS


@st.composite
def _identity(draw: st.DrawFn, plan: StreamPlan, sw: Switches, *, hostile: bool) -> Json:
    """A record's ids, key properties and company; hostile ones may be missing or odd."""
    rec: dict[str, Any] = {}
    ids = id_values(sw) if hostile else _valid_ids(plan.id_schema)
    for key in ("id", "uid"):
        if key == "id" or "uid" in plan.key_properties:
            value = draw(_maybe_missing(ids) if hostile else ids)
            if value is not MISSING:
                rec[key] = value
    if plan.has_user_id:
        rec["user_id"] = draw(ids)
    if "tenant" in plan.key_properties and (not hostile or draw(st.booleans())):
        rec["tenant"] = draw(_TENANTS)
    if carries_company(plan):
        company = draw(_COMPANIES)
        if company is not MISSING:
            rec["company_id"] = company
    return rec


@st.composite
def records_for(draw: st.DrawFn, plan: StreamPlan, sw: Switches, *, valid: bool) -> Json:
    """A record for `plan`; `valid=False` draws hostile ones (wrong types, bad ids, no keys)."""
    kinds = field_kinds(sw)
    hostile = not valid and sw.sdk_invalid
    rec = draw(_identity(plan, sw, hostile=hostile))
    for name, kind in plan.kinds.items():
        if draw(_DIE) == 0:
            continue  # a property absent from this record
        wrong = hostile and (sw.non_string_dates or kind not in _DATES) and draw(st.booleans())
        rec[name] = draw(WRONG_TYPE if wrong else kinds[kind][1])
    extra = draw(_EXTRA_KEYS)
    if draw(_DIE) == 0 and extra not in rec and extra not in plan.kinds:
        rec[extra] = draw(_extra_values(sw))  # a property the schema does not declare
    return rec


_EXTRA_KEYS = st.sampled_from(_PLAIN_KEYS)


@functools.cache
def state_values(sw: Switches) -> st.SearchStrategy[Json]:
    """STATE values: bookmarks, empty, nested odd values (Decimals, unicode, NUL, nulls)."""
    return st.one_of(
        st.integers(0, 10**6).map(lambda n: {"bookmarks": {"users": {"n": n}}}),
        st.just({}),
        st.fixed_dictionaries({"v": st.one_of(numbers(sw), texts(sw), st.none())}),
        nested(sw, 3),
    )


_STREAM_SETS = st.lists(st.sampled_from(STREAMS), min_size=1, max_size=3, unique=True)
_COUNTS = st.integers(0, 10)
_ROLLS = st.integers(0, 19)
_TENTHS = st.integers(0, 9)
_VERSIONS = st.integers(0, 9)


@st.composite
def streams(draw: st.DrawFn, sw: Switches) -> list[str]:
    """A whole Singer input: SCHEMAs, RECORDs, STATEs and the SDK's other messages."""
    names = draw(_STREAM_SETS)
    plans = {name: draw(stream_plans(name)) for name in names}
    messages: list[Json] = [_schema_message(plans[n], sw) for n in names]
    states = state_values(sw)
    if draw(st.booleans()):
        messages.insert(0, {"type": "STATE", "value": draw(states)})
    all_invalid = sw.all_invalid and draw(_TENTHS) == 0
    for _ in range(draw(_COUNTS)):
        name = draw(st.sampled_from(names))
        roll = draw(_ROLLS)
        if roll == 0:
            plans[name] = draw(stream_plans(name))  # the schema changes mid-stream
            messages.append(_schema_message(plans[name], sw))
        elif roll == 1:
            messages.append(
                {"type": "ACTIVATE_VERSION", "stream": name, "version": draw(_VERSIONS)}
            )
        valid = not all_invalid and draw(_DIE) > 0
        rec = draw(records_for(plans[name], sw, valid=valid))
        messages.append({"type": "RECORD", "stream": name, "record": rec})
        if roll % 4 == 0:
            value = draw(states)
            messages.append({"type": "STATE", "value": value})
            if roll % 8 == 0:
                messages.append({"type": "STATE", "value": value})  # repeated
    if draw(st.booleans()):
        messages.append({"type": "STATE", "value": draw(states)})
    return [encode(m) for m in messages]


# --- settings and faults ----------------------------------------------------------------------


_SETTINGS: dict[str, st.SearchStrategy[Any]] = {
    "stream_kinds": st.dictionaries(
        st.sampled_from(("contacts", "accounts")), st.sampled_from(("users", "companies"))
    ),
    "default_kind": st.sampled_from(("users", "companies")),
    "on_invalid_record": st.sampled_from(("dead_letter", "fail", "skip")),
    "nulls": st.sampled_from(("send", "drop")),
    "arrays": st.sampled_from(("json", "drop")),
    "metadata_separator": st.sampled_from(("__", ".", "/", "→")),
    "include_properties": st.lists(st.sampled_from((*_PLAIN_KEYS, "mrr", "address"))),
    "exclude_properties": st.lists(st.sampled_from((*_PLAIN_KEYS, "tags", "company_id"))),
    "max_batch_rows": st.sampled_from((1, 2, 3, 5, 100)),
    "max_batch_bytes": st.integers(1024, 8192),
    "max_checkpoint_lag_records": st.sampled_from((1, 3, 8, 100)),
    "max_checkpoint_lag_minutes": st.just(0),
    "job_retries": st.integers(0, 2),
    "validate_records": st.booleans(),
    "send_only_changes": st.booleans(),
    "dry_run": st.integers(0, 9).map(lambda n: n == 0),
}
# Each setting is left at its default about half the time.
_SETTINGS_SET = st.fixed_dictionaries({}, optional=_SETTINGS)


def settings() -> st.SearchStrategy[dict[str, Any]]:
    """Settings a user may set: routing, mapping, policies, batch limits, changes-only, dry run."""
    return _SETTINGS_SET


# Mostly within `job_retries`' default of 2, sometimes past it (the run may then fail).
_FAILED_JOBS = st.sampled_from((1, 1, 2, 3))
_LOST = st.integers(1, 2)
_FAIL_RATES = st.sampled_from((0.05, 0.1, 0.2))
_FAULT_KINDS = st.lists(
    st.sampled_from(("500", "502", "503", "429", "drop")), min_size=1, max_size=3, unique=True
)
_FAULT_CLASSES = st.lists(
    st.sampled_from(("requests", "failed jobs", "lost responses", "rejects")),
    min_size=1,
    max_size=2,
    unique=True,
)
_SHAPES = st.fixed_dictionaries(
    {
        "submit_status": st.sampled_from((200, 202)),
        "job_id_style": st.sampled_from(("uuid", "bulk", "alternate")),
        "progress_fields": st.sampled_from(("counts", "rows")),
    }
)
_QUARTERS = st.integers(0, 3)


@st.composite
def faults(
    draw: st.DrawFn, ids: list[str], max_failed_jobs: int = 3, *, rejects: bool = True
) -> dict[str, Any]:
    """Emulator response shapes and, for one case in four, one or two classes of fault."""
    drawn: dict[str, Any] = draw(_SHAPES)
    # Faults cost retries with backoff (a lost response about half a second), so they come in
    # a quarter of the cases, to keep the CI profile within a few minutes.
    classes = draw(_FAULT_CLASSES) if draw(_QUARTERS) == 0 else []
    if "requests" in classes:
        drawn["fail_rate"] = draw(_FAIL_RATES)
        drawn["fault_kinds"] = tuple(draw(_FAULT_KINDS))
    if "failed jobs" in classes and max_failed_jobs > 0:
        drawn["fail_jobs"] = min(draw(_FAILED_JOBS), max_failed_jobs)
    if "lost responses" in classes:
        drawn["drop_submit_responses"] = draw(_LOST)
    if "rejects" in classes and ids and rejects:
        drawn["reject_ids"] = frozenset(draw(st.lists(st.sampled_from(ids), max_size=2)))
    return drawn


def _ids_in(lines: list[str]) -> list[str]:
    """Plain ids the input uses, as strings: the candidates for server-side rejects."""
    found: set[str] = set()
    for line in lines:
        message = json.loads(line)
        if message.get("type") == "RECORD":
            for key in ("id", "uid", "user_id"):
                value = message["record"].get(key)
                if isinstance(value, (int, str)) and not isinstance(value, bool):
                    found.add(str(value))
    return sorted(found)


# A stream map's `__filter__` that keeps every record with an `email` and cannot be evaluated
# on one without (KeyError): README "Stream maps" makes that record an invalid one.
EMAIL_FILTER = "[record['email']] != []"


@st.composite
def cases(draw: st.DrawFn, sw: Switches | None = None) -> Case:
    """A whole run: input, settings, and (when switched on) emulator faults."""
    sw = sw or active_switches()
    chosen = draw(settings())
    if draw(_TENTHS) > 0:
        # Mostly the mapping a user would write; else a drawn one (maybe an unmapped stream).
        chosen["stream_kinds"] = {"contacts": "users", "accounts": "companies"}
    if draw(_TENTHS) == 0:
        chosen["stream_maps"] = {stream: {"__filter__": EMAIL_FILTER} for stream in STREAMS}
    if chosen.get("on_invalid_record") == "fail" and not sw.sdk_invalid_under_fail:
        sw = replace(sw, sdk_invalid=False)
    lines = draw(streams(sw))
    if not sw.oversized_profiles and "max_batch_bytes" in chosen:
        # Five long strings stay well under this, so no profile line exceeds the limit.
        chosen["max_batch_bytes"] = max(chosen["max_batch_bytes"], 65_536)
    retries = chosen.get("job_retries", 2)
    most = 3 if sw.failed_jobs_past_retries else retries
    rejects = sw.rejects_under_fail or chosen.get("on_invalid_record") != "fail"
    drawn = draw(faults(_ids_in(lines), most, rejects=rejects)) if sw.faults else {}
    return Case(lines=lines, settings=chosen, faults=drawn)


# --- off the main road -------------------------------------------------------------------------

ROADS = ("fail with rejected rows", "every upload refused", "BATCH messages", "store gone mid-run")
WORK = "{work}"
"""Stands in a line for the run's folder, where the runner writes the case's BATCH files."""
# Manifest entries the target must refuse (one ERROR line naming the input line).
_UNREADABLE = st.sampled_from(
    (
        "s3://bucket/{name}",
        "https://example.com/{name}",
        "relative/{name}",
        None,  # not a string
    )
)
# Statements the fingerprint store runs after it opened: a kind's first lookup takes two, a
# confirmation three or four; past the run's last one the store outlives the run.
_STORE_STATEMENTS = st.integers(0, 8)
# Seconds after the target's first log line: start-up (settings, the start-up check), the run,
# or after its end.
_SIGNAL_AFTER = st.sampled_from((0.0, 0.02, 0.05, 0.1, 0.2, 0.4, 0.8))


def _record_text(line: str) -> str | None:
    """A RECORD line's record, as its exact JSON text (`encode` writes `record` last)."""
    head = '{"type":"RECORD","stream":'
    if not line.startswith(head):
        return None
    return line[line.index(',"record":') + len(',"record":') : -1]


@st.composite
def batch_messages(draw: st.DrawFn, lines: list[str]) -> tuple[list[str], dict[str, str]]:
    """Some runs of RECORD lines of one stream become a BATCH message naming a file of them;
    one in six of those a manifest the target cannot read."""
    out: list[str] = []
    files: dict[str, str] = {}
    index = 0
    while index < len(lines):
        text = _record_text(lines[index])
        if text is None or draw(_DIE) == 0:
            out.append(lines[index])
            index += 1
            continue
        stream = json.loads(lines[index])["stream"]
        run = [text]
        index += 1
        while index < len(lines) and len(run) < 4:
            nxt = _record_text(lines[index])
            if nxt is None or json.loads(lines[index])["stream"] != stream:
                break
            run.append(nxt)
            index += 1
        name = f"batch-{len(files) + 1}.jsonl"
        files[name] = "".join(f"{text}\n" for text in run)
        entry: Any = f"file://{WORK}/{name}" if draw(st.booleans()) else f"{WORK}/{name}"
        encoding: dict[str, Any] = {"format": "jsonl", "compression": "none"}
        if draw(_DIE) == 0:
            unreadable = draw(_UNREADABLE)
            entry = unreadable.format(name=name) if unreadable else len(files)
        elif draw(_TENTHS) == 0:
            encoding = {"compression": "none"}  # no format
        message = {"type": "BATCH", "stream": stream, "encoding": encoding, "manifest": [entry]}
        out.append(json.dumps(message))
    return out, files


@st.composite
def off_road_cases(draw: st.DrawFn, sw: Switches | None = None) -> Case:
    """A case on one of the paths off the main road: `fail` with rows Userpilot rejects, a
    server refusing every upload, BATCH messages (local files, and some it cannot read), or a
    fingerprint store (`send_only_changes`) whose database is gone at a drawn moment."""
    case = draw(cases(sw))
    road = draw(st.sampled_from(ROADS))
    chosen = {k: v for k, v in case.settings.items() if k != "dry_run"}  # the road uploads
    # The emulator's shapes stay; the road is the case's fault.
    faults = {k: v for k, v in case.faults.items() if k in _SHAPES_KEYS}
    lines, files, gone = case.lines, dict[str, str](), None
    if road == "fail with rejected rows":
        chosen["on_invalid_record"] = "fail"
        ids = _ids_in(lines)
        if ids:
            faults["reject_ids"] = frozenset(
                draw(st.lists(st.sampled_from(ids), min_size=1, max_size=2))
            )
    elif road == "every upload refused":
        faults["refuse_uploads"] = True
    elif road == "BATCH messages":
        lines, files = draw(batch_messages(lines))
    else:
        chosen["send_only_changes"] = True
        gone = draw(_STORE_STATEMENTS)
    drawn = Case(lines=lines, settings=chosen, faults=faults, road=road, files=files)
    return replace(drawn, store_gone_after=gone)


@st.composite
def signalled_cases(draw: st.DrawFn, sw: Switches | None = None) -> Case:
    """A main-road case, with SIGTERM at a random moment (start-up included); one in four
    while the start-up check retries a server answering 503 to everything."""
    case = draw(cases(sw))
    if draw(_QUARTERS) == 0:
        shapes = {k: v for k, v in case.faults.items() if k in _SHAPES_KEYS}
        faults = {**shapes, "fail_rate": 1.0, "fault_kinds": ("503",)}
        return replace(case, faults=faults, road="SIGTERM, every request 503", signal_after=0.4)
    return replace(case, road="SIGTERM", signal_after=draw(_SIGNAL_AFTER))


_SHAPES_KEYS = frozenset(("submit_status", "job_id_style", "progress_fields"))


# --- deletions (hard_delete) -------------------------------------------------------------------

# The mark table README states, one row per drawn value: what the value makes of its record.
MARK_VALUES: tuple[tuple[Json, str], ...] = (
    (None, "kept"),
    (False, "kept"),
    (0, "kept"),
    ("false", "kept"),
    ("FALSE", "kept"),
    ("0", "kept"),
    ("no", "kept"),
    ("No", "kept"),
    ("", "kept"),
    (" ", "kept"),
    (True, "deleted"),
    (1, "deleted"),
    ("true", "deleted"),
    ("1", "deleted"),
    ("yes", "deleted"),
    ("2026-03-04T10:00:00Z", "deleted"),
    ("2026-03-04", "deleted"),
    ("None", "invalid"),
    ("maybe", "invalid"),
    (2, "invalid"),
)
DELETED_PROPERTY = "is_deleted"
_DELETE_KINDS = ("users", "companies")
_ANY_MARK: dict[str, Any] = {"type": ["string", "boolean", "integer", "null"]}
_MARK_SCHEMAS = st.sampled_from(
    ({**_ANY_MARK, "format": "date-time"}, _ANY_MARK, None)  # None: not declared
)
# Stream maps a user writes; each would turn a deletion into an update if read after them.
DELETION_MAPS: dict[str, dict[str, Any] | None] = {
    "none": None,
    "whitelist": {"id": "id", "email": "email", "__else__": None},
    "one field": {"email": "email.upper()"},
    "renamed id": {"user_id": "id", "id": "__NULL__", "__key_properties__": ["user_id"]},
    "filter on the key": {"__filter__": "record['id'] != 'b'"},
    "filter on a field": {"__filter__": "record['email'] != 'c@x.io'"},
}
FILTERS: dict[str, Callable[[dict[str, Any]], bool]] = {
    # What each `__filter__` above says of a record (docs/deletes.md): a record it leaves out is
    # neither deleted nor loaded; where it cannot be evaluated (KeyError: a key-only record under
    # the field filter) the record is a dead letter, never a deletion.
    "record['id'] != 'b'": lambda record: record["id"] != "b",
    "record['email'] != 'c@x.io'": lambda record: record["email"] != "c@x.io",
}
_DELETE_IDS = st.sampled_from(("a", "b", "c", "d"))
_MARK_ROWS = st.sampled_from(MARK_VALUES)
_DELETE_FAULTS = st.one_of(
    # Answers to delete requests only, that are no acceptance: every delete request gets one.
    st.lists(st.sampled_from(("302", "html200", "empty200")), min_size=1, unique=True).map(
        lambda kinds: {"fail_rate": 1.0, "fault_kinds": tuple(kinds)}
    ),
    # Faults of any request, deletes included: retried while `request_retry_max_time` lasts.
    st.lists(
        st.sampled_from(("drop", "429date", "302", "429", "html200", "empty200")),
        min_size=1,
        max_size=3,
        unique=True,
    ).map(lambda kinds: {"fail_rate": 0.3, "fault_kinds": tuple(kinds)}),
)


@st.composite
def _deletion_record(draw: st.DrawFn, deleted_property: str | None) -> Json:
    """A record of a deletion run: an update, or a mark from the table, maybe key-only."""
    pid = draw(_DELETE_IDS)
    roll = draw(_DIE)
    if roll == 0:
        return {"id": pid, "_sdc_deleted_at": "2026-03-04T10:00:00Z"}  # key-only, log-based
    rec: dict[str, Any] = {"id": pid, "email": f"{pid}@x.io"}
    if roll <= 2:
        rec["_sdc_deleted_at"] = draw(_MARK_ROWS)[0]
    elif roll <= 4 and deleted_property:
        rec[deleted_property] = draw(_MARK_ROWS)[0]
    return rec


@st.composite
def deletion_cases(draw: st.DrawFn) -> Case:
    """A `hard_delete` run: marks from the table, under stream maps, against odd answers.

    Ids are few, so ids are deleted, re-created and deleted again within a run; STATE values
    are `{"n": <records before it>}`, so each released STATE says what it covers.
    """
    deleted_property = draw(st.sampled_from((DELETED_PROPERTY, None)))
    kinds = (
        ["users", "companies"] if draw(_QUARTERS) == 0 else [draw(st.sampled_from(_DELETE_KINDS))]
    )
    messages: list[Json] = []
    for kind in kinds:
        props: dict[str, Any] = {"id": {"type": "string"}, "email": {"type": ["string", "null"]}}
        for mark in ("_sdc_deleted_at", DELETED_PROPERTY):
            schema = draw(_MARK_SCHEMAS)
            if schema is not None:
                props[mark] = schema
        schema_message = {"type": "object", "properties": props}
        messages.append(
            {"type": "SCHEMA", "stream": kind, "schema": schema_message, "key_properties": ["id"]}
        )
    count = 0
    for _ in range(draw(st.integers(1, 12))):
        count += 1
        kind = draw(st.sampled_from(kinds))
        record = draw(_deletion_record(deleted_property))
        messages.append({"type": "RECORD", "stream": kind, "record": record})
        if draw(st.booleans()):
            messages.append({"type": "STATE", "value": {"n": count}})
    messages.append({"type": "STATE", "value": {"n": count, "end": True}})
    chosen_map = DELETION_MAPS[draw(st.sampled_from(tuple(DELETION_MAPS)))]
    chosen: dict[str, Any] = {
        "hard_delete": True,
        "max_deletes_per_run": 1_000,
        "max_invalid_percent": 100,
        # 0: the first failure stops the run at once; 1: one retry (real seconds, paced).
        "request_retry_max_time": draw(st.sampled_from((0, 0, 1))),
    }
    if deleted_property:
        chosen["deleted_property"] = deleted_property
    if chosen_map is not None:
        chosen["stream_maps"] = dict.fromkeys(kinds, chosen_map)
    drawn = draw(_DELETE_FAULTS) if draw(_QUARTERS) == 0 else {}
    return Case(lines=[encode(m) for m in messages], settings=chosen, faults=drawn)
