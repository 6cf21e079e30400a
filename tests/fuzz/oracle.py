"""What README promises for a given input and settings, and the check of a run against it.

Built from README's rules alone ("Streams and fields", "Invalid records, dead letters, dry
runs", "How STATE works here", "Send only what changed"), with `jsonschema` deciding "fails the
tap's own JSON schema". Where README is silent (a lone surrogate, a number beyond float range,
two keys that flatten to one name, a wrong type with validation off), a record is `uncertain`:
it must still be accounted for exactly once (arrived or dead-lettered), but its values are not
pinned.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import math
import re
import signal
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

import jsonschema

from fuzz.strategies import FILTERS, WORK

if TYPE_CHECKING:
    from collections.abc import Callable, Container

    from fuzz.runner import Outcome, StateSeen
    from fuzz.strategies import Case

Status = Literal["valid", "invalid", "uncertain"]
KINDS = ("users", "companies")
WALL_BOUND_SECONDS = 60.0
"""No example may take longer than this (a hang)."""
STOPPED_BY_SIGTERM = (128 + signal.SIGTERM, -signal.SIGTERM)
"""Exit statuses of a run stopped by SIGTERM (before its handler: the default kill)."""
MEMORY_BOUND_KB = 1_500_000
"""Peak RSS of a child running the target; in-process, what one run adds to the peak."""


class Uncertain(Exception):  # noqa: N818 - a signal inside the oracle, not an error
    """README does not pin what this record becomes."""


class Invalid(Exception):  # noqa: N818 - a signal inside the oracle, not an error
    """README makes this record invalid."""


def parse(line: str) -> Any:
    """A line as the SDK's reader parses it (floats as Decimal)."""
    return json.loads(line, parse_float=Decimal)


@dataclass
class Placed:
    """One RECORD, by position: its kind, what README makes of it, and its id if it has one."""

    position: int
    stream: str
    kind: str
    status: Status
    pid: str | None = None


@dataclass
class Expected:
    """README's answer for one case."""

    placed: list[Placed] = field(default_factory=list)
    profiles: dict[str, dict[str, dict[str, Any]]] = field(
        default_factory=lambda: {k: {} for k in KINDS}
    )
    unpinned: dict[str, set[str]] = field(default_factory=lambda: {k: set() for k in KINDS})
    states: list[tuple[int, Any]] = field(default_factory=list)
    """(records before it, value) per input STATE, in order."""
    fatal: str | None = None
    """Why the run must stop (an unmapped stream), if it must."""
    may_fail: list[str] = field(default_factory=list)
    """Reasons a non-zero exit is allowed."""


# --- mapping ---------------------------------------------------------------------------------


def kind_of(stream: str, settings: dict[str, Any]) -> str | None:
    """README "Which stream is which"."""
    if stream in KINDS:
        return stream
    mapped = settings.get("stream_kinds", {}).get(stream)
    return mapped or settings.get("default_kind")


def id_property(kind: str, schema: dict[str, Any], keys: list[str]) -> str:
    """README "Ids" (no id setting drawn): the single key, else `user_id`/`company_id`, else id."""
    if len(keys) == 1:
        return keys[0]
    own = "user_id" if kind == "users" else "company_id"
    if own in schema.get("properties", {}):
        return own
    return "id"


def as_id(value: Any) -> str:
    """README "Ids become strings"; raises Invalid for the ids README calls invalid."""
    if value is None or isinstance(value, (bool, dict)) or value == "":
        raise Invalid
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal):
        if value.is_finite() and value == value.to_integral_value():
            return str(int(value))
        raise Uncertain
    if isinstance(value, float):
        raise Invalid  # NaN, Infinity
    if isinstance(value, str):
        _require_encodable(value)
        if not value.strip():
            raise Uncertain  # whitespace only: README names only the empty id
        return value
    raise Uncertain


def _require_encodable(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise Uncertain from None


def _number(value: Decimal | float) -> Any:
    if isinstance(value, float) or not value.is_finite():
        raise Invalid  # NaN, Infinity
    as_float = float(value)
    if math.isinf(as_float) or (as_float == 0 and value != 0):
        raise Uncertain  # beyond float range: README does not say
    return value


_PARSERS: dict[str, Any] = {
    "date": dt.date.fromisoformat,
    "time": dt.time.fromisoformat,
    "date-time": lambda text: dt.datetime.fromisoformat(text.replace("Z", "+00:00")),
}


def _parses(parse: Any, text: str) -> bool:
    try:
        parse(text)
    except ValueError:
        return False
    return True


def _datetime(text: str) -> str:
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise Uncertain from None  # README's table covers valid date-times only
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def flatten(
    key: str,
    value: Any,
    settings: dict[str, Any],
    out: dict[str, Any],
    *,
    date_time: bool = False,
) -> None:
    """README's metadata table for one property, into `out`."""
    _require_encodable(key)
    if isinstance(value, dict):
        for inner, item in value.items():
            name = f"{key}{settings.get('metadata_separator', '__')}{inner}"
            flatten(name, item, settings, out)
        return
    if isinstance(value, list):
        _check_numbers(value)
        if settings.get("arrays", "json") == "json":
            _put(out, key, ("json", value))
        return
    if value is None:
        if settings.get("nulls", "send") == "send":
            _put(out, key, None)
        return
    if isinstance(value, bool):
        _put(out, key, value)
    elif isinstance(value, (int, Decimal, float)):
        _put(out, key, _number(value) if not isinstance(value, int) else value)
    elif isinstance(value, str):
        _require_encodable(value)
        _put(out, key, _datetime(value) if date_time else value)
    else:
        raise Uncertain


def _check_numbers(value: Any) -> None:
    if isinstance(value, (Decimal, float)):
        _number(value)
    elif isinstance(value, list):
        for item in value:
            _check_numbers(item)
    elif isinstance(value, dict):
        for item in value.values():
            _check_numbers(item)
    elif isinstance(value, str):
        _require_encodable(value)


def _put(out: dict[str, Any], key: str, value: Any) -> None:
    if key in out:
        raise Uncertain  # two properties flatten to one name
    out[key] = value


def profile_of(
    kind: str,
    record: dict[str, Any],
    schema: dict[str, Any],
    keys: list[str],
    settings: dict[str, Any],
) -> tuple[str, dict[str, Any]]:
    """(id, `{"company_id"?, "metadata"}`) by README's rules; raises Invalid or Uncertain."""
    declared_ok = _validator(json.dumps(schema, default=str)).is_valid(record)
    if settings.get("validate_records", True) and not declared_ok:
        raise Invalid
    if any(k not in record for k in keys):
        raise Invalid
    id_key = id_property(kind, schema, keys)
    pid = as_id(record.get(id_key))
    profile: dict[str, Any] = {"metadata": {}}
    company_key = settings.get("user_company_property", "company_id")
    skip = {id_key}
    if kind == "users":
        skip.add(company_key)
        company = record.get(company_key)
        if company is not None:
            profile["company_id"] = as_id(company)
    include = settings.get("include_properties")
    exclude = set(settings.get("exclude_properties", []))
    props = schema.get("properties", {})
    for key, value in record.items():
        fmt = props.get(key, {}).get("format")
        # The SDK parses every date-like property, sent or not.
        if fmt in _PARSERS and isinstance(value, str) and not _parses(_PARSERS[fmt], value):
            raise Uncertain  # README's table covers valid dates and times only
        if key in skip or key in exclude or (include is not None and key not in include):
            continue
        is_dt = fmt == "date-time" and isinstance(value, str)
        flatten(key, value, settings, profile["metadata"], date_time=is_dt)
    if not declared_ok:
        raise Uncertain  # a wrong type with validation off: README does not say
    if _line_size(pid, profile) > _line_limit(settings):
        raise Uncertain  # a profile near or over `max_batch_bytes`: README does not say
    return pid, profile


def _line_size(pid: str, profile: dict[str, Any]) -> int:
    r"""About the bytes of the profile's NDJSON line (a lone surrogate: all `\ud800` escapes)."""
    line = {"id": pid, **profile}
    try:
        return len(json.dumps(line, default=str, ensure_ascii=False).encode())
    except UnicodeEncodeError:
        return len(json.dumps(line, default=str))


def _line_limit(settings: dict[str, Any]) -> float:
    """Profile lines above this size are not pinned (the target's own framing may differ)."""
    return 0.8 * float(settings.get("max_batch_bytes", 52_363_264))


@functools.lru_cache(maxsize=256)
def _validator(schema_text: str) -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(json.loads(schema_text, parse_float=Decimal))


# --- the expectation -------------------------------------------------------------------------


def expect(case: Case) -> Expected:  # noqa: C901, PLR0912 - one walk over the input
    """README's answer for `case`."""
    settings = case.settings
    exp = Expected()
    schemas: dict[str, tuple[dict[str, Any], list[str]]] = {}
    position = 0
    for line in case.lines:
        message = parse(line)
        kind_msg = message["type"]
        if kind_msg == "SCHEMA":
            exp.fatal = _schema_fatal(message, settings)
            if exp.fatal:
                break
            schemas[message["stream"]] = (message["schema"], message["key_properties"])
        elif kind_msg == "STATE":
            exp.states.append((position, message["value"]))
        elif kind_msg in ("RECORD", "BATCH"):
            records = [message["record"]] if kind_msg == "RECORD" else batch_records(case, message)
            if records is None:
                exp.fatal = "a BATCH message the target cannot read"
                break
            stream = message["stream"]
            kind = kind_of(stream, settings)
            assert kind is not None
            schema, keys = schemas[stream]
            for record in records:
                position += 1
                placed = Placed(position, stream, kind, "valid")
                _place(exp, placed, record, settings=settings, schema=schema, keys=keys)
    for kind, profiles in exp.profiles.items():
        for pid, profile in profiles.items():
            if _line_size(pid, profile) > _line_limit(settings):
                exp.unpinned[kind].add(pid)  # merged past `max_batch_bytes`: README is silent
    rejected = _rejected_ids(case)
    for placed in exp.placed:
        if placed.pid is not None and placed.pid in rejected:
            exp.profiles[placed.kind].pop(placed.pid, None)
            exp.unpinned[placed.kind].discard(placed.pid)
    policy = settings.get("on_invalid_record", "dead_letter")
    if policy == "fail":
        if any(p.status != "valid" for p in exp.placed):
            exp.may_fail.append("an invalid record with on_invalid_record: fail")
        if any(p.pid in rejected for p in exp.placed):
            exp.may_fail.append("a rejected row with on_invalid_record: fail")
    if case.faults.get("refuse_uploads"):
        exp.may_fail.append("Userpilot refuses every upload")
    streams = {p.stream for p in exp.placed}
    if settings.get("max_invalid_percent", 50) < 100:  # README: 100 turns the check off
        # README (once `max_invalid_percent` lands): a stream whose every record is invalid
        # stops the run at the end of input.
        for stream in sorted(streams - {p.stream for p in exp.placed if p.status == "valid"}):
            exp.may_fail.append(f"every record of stream {stream!r} may be invalid")
    if case.faults.get("fail_jobs", 0) > settings.get("job_retries", 2):
        exp.may_fail.append("more failed jobs than job_retries")
    if case.store_gone_after is not None:
        exp.may_fail.append("the fingerprint store is gone mid-run")
    return exp


def _schema_fatal(message: dict[str, Any], settings: dict[str, Any]) -> str | None:
    """Why a SCHEMA stops the run, if it does."""
    if kind_of(message["stream"], settings) is None:
        return f"stream {message['stream']!r} is unmapped"
    declared = message["schema"].get("properties", {})
    if "stream_maps" in settings and set(message["key_properties"]) - set(declared):
        return "the SDK refuses a stream map for a key property not in the schema"
    return None


def batch_records(case: Case, message: dict[str, Any]) -> list[Any] | None:
    """README "BATCH messages": the records of a local jsonl file; None for what it refuses."""
    (entry,) = message["manifest"]
    prefix = next(
        (
            p
            for p in (f"file://{WORK}/", f"{WORK}/")
            if isinstance(entry, str) and entry.startswith(p)
        ),
        None,
    )
    if prefix is None or message["encoding"].get("format") != "jsonl":
        return None
    text = case.files[entry[len(prefix) :]]
    return [parse(line) for line in text.splitlines() if line.strip()]


def _place(
    exp: Expected,
    placed: Placed,
    record: Any,
    *,
    settings: dict[str, Any],
    schema: dict[str, Any],
    keys: list[str],
) -> None:
    """What README makes of one record: a profile, an invalid record, or an unpinned one."""
    kind = placed.kind
    if "stream_maps" in settings and "email" not in record:
        placed.status = "invalid"  # `EMAIL_FILTER` fails on it, before any other check
        exp.placed.append(placed)
        return
    try:
        pid, profile = profile_of(kind, record, schema, keys, settings)
    except Invalid:
        placed.status = "invalid"
    except Uncertain:
        placed.status, placed.pid = "uncertain", _loose_id(kind, record, schema, keys)
        if placed.pid is not None:
            exp.unpinned[kind].add(placed.pid)
    else:
        placed.pid = pid
        _merge(exp.profiles[kind], pid, profile)
    exp.placed.append(placed)


def _loose_id(
    kind: str, record: dict[str, Any], schema: dict[str, Any], keys: list[str]
) -> str | None:
    """The id an uncertain record may arrive under (a string one as it is), if any."""
    value = record.get(id_property(kind, schema, keys))
    if isinstance(value, str) and value:
        return value
    try:
        return as_id(value)
    except (Invalid, Uncertain):
        return None


def _merge(profiles: dict[str, dict[str, Any]], pid: str, profile: dict[str, Any]) -> None:
    """README "Duplicates" and the upsert: later values win key by key."""
    held = profiles.setdefault(pid, {"metadata": {}})
    held["metadata"].update(profile["metadata"])
    if "company_id" in profile:
        held["company_id"] = profile["company_id"]


# --- the check -------------------------------------------------------------------------------


def same_value(expected: Any, sent: Any) -> bool:
    """Whether `sent` (as the emulator stored it) is README's rendering of `expected`."""
    if isinstance(expected, tuple):  # an array, sent as a JSON string
        return isinstance(sent, str) and _same_json(expected[1], json.loads(sent))
    if isinstance(expected, bool) or expected is None:
        return sent is expected
    if isinstance(expected, (int, Decimal)):
        if isinstance(sent, bool) or not isinstance(sent, (int, float)):
            return False
        if isinstance(sent, int):
            return Decimal(sent) == expected
        return sent == float(expected)
    return bool(expected == sent)


def _same_json(expected: Any, sent: Any) -> bool:
    if isinstance(expected, list):
        return (
            isinstance(sent, list)
            and len(sent) == len(expected)
            and all(_same_json(a, b) for a, b in zip(expected, sent, strict=True))
        )
    if isinstance(expected, dict):
        return (
            isinstance(sent, dict)
            and sent.keys() == expected.keys()
            and all(_same_json(expected[k], sent[k]) for k in expected)
        )
    return same_value(expected, sent)


def check(case: Case, outcome: Outcome) -> list[str]:
    """Every way `outcome` breaks the invariant for `case`, as sentences (empty: it holds)."""
    exp = expect(case)
    policy = case.settings.get("on_invalid_record", "dead_letter")
    succeeded = outcome.exit_code == 0
    dry = bool(case.settings.get("dry_run"))
    stopped = case.signal_after is not None and outcome.exit_code in STOPPED_BY_SIGTERM
    return [
        *_check_hygiene(outcome),
        *(_check_stopped(outcome) if stopped else _check_exit(exp, outcome, policy)),
        *(_check_stop_noticed(case, outcome) if case.signal_after is not None else []),
        *_check_store(exp, outcome, dry=dry, succeeded=succeeded),
        *_check_dead_letters(case, exp, outcome, policy),
        *(
            _check_accounted(exp, outcome, _rejected_ids(case))
            if succeeded and policy == "dead_letter"
            else []
        ),
        *_check_states(
            exp,
            outcome,
            policy,
            complete=succeeded and not dry,
            barred=_barred(case),
            rejected=_rejected_ids(case),
        ),
        *(
            [f"exit 0 although Userpilot refused every one of {outcome.uploads} uploads"]
            if case.faults.get("refuse_uploads") and outcome.uploads and succeeded
            else []
        ),
        *(_check_jobs_counted(outcome) if case.store_gone_after is not None else []),
    ]


_SUMMARY_JOBS = re.compile(r"Summary: .*? in ([\d,]+) jobs?;")


def _check_jobs_counted(outcome: Outcome) -> list[str]:
    """The summary counts every job Userpilot completed, those before a failure included."""
    said = _SUMMARY_JOBS.findall(outcome.log)
    if len(said) != 1:
        return [f"{len(said)} summary lines, not one"]
    counted = int(said[0].replace(",", ""))
    if counted != outcome.jobs_completed:
        return [f"the summary counts {counted} jobs; Userpilot completed {outcome.jobs_completed}"]
    return []


def _check_stopped(outcome: Outcome) -> list[str]:
    """SIGTERM: 143 once the target's handler is in place; before it, Python's default kill,
    which must come before anything was sent."""
    if outcome.exit_code == -signal.SIGTERM and (outcome.uploads or outcome.states):
        return ["killed by SIGTERM (no handler yet) after it began sending"]
    return []


def _check_stop_noticed(case: Case, outcome: Outcome) -> list[str]:
    """Every wait listens: SIGTERM ends a start-up check that keeps retrying."""
    if case.faults.get("fail_rate") == 1.0 and outcome.exit_code not in STOPPED_BY_SIGTERM:
        return [f"SIGTERM during a failing start-up check: exit {outcome.exit_code}, not 143"]
    return []


def _barred(case: Case) -> Container[str | None]:
    """Ids no STATE may pass: rows Userpilot rejects under `fail` (the run stops on them, and
    they are in no dead letter), and every row when it refuses every upload (none delivered)."""
    if case.faults.get("refuse_uploads"):
        return _Every()
    if case.settings.get("on_invalid_record") == "fail":
        return _rejected_ids(case)
    return set()


def _check_store(exp: Expected, outcome: Outcome, *, dry: bool, succeeded: bool) -> list[str]:
    """Userpilot (or a dry run's files) holds README's profiles: nothing invented or lost."""
    problems = []
    if dry and outcome.states:
        problems.append("a dry run emitted STATE")
    if dry and outcome.uploads:
        problems.append(f"a dry run uploaded {outcome.uploads} times")
    for kind in KINDS:
        store = outcome.users if kind == "users" else outcome.companies
        invented = set(store) - set(exp.profiles[kind]) - exp.unpinned[kind]
        if invented:
            problems.append(f"{kind} not in the input arrived: {sorted(invented)[:5]}")
        if succeeded and dry:
            missing = set(exp.profiles[kind]) - outcome.dry_run_ids[kind]
            if missing:
                problems.append(f"dry run would not send {kind} {sorted(missing)[:5]}")
        elif succeeded:
            problems += _check_profiles(kind, exp, store)
    return problems


def _check_profiles(kind: str, exp: Expected, store: dict[str, dict[str, Any]]) -> list[str]:
    problems = []
    for pid, want in exp.profiles[kind].items():
        got = store.get(pid)
        if got is None:
            problems.append(f"{kind} {pid!r} is missing from Userpilot")
        elif pid not in exp.unpinned[kind]:
            problems += _compare(kind, pid, want, got)
    return problems


def _compare(kind: str, pid: str, want: dict[str, Any], got: dict[str, Any]) -> list[str]:
    problems = []
    if kind == "users" and want.get("company_id") != got.get("company_id"):
        problems.append(
            f"user {pid!r} company {got.get('company_id')!r}, README: {want.get('company_id')!r}"
        )
    sent = got.get("metadata", {})
    if set(sent) != set(want["metadata"]):
        problems.append(
            f"{kind} {pid!r} metadata keys {sorted(sent)!r}, README: {sorted(want['metadata'])!r}"
        )
    for key, value in want["metadata"].items():
        if key in sent and not same_value(value, sent[key]):
            problems.append(f"{kind} {pid!r} {key!r} = {sent[key]!r}, README: {value!r}")
    return problems


def _check_hygiene(outcome: Outcome) -> list[str]:
    """No traceback, no hang, no batch file left, no API key shown, memory bounded."""
    found = {
        f"an exception escaped the target: {outcome.crash}": bool(outcome.crash),
        "a traceback at the default log level": "Traceback" in outcome.log,
        f"took {outcome.seconds:.1f} s (a hang?)": outcome.seconds > WALL_BOUND_SECONDS,
        f"batch files left behind: {outcome.leftover}": bool(outcome.leftover),
        f"the API key appears in {outcome.key_seen_in}": bool(outcome.key_seen_in),
        f"peak RSS {outcome.peak_rss_kb} kB": outcome.peak_rss_kb > MEMORY_BOUND_KB,
    }
    return [problem for problem, happened in found.items() if happened]


def _check_exit(exp: Expected, outcome: Outcome, policy: str) -> list[str]:
    """Exit 0 only when nothing forbids it; otherwise non-zero with one ERROR line."""
    if outcome.exit_code == 0:
        if exp.fatal:
            return [f"exit 0 although {exp.fatal}"]
        invalid = sum(p.status == "invalid" for p in exp.placed)
        if policy == "fail" and invalid:
            return [f"exit 0 with on_invalid_record: fail and {invalid} invalid records"]
        return []
    problems = []
    if not exp.fatal and not exp.may_fail:
        problems.append(f"exit {outcome.exit_code} on an input README accepts: {outcome.errors}")
    if len(outcome.errors) != 1:
        problems.append(f"{len(outcome.errors)} ERROR lines, not one: {outcome.errors}")
    return problems


def _check_dead_letters(case: Case, exp: Expected, outcome: Outcome, policy: str) -> list[str]:
    """Each dead letter is an invalid (or rejected) record, once, with a reason."""
    problems = []
    counted = [d["position"] for d in outcome.dead_letters if d.get("position") is not None]
    if len(counted) != len(set(counted)):
        problems.append(f"a record dead-lettered twice: {sorted(counted)}")
    if policy != "dead_letter":
        if outcome.dead_letters:
            problems.append(f"dead letters written with on_invalid_record: {policy}")
        return problems
    rejected = _rejected_ids(case)
    by_position = {p.position: p for p in exp.placed}
    for letter in outcome.dead_letters:
        if not letter.get("reason"):
            problems.append(f"a dead letter without a reason: {letter}")
        if rejected and letter.get("job_id"):
            # Userpilot rejected rows in this job; a job that does not say which (Userpilot's
            # reference shapes) lets the target name only the job.
            continue
        placed = by_position.get(letter.get("position", -1))
        if placed is None or (placed.status == "valid" and placed.pid not in rejected):
            problems.append(f"a valid record dead-lettered: {letter}")
    return problems


@dataclass
class _RejectedRows:
    """Rows Userpilot rejects inside completed jobs, and the dead letters a STATE saw for them."""

    rejected: Container[str | None]
    seen: StateSeen
    in_jobs: dict[str, set[tuple[str, str]]]

    def unlettered(self, placed: Placed) -> bool:
        """Whether `placed` is a rejected row with no dead letter yet: none at its position,
        none naming a job that rejected its id (the job's letter stands for rows a job does
        not name, and for the earlier records of an id merged into one row)."""
        if placed.pid not in self.rejected or placed.position in self.seen.dead_letter_positions:
            return False
        row = (placed.kind, placed.pid)
        return not any(row in self.in_jobs.get(job, ()) for job in self.seen.job_letters)


class _Every:
    """Every id: a server refusing every upload."""

    def __contains__(self, item: object) -> bool:
        return True

    def __bool__(self) -> bool:
        return True


def _rejected_ids(case: Case) -> Container[str | None]:
    """The ids the emulator rejects inside a completed job or refuses (a fault of the case)."""
    if case.faults.get("refuse_uploads"):
        return _Every()
    return {str(i) for i in case.faults.get("reject_ids", ())}


def _check_accounted(exp: Expected, outcome: Outcome, rejected: Container[str | None]) -> list[str]:
    """After a successful run every invalid record is a dead letter; an unpinned one arrived
    or is a dead letter (a letter naming only the job stands for the rows Userpilot rejected)."""
    problems = []
    lettered = {d.get("position") for d in outcome.dead_letters}
    job_lettered = any(d.get("job_id") for d in outcome.dead_letters)
    for placed in exp.placed:
        if placed.position in lettered or placed.status == "valid":
            continue
        if job_lettered and placed.pid in rejected:
            continue
        if placed.status == "invalid":
            problems.append(f"invalid record {placed.position} not dead-lettered")
            continue
        held = outcome.users if placed.kind == "users" else outcome.companies
        if placed.pid not in held and placed.pid not in outcome.dry_run_ids[placed.kind]:
            problems.append(f"record {placed.position} neither arrived nor dead-lettered")
    return problems


def _check_states(
    exp: Expected,
    outcome: Outcome,
    policy: str,
    *,
    complete: bool,
    barred: Container[str | None] = frozenset(),
    rejected: Container[str | None] = frozenset(),
) -> list[str]:
    """Each STATE is one the tap sent, in order, non-empty, and gated; the last is the last."""
    problems = []
    cursor = 0
    for seen in outcome.states:
        value = parse(seen.line)
        if value in ({}, None):
            problems.append(f"an empty STATE was emitted: {seen.line}")
            continue
        match = next((i for i in range(cursor, len(exp.states)) if exp.states[i][1] == value), None)
        if match is None:
            problems.append(f"STATE {seen.line[:80]} is invented or out of order")
            continue
        cursor = match
        before = exp.states[match][0]
        problems += _gating(
            exp,
            seen,
            before,
            letters=policy == "dead_letter",
            barred=barred,
            rejected=_RejectedRows(rejected, seen, outcome.rejected_in_jobs),
        )
    if complete:
        non_empty = [v for _, v in exp.states if v not in ({}, None)]
        last = outcome.states[-1].line if outcome.states else None
        if non_empty and (last is None or parse(last) != non_empty[-1]):
            problems.append(f"the last STATE emitted is not the input's last: {last}")
    return problems


def _gating(
    exp: Expected,
    seen: StateSeen,
    before: int,
    *,
    letters: bool,
    barred: Container[str | None],
    rejected: _RejectedRows,
) -> list[str]:
    """Every record before this STATE was in Userpilot (or dead-lettered) when it came out."""
    problems = []
    for placed in exp.placed[:before]:
        held = seen.users if placed.kind == "users" else seen.companies
        if placed.status == "valid" and placed.pid in barred:
            problems.append(
                f"STATE {seen.line[:60]} came out past record {placed.position} "
                f"({placed.kind} {placed.pid!r}), which Userpilot did not take"
            )
        elif placed.status == "valid" and letters and rejected.unlettered(placed):
            problems.append(
                f"STATE {seen.line[:60]} came out before record {placed.position} "
                f"({placed.kind} {placed.pid!r}), which Userpilot rejected in a job, was "
                "dead-lettered"
            )
        elif placed.status == "valid" and placed.pid in exp.profiles[placed.kind]:
            if placed.pid not in held:
                problems.append(
                    f"STATE {seen.line[:60]} came out before record {placed.position} "
                    f"({placed.kind} {placed.pid!r}) was in Userpilot"
                )
        elif (
            placed.status == "invalid"
            and letters
            and placed.position not in seen.dead_letter_positions
        ):
            problems.append(
                f"STATE {seen.line[:60]} came out before invalid record "
                f"{placed.position} was dead-lettered"
            )
    return problems


# --- deletions (hard_delete) -------------------------------------------------------------------

_KEEP_WORDS = {"", "false", "0", "no"}
_DELETE_WORDS = {"true", "1", "yes"}


def mark_reads(value: Any) -> str:
    """README's mark table: "kept", "deleted" or "invalid" for one mark's value."""
    if value is None or value is False or (type(value) is int and value == 0):
        return "kept"
    if value is True or (type(value) is int and value == 1):
        return "deleted"
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _KEEP_WORDS:
            return "kept"
        if text in _DELETE_WORDS or _parses(dt.datetime.fromisoformat, text.upper()):
            return "deleted"
    return "invalid"


def last_words(case: Case) -> tuple[dict[tuple[str, str], int], list[str]]:
    """Per (kind, id) whose last word in the input is a deletion: the position of the first
    deletion record since its last update (what holds STATE); and how each record read."""
    prop = case.settings.get("deleted_property")
    kept_by = _filter_of(case)
    pending: dict[tuple[str, str], int] = {}
    readings: list[str] = []
    position = 0
    for line in case.lines:
        message = parse(line)
        if message.get("type") != "RECORD":
            continue
        position += 1
        record = message["record"]
        try:
            if not kept_by(record):
                readings.append("filtered out")
                continue  # as if the tap never sent it
        except KeyError:
            readings.append("invalid")  # the filter cannot tell: a dead letter
            continue
        marks = [mark_reads(record.get("_sdc_deleted_at"))]
        if prop:
            marks.append(mark_reads(record.get(prop)))
        reading = "invalid" if "invalid" in marks else "deleted" if "deleted" in marks else "kept"
        readings.append(reading)
        key = (message["stream"], str(record["id"]))
        if reading == "deleted":
            pending.setdefault(key, position)
        elif reading == "kept":
            pending.pop(key, None)
    return pending, readings


def _filter_of(case: Case) -> Callable[[dict[str, Any]], bool]:
    """The drawn stream map's `__filter__`, as what it says of a record (True: no filter)."""
    maps = case.settings.get("stream_maps") or {}
    expressions = {m.get("__filter__") for m in maps.values() if m}
    (expression,) = expressions or {None}
    return FILTERS[expression] if expression is not None else lambda _: True


def check_deletions(case: Case, outcome: Outcome) -> list[str]:
    """A profile is deleted only if its last record in the input was a deletion, and every
    such deletion before a released STATE was accepted by then."""
    problems: list[str] = []
    if outcome.crash:
        problems.append(f"crash: {outcome.crash}")
    if outcome.key_seen_in:
        problems.append(f"the API key appears in: {outcome.key_seen_in}")
    deleting, _ = last_words(case)
    scheduled = outcome.deletions
    wrong = sorted(scheduled - set(deleting))
    if wrong:
        problems.append(f"deleted though their last record was no deletion: {wrong}")
    for seen in outcome.states:
        covered = parse(seen.line).get("n", 0)
        late = sorted(
            k for k, pos in deleting.items() if pos <= covered and k not in seen.deletions
        )
        if late:
            problems.append(
                f"STATE {seen.line} released before the deletion of {late} was accepted"
            )
    if outcome.exit_code == 0 and set(deleting) - scheduled:
        problems.append(f"exit 0 with deletions not accepted: {sorted(set(deleting) - scheduled)}")
    if outcome.exit_code == 0 and case.faults.get("fail_rate") == 1.0 and deleting:
        problems.append("exit 0 though no delete request could be accepted")
    return problems
