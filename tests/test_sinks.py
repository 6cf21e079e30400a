"""Awkward tap records through the target (in process; the `fail` policy through the real CLI):
the exact profiles sent, the exact dead letters."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from singer_io import (
    dead_letters,
    dry_run_output,
    record,
    run_in_process,
    run_target,
    schema,
    state,
)

from target_userpilot.run.deadletters import DRY_RUN_LETTERS

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from target_userpilot.emulator import Emulator

TOKEN = "test-token"  # noqa: S105 - the emulator's
BIG = "x" * 1_000_000

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {},
        "company_id": {},
        "ts": {"type": ["string", "null"], "format": "date-time"},
        "day": {"type": ["string", "null"], "format": "date"},
        "amount": {"type": ["number", "null"]},
        "flag": {},
        "name": {},
        "meta": {},
    },
}


@dataclass(frozen=True)
class Case:
    """One awkward input: a raw RECORD line, and the profile line or dead-letter reason."""

    name: str
    raw: str  # the record object as JSON text (so NaN and exact decimals can be written)
    line: str | None = None  # the exact NDJSON line sent, when the record is valid
    reason: str | None = None  # a piece of the dead-letter reason, when it is not


CASES = [
    Case("integer id", '{"id": 42}', '{"user_id":"42","metadata":{}}'),
    Case("float-looking id", '{"id": 43.0}', '{"user_id":"43","metadata":{}}'),
    Case("string id kept as is", '{"id": "u-44"}', '{"user_id":"u-44","metadata":{}}'),
    Case("unicode id", '{"id": "üser-ß-45"}', '{"user_id":"üser-ß-45","metadata":{}}'),
    Case(
        "unicode and emoji keys",
        '{"id": 46, "名前": "花子", "😀": 1}',
        '{"user_id":"46","metadata":{"名前":"花子","😀":1}}',
    ),
    Case(
        "keys with dots and spaces",
        '{"id": 47, "a.b": 1, "first name": "Ada"}',
        '{"user_id":"47","metadata":{"a.b":1,"first name":"Ada"}}',
    ),
    Case(
        "deep nesting flattened",
        '{"id": 48, "meta": {"a": {"b": {"c": {"d": 1}}}}}',
        '{"user_id":"48","metadata":{"meta__a__b__c__d":1}}',
    ),
    Case("empty object", '{"id": 49, "meta": {}}', '{"user_id":"49","metadata":{}}'),
    Case(
        "array of objects as JSON text",
        '{"id": 50, "items": [{"x": 1}, {"y": [2]}]}',
        '{"user_id":"50","metadata":{"items":"[{\\"x\\":1},{\\"y\\":[2]}]"}}',
    ),
    Case(
        "1 MB string",
        f'{{"id": 51, "name": "{BIG}"}}',
        f'{{"user_id":"51","metadata":{{"name":"{BIG}"}}}}',
    ),
    Case(
        "date-time with zone to UTC",
        '{"id": 52, "ts": "2025-02-01T10:20:30+02:00"}',
        '{"user_id":"52","metadata":{"ts":"2025-02-01T08:20:30Z"}}',
    ),
    Case(
        "date-time without zone taken as UTC",
        '{"id": 53, "ts": "2025-02-01T10:20:30.250000"}',
        '{"user_id":"53","metadata":{"ts":"2025-02-01T10:20:30.250000Z"}}',
    ),
    Case(
        "date",
        '{"id": 54, "day": "2025-02-01"}',
        '{"user_id":"54","metadata":{"day":"2025-02-01"}}',
    ),
    Case(
        "nested date-like strings kept",
        '{"id": 55, "meta": {"when": "2025-01-01T00:00:00+02:00"}}',
        '{"user_id":"55","metadata":{"meta__when":"2025-01-01T00:00:00+02:00"}}',
    ),
    Case("decimal", '{"id": 56, "amount": 0.1}', '{"user_id":"56","metadata":{"amount":0.1}}'),
    Case(
        "long decimal kept exact",
        '{"id": 57, "amount": 12345678901234567890.123456789}',
        '{"user_id":"57","metadata":{"amount":12345678901234567890.123456789}}',
    ),
    Case(
        "integral decimal", '{"id": 58, "amount": 5.0}', '{"user_id":"58","metadata":{"amount":5}}'
    ),
    Case("boolean", '{"id": 59, "flag": true}', '{"user_id":"59","metadata":{"flag":true}}'),
    Case(
        "boolean as string stays a string",
        '{"id": 60, "flag": "true"}',
        '{"user_id":"60","metadata":{"flag":"true"}}',
    ),
    Case("null sent", '{"id": 61, "name": null}', '{"user_id":"61","metadata":{"name":null}}'),
    Case(
        "company association from an integer",
        '{"id": 62, "company_id": 7}',
        '{"user_id":"62","company_id":"7","metadata":{}}',
    ),
    Case("missing id", '{"name": "nobody"}', reason="missing user id"),
    Case("empty id", '{"id": ""}', reason="user id"),
    Case("null id", '{"id": null}', reason="user id"),
    Case("boolean id", '{"id": true}', reason="user id"),
    Case("object id", '{"id": {"k": 1}}', reason="user id"),
    Case("NaN in metadata", '{"id": 63, "amount": NaN}', reason="NaN"),
    Case("Infinity in metadata", '{"id": 64, "meta": {"x": Infinity}}', reason="Infinity"),
    Case("fails the tap's schema", '{"id": 65, "amount": "lots"}', reason="JSON schema"),
    Case("unparseable date-time", '{"id": 66, "ts": "not-a-date"}', reason="date"),
    Case(
        "empty company id: no association sent",
        '{"id": 67, "company_id": ""}',
        '{"user_id":"67","metadata":{}}',
    ),
]
# Duplicates: within one batch they merge key by key (later wins); across batches the later
# line follows in a later job.
DUPLICATES = [
    '{"id": 70, "name": "first", "flag": 1}',
    '{"id": 70, "name": "second"}',
]
MERGED_70 = '{"user_id":"70","metadata":{"name":"second","flag":1}}'


def messages() -> list[dict[str, Any] | str]:
    out: list[dict[str, Any] | str] = [schema("users", SCHEMA, key=None)]
    out += [f'{{"type":"RECORD","stream":"users","record":{case.raw}}}' for case in CASES]
    out += [f'{{"type":"RECORD","stream":"users","record":{raw}}}' for raw in DUPLICATES]
    # A later update of id 42, after its first batch has gone.
    out += [record("users", {"id": 42, "name": "later"}), state({"done": True})]
    return out


def positions() -> dict[str, int]:
    return {case.name: i for i, case in enumerate(CASES, start=1)}


def test_dry_run_writes_the_exact_lines_and_uploads_nothing(
    emulator: Emulator, tmp_path: Path
) -> None:
    cfg = {
        "api_key": TOKEN,
        "api_url": emulator.url,
        "dry_run": True,
        "dry_run_dir": str(tmp_path / "dry"),
        "batch_dir": str(tmp_path / "batches"),
        "dead_letter_path": str(tmp_path / "dead.ndjson"),
        "max_batch_rows": 1_000,
    }
    run = run_in_process(cfg, messages(), tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert emulator.requests == []
    assert run.stdout_lines == [], "a dry run moves no bookmark"
    lines = [
        line
        for path in sorted(dry_run_output(tmp_path / "dry").glob("userpilot-*"))
        for line in path.read_text(encoding="utf-8").splitlines()
    ]
    # The invalid records' letters are beside the dry run's files, not in the real file.
    invalid = [case for case in CASES if case.reason is not None]
    assert len(dead_letters(dry_run_output(tmp_path / "dry") / DRY_RUN_LETTERS)) == len(invalid)
    assert not (tmp_path / "dead.ndjson").exists()
    by_id = {json.loads(line)["user_id"]: line for line in lines}
    for case in CASES:
        if case.line is not None and case.name != "integer id":  # merged with its update
            uid = json.loads(case.line)["user_id"]
            assert by_id[uid] == case.line, case.name
    assert by_id["70"] == MERGED_70
    assert by_id["42"] == '{"user_id":"42","metadata":{"name":"later"}}'
    valid = sum(case.line is not None for case in CASES)
    assert len(lines) == valid + 1  # id 70's two records merged; id 42's update merged
    assert f"would send {valid + 1} users and 0 companies" in run.stderr
    assert "2 duplicates merged" in run.stderr


def test_every_good_record_arrives_and_every_bad_one_is_dead_lettered(
    make_emulator: Callable[..., Emulator], tmp_path: Path
) -> None:
    emu = make_emulator(token=TOKEN, rows_per_minute=float("inf"))
    dead = tmp_path / "dead.ndjson"
    cfg = {
        "api_key": TOKEN,
        "api_url": emu.url,
        "batch_dir": str(tmp_path / "batches"),
        "dead_letter_path": str(dead),
        "max_batch_rows": 10,  # several jobs, so id 42's update lands in a later one
    }
    run = run_in_process(cfg, messages(), tmp_path, emulator=emu)
    assert run.returncode == 0, run.stderr[-2000:]
    for case in CASES:
        if case.line is not None:
            expected = json.loads(case.line)
            got = emu.users[expected["user_id"]]
            if case.name == "integer id":
                expected["metadata"]["name"] = "later"
            assert got == expected, case.name
    assert emu.users["70"] == json.loads(MERGED_70)
    letters = dead_letters(dead)
    invalid = [case for case in CASES if case.reason is not None]
    assert [letter["position"] for letter in letters] == [positions()[c.name] for c in invalid]
    for letter, case in zip(letters, invalid, strict=True):
        assert case.reason in letter["reason"], (case.name, letter["reason"])
        assert letter["stream"] == "users"
        assert "record" in letter
    assert f"{len(invalid)} invalid" in run.stderr
    assert str(dead) in run.stderr
    assert [s.value for s in run.states] == [{"done": True}]


def test_fail_policy_stops_at_the_first_bad_record(emulator: Emulator, tmp_path: Path) -> None:
    cfg = {
        "api_key": TOKEN,
        "api_url": emulator.url,
        "on_invalid_record": "fail",
        "batch_dir": str(tmp_path / "batches"),
    }
    msgs = [schema("users", SCHEMA, key=None), record("users", {"name": "no id"}), state({"n": 1})]
    run = run_target(cfg, msgs, tmp_path)
    assert run.returncode == 1
    assert "record 1 of stream 'users'" in run.stderr
    assert "on_invalid_record" in run.stderr
    assert run.states == []


def test_skip_policy_counts_without_a_file(emulator: Emulator, tmp_path: Path) -> None:
    dead = tmp_path / "dead.ndjson"
    cfg = {
        "api_key": TOKEN,
        "api_url": emulator.url,
        "on_invalid_record": "skip",
        "dead_letter_path": str(dead),
        "batch_dir": str(tmp_path / "batches"),
    }
    msgs = [
        schema("users", SCHEMA, key=None),
        record("users", {"name": "no id"}),
        record("users", {"id": 1}),
        state({"n": 2}),
    ]
    run = run_in_process(cfg, msgs, tmp_path, emulator=emulator)
    assert run.returncode == 0, run.stderr
    assert not dead.exists()
    assert "1 skipped" in run.stderr
    assert set(emulator.users) == {"1"}


def test_rows_userpilot_rejects_become_dead_letters(
    make_emulator: Callable[..., Emulator], tmp_path: Path
) -> None:
    # Per-row detail of rejected rows: only the bulk pages' shapes (`legacy`) carry it.
    emu = make_emulator(
        token=TOKEN, rows_per_minute=float("inf"), reject_ids=frozenset({"2"}), profile="legacy"
    )
    dead = tmp_path / "dead.ndjson"
    cfg = {
        "api_key": TOKEN,
        "api_url": emu.url,
        "dead_letter_path": str(dead),
        "batch_dir": str(tmp_path / "batches"),
    }
    msgs = [schema("users", SCHEMA, key=None)]
    msgs += [record("users", {"id": i, "name": f"n{i}"}) for i in (1, 2, 3)]
    msgs.append(state({"n": 3}))
    run = run_in_process(cfg, msgs, tmp_path, emulator=emu)
    assert run.returncode == 0, run.stderr
    assert set(emu.users) == {"1", "3"}
    [letter] = dead_letters(dead)
    assert letter["position"] == 2
    assert letter["profile"] == {"user_id": "2", "metadata": {"name": "n2"}}
    assert "rejected by Userpilot" in letter["reason"]
    assert letter["job_id"] == emu.jobs[0].job_id
    assert "1 rejected by Userpilot" in run.stderr
    assert [s.value for s in run.states] == [{"n": 3}]


def test_stream_maps_rename_compute_ids_and_drop_properties(
    emulator: Emulator, tmp_path: Path
) -> None:
    cfg = {
        "api_key": TOKEN,
        "api_url": emulator.url,
        "batch_dir": str(tmp_path / "batches"),
        "stream_maps": {
            "contacts": {
                "__alias__": "users",
                "user_id": "tenant + '-' + str(id)",
                # The tap's key (`id`) would win over the computed `user_id` otherwise.
                "__key_properties__": ["user_id"],
                "internal_note": None,
            },
        },
    }
    contact_schema = {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "tenant": {"type": "string"},
            "internal_note": {"type": "string"},
        },
    }
    msgs = [
        schema("contacts", contact_schema),
        record("contacts", {"id": 5, "tenant": "acme", "internal_note": "secret"}),
        state({"n": 1}),
    ]
    run = run_in_process(cfg, msgs, tmp_path, emulator=emulator)
    assert run.returncode == 0, run.stderr
    assert emulator.users == {
        "acme-5": {"user_id": "acme-5", "metadata": {"id": 5, "tenant": "acme"}},
    }
