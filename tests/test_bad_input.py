"""Bad input, as real taps and tables produce it, through the CLI: every case a clear outcome.

One table: each case is the raw input lines (and settings) a user would have, and what they
see: the exit status, the one ERROR line (never a traceback), the dead letter, the STATE
written, and which profiles reached Userpilot.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from singer_io import Run, dead_letters, run_in_process, run_target

if TYPE_CHECKING:
    from collections.abc import Callable

    from target_userpilot.emulator import Emulator

TOKEN = "test-token"  # noqa: S105 - the emulator's
ERROR_MARK = "| ERROR "


def line(obj: dict[str, Any]) -> str:
    return json.dumps(obj)


def schema(stream: str, properties: dict[str, Any], keys: list[str]) -> str:
    body = {"type": "object", "properties": properties}
    return line({"type": "SCHEMA", "stream": stream, "schema": body, "key_properties": keys})


def rec(stream: str, raw: str) -> str:
    """A RECORD line with the record as raw JSON text (for numbers JSON libraries would round)."""
    return f'{{"type": "RECORD", "stream": "{stream}", "record": {raw}}}'


def state(raw: str) -> str:
    return f'{{"type": "STATE", "value": {raw}}}'


USERS = schema("users", {"id": {"type": "integer"}, "email": {}, "v": {}}, ["id"])
# No type on the id: a number of any size reaches the id check itself.
USERS_ANY_ID = schema("users", {"id": {}, "email": {}}, ["id"])
GOOD = [rec("users", '{"id": 1, "email": "a@x.io"}'), rec("users", '{"id": 2, "email": "b@x.io"}')]
# A STATE after the good records: released once their job completed.
DONE = state('{"done": true}')


# name, what the BATCH message holds besides its type and stream, the sentence for its line.
BATCH_REFUSALS: list[tuple[str, dict[str, Any], str]] = [
    (
        "an s3:// manifest",
        {
            "encoding": {"format": "jsonl"},
            "manifest": ["s3://key:s3cr3t@bucket/u.jsonl"],
        },
        (
            "has a BATCH manifest 's3://key:***@bucket/u.jsonl' that is not supported: "
            "only local files (file:// or an absolute path) are read"
        ),
    ),
    (
        "an https:// manifest",
        {"encoding": {"format": "jsonl"}, "manifest": ["https://example.com/u.jsonl"]},
        (
            "has a BATCH manifest 'https://example.com/u.jsonl' that is not supported: "
            "only local files (file:// or an absolute path) are read"
        ),
    ),
    (
        "a relative path",
        {"encoding": {"format": "jsonl"}, "manifest": ["out/u.jsonl"]},
        (
            "has a BATCH manifest 'out/u.jsonl' that is not supported: a relative path "
            "(the tap's folder is not known here)"
        ),
    ),
    (
        "a manifest entry that is not a string",
        {"encoding": {"format": "jsonl"}, "manifest": [{"path": "/u.jsonl"}]},
        "has a BATCH manifest entry that is not a string (dict)",
    ),
    (
        "an encoding without format",
        {"encoding": {"compression": "gzip"}, "manifest": ["/u.jsonl"]},
        "is a BATCH message in format None: only 'jsonl' is read",
    ),
    (
        "parquet files",
        {"encoding": {"format": "parquet"}, "manifest": ["/u.parquet"]},
        "is a BATCH message in format 'parquet': only 'jsonl' is read",
    ),
    (
        "no manifest",
        {"encoding": {"format": "jsonl"}},
        "is a BATCH message without 'manifest'",
    ),
]


@dataclass(frozen=True)
class Case:
    """One input and everything a user would notice about its run."""

    name: str
    lines: list[str]
    settings: dict[str, Any] = field(default_factory=dict)
    exit_status: int = 0
    error: str | None = None  # the one ERROR line's message; `{tmp}` is the test's folder
    letter_reason: str | None = None  # a piece of the one dead letter's reason
    letter_record: dict[str, Any] | None = None  # its record, read back with Decimals
    letter_text: bytes | None = None  # a piece of its exact text
    states: list[str] = field(default_factory=list)  # the STATE lines written, exactly
    users: set[str] | None = None  # user ids in Userpilot afterwards
    companies: set[str] | None = None
    log: str | None = None  # a piece of the log
    setup: Callable[[Path], None] | None = None  # prepares files before the run
    max_file_bytes: int | None = None


def a_file(relative: str, text: str = "not a folder") -> Callable[[Path], None]:
    def make(tmp: Path) -> None:
        (tmp / relative).write_text(text)

    return make


def a_folder(relative: str) -> Callable[[Path], None]:
    def make(tmp: Path) -> None:
        (tmp / relative).mkdir(parents=True)

    return make


def unusable(
    name: str, settings: dict[str, Any], setup: Callable[[Path], None] | None, error: str
) -> Case:
    """A path setting the run cannot use: it stops at start, before any input."""
    return Case(
        name,
        [USERS, *GOOD, DONE],
        settings=settings,
        setup=setup,
        exit_status=1,
        error=f"{error}; set it to a usable path",
    )


def rejected(
    name: str, stream_and_record: tuple[str, str], letter: tuple[str, dict[str, Any], bytes]
) -> Case:
    """One bad record among good ones: a dead letter, and the run goes on to its STATE."""
    schema_line, raw = stream_and_record
    reason, record, text = letter
    return Case(
        name,
        [schema_line, *GOOD, rec("users", raw), DONE],
        letter_reason=reason,
        letter_record=record,
        letter_text=text,
        states=['{"done":true}'],
        users={"1", "2"},
    )


def unreadable(name: str, lines: list[str], error: str) -> Case:
    """Input the reader cannot act on: exit 1, no STATE, one sentence naming the line."""
    return Case(name, lines, exit_status=1, error=error)


CASES = [
    # --- 1. ids: the tap's declared key wins --------------------------------------------------
    Case(
        "companies keyed by id with an unused, nullable company_id column",
        [
            schema(
                "companies",
                {"id": {"type": "integer"}, "company_id": {"type": ["string", "null"]}},
                ["id"],
            ),
            rec("companies", '{"id": 1, "company_id": null}'),
            rec("companies", '{"id": 2, "company_id": null}'),
            DONE,
        ],
        states=['{"done":true}'],
        companies={"1", "2"},
        log="Stream 'companies': ids come from the key property 'id', not from the 'company_id' "
        "property the stream also has; set `company_id_property: company_id` to use that one "
        "instead.",
    ),
    Case(
        "users keyed by id with an empty user_id column",
        [
            schema("users", {"id": {"type": "integer"}, "user_id": {}}, ["id"]),
            rec("users", '{"id": 1, "user_id": ""}'),
            rec("users", '{"id": 2, "user_id": ""}'),
            DONE,
        ],
        states=['{"done":true}'],
        users={"1", "2"},
        log="set `user_id_property: user_id` to use that one instead",
    ),
    Case(
        "company_id_property configured wins over the key",
        [
            schema("companies", {"id": {"type": "integer"}, "company_id": {}}, ["id"]),
            rec("companies", '{"id": 1, "company_id": "acme"}'),
            DONE,
        ],
        settings={"company_id_property": "company_id"},
        states=['{"done":true}'],
        companies={"acme"},
    ),
    Case(
        "a user without a company goes out without company_id",
        [
            schema("users", {"id": {"type": "integer"}, "company_id": {}}, ["id"]),
            rec("users", '{"id": 1, "company_id": null}'),
            rec("users", '{"id": 2, "company_id": ""}'),
            rec("users", '{"id": 3}'),
            DONE,
        ],
        states=['{"done":true}'],
        users={"1", "2", "3"},
    ),
    Case(
        "_sdc_ fields never become metadata, with add_record_metadata on",
        [
            schema("users", {"id": {"type": "integer"}, "_sdc_source": {}}, ["id"]),
            rec("users", '{"id": 1, "_sdc_source": "tap", "_sdc_deleted_at": null}'),
            DONE,
        ],
        settings={"add_record_metadata": True},
        states=['{"done":true}'],
        users={"1"},
    ),
    # --- 3, 4, 5. dead letters hold anything the reader accepted -----------------------------
    rejected(
        "a lone surrogate in a rejected record",
        (USERS, '{"email": "k\\ud800"}'),
        ("lacks key properties ['id']", {"email": "k\ud800"}, b'"email":"k\\ud800"'),
    ),
    rejected(
        "1e5000 in a rejected record",
        (USERS, '{"v": 1e5000}'),
        ("lacks key properties ['id']", {"v": Decimal("1e5000")}, b'"v":1E+5000'),
    ),
    rejected(
        "1e999999999 in a rejected record, written at once",
        (USERS, '{"v": 1e999999999}'),
        ("lacks key properties ['id']", {"v": Decimal("1e999999999")}, b'"v":1E+999999999'),
    ),
    rejected(
        "1e999999999 as an id is rejected before its text is built",
        (USERS_ANY_ID, '{"id": 1e999999999}'),
        (
            "invalid user id: property 'id' is longer than 1,000 characters as text",
            {"id": Decimal("1e999999999")},
            b'"id":1E+999999999',
        ),
    ),
    rejected(
        "1e999999999 under a multipleOf schema (a tap-postgres numeric)",
        (
            schema("users", {"id": {"type": "integer"}, "v": {"multipleOf": 0.01}}, ["id"]),
            '{"id": 3, "v": 1e999999999}',
        ),
        (
            "has a number the stream's JSON schema cannot check",
            {"id": 3, "v": Decimal("1e999999999")},
            b'"v":1E+999999999',
        ),
    ),
    rejected(
        "a number where a date-time belongs",
        (
            schema(
                "users",
                {"id": {"type": "integer"}, "t": {"type": "string", "format": "date-time"}},
                ["id"],
            ),
            '{"id": 3, "t": 5}',
        ),
        ("5 is not of type 'string'", {"id": 3, "t": 5}, b'"t":5'),
    ),
    Case(
        "a number where a date-time belongs, validation off",
        [
            schema(
                "users",
                {"id": {"type": "integer"}, "t": {"type": "string", "format": "date-time"}},
                ["id"],
            ),
            *GOOD,
            rec("users", '{"id": 3, "t": 5, "u": "x"}'),
            DONE,
        ],
        settings={"validate_records": False},
        letter_reason="has a date that cannot be parsed",
        letter_record={"id": 3, "t": 5, "u": "x"},
        states=['{"done":true}'],
        users={"1", "2"},
    ),
    rejected(
        "a string id of 1,001 characters",
        (USERS_ANY_ID, '{"id": "' + "u" * 1001 + '"}'),
        ("Userpilot ids are short", {"id": "u" * 1001}, b'"id":"uuu'),
    ),
    rejected(
        "Decimals in a rejected record stay exact",
        (USERS, '{"v": 12345678901234567890.123, "w": 0.1, "x": 1.10}'),
        (
            "lacks key properties ['id']",
            {"v": Decimal("12345678901234567890.123"), "w": Decimal("0.1"), "x": Decimal("1.1")},
            b'"v":12345678901234567890.123,"w":0.1',
        ),
    ),
    # --- STATE writing never fails on a value the tap sent -----------------------------------
    Case(
        "a lone surrogate in a STATE value",
        [USERS, *GOOD, state('{"cursor": "k\\ud800"}')],
        states=['{"cursor":"k\\ud800"}'],
        users={"1", "2"},
    ),
    Case(
        "huge numbers and Decimals in a STATE value",
        [USERS, *GOOD, state('{"a": 1e5000, "b": 1e999999999, "c": 0.30000000000000000001}')],
        states=['{"a":1E+5000,"b":1E+999999999,"c":0.30000000000000000001}'],
        users={"1", "2"},
    ),
    # --- 6. paths: one line naming the setting and the path, at start -------------------------
    unusable(
        "batch_dir under a regular file",
        {"batch_dir": "{tmp}/taken/batches"},
        a_file("taken"),
        "`batch_dir` is {tmp}/taken/batches, which is under a file, not a folder ({tmp}/taken is)",
    ),
    unusable(
        "dead_letter_path under a regular file",
        {"dead_letter_path": "{tmp}/taken/dead.ndjson"},
        a_file("taken"),
        "`dead_letter_path` is {tmp}/taken/dead.ndjson, which is under a file, not a "
        "folder ({tmp}/taken is)",
    ),
    unusable(
        "dead_letter_path is a folder",
        {"dead_letter_path": "{tmp}/letters"},
        a_folder("letters"),
        "`dead_letter_path` is {tmp}/letters, which is a folder, not a file",
    ),
    unusable(
        "dry_run_dir under a regular file",
        {"dry_run": True, "dry_run_dir": "{tmp}/taken/out"},
        a_file("taken"),
        "`dry_run_dir` is {tmp}/taken/out, which is under a file, not a folder ({tmp}/taken is)",
    ),
    unusable(
        "fingerprint store path that is a folder",
        {"send_only_changes": True, "fingerprint_store_path": "{tmp}/store"},
        a_folder("store"),
        "`fingerprint_store_path` is {tmp}/store, which is a folder, not a file",
    ),
    unusable(
        "fingerprint store path under /proc",
        {"send_only_changes": True, "fingerprint_store_path": "/proc/userpilot/fp.db"},
        None,
        "`fingerprint_store_path` is /proc/userpilot/fp.db, which cannot be written in "
        "/proc (No such file or directory)",
    ),
    Case(
        "a full disk under the dead-letter file",
        [USERS, *GOOD, rec("users", '{"email": "' + "x" * 100_000 + '"}'), DONE],
        max_file_bytes=65_536,
        exit_status=1,
        error="cannot write the dead-letter file {tmp}/dead.ndjson (setting `dead_letter_path`): "
        "File too large",
    ),
    # --- 8. input the SDK's reader rejects: one ERROR line naming the input line --------------
    unreadable(
        "malformed JSON",
        [USERS, GOOD[0], '{"type": "RECORD", "stream"', DONE],
        "input line 3 is not valid JSON (Expecting ':' delimiter at character 29)",
    ),
    unreadable(
        "a RECORD before its SCHEMA",
        [GOOD[0], USERS, DONE],
        "input line 1 is a RECORD of stream 'users' before any SCHEMA for it",
    ),
    unreadable(
        "an unknown message type",
        [USERS, GOOD[0], '{"type": "FOO"}', DONE],
        "input line 3 has the unknown message type 'FOO' (Singer's are RECORD, SCHEMA, "
        "STATE, ACTIVATE_VERSION, BATCH)",
    ),
    unreadable(
        "a SCHEMA without properties",
        ['{"type": "SCHEMA", "stream": "users", "schema": {"type": "object"}}', GOOD[0]],
        "input line 1 is a SCHEMA message whose schema has no 'properties' object",
    ),
    unreadable(
        "a SCHEMA whose properties are a list",
        ['{"type": "SCHEMA", "stream": "users", "schema": {"properties": []}}', GOOD[0]],
        "input line 1 is a SCHEMA message whose schema has no 'properties' object",
    ),
    unreadable(
        "a SCHEMA that is not a valid JSON schema",
        [schema("users", {"id": {"type": "foo"}}, ["id"]), GOOD[0]],
        "input line 1 is a SCHEMA message whose JSON schema is invalid (Schema Validation Error: "
        "'foo' is not valid under any of the given schemas)",
    ),
    unreadable(
        "a record that is not an object",
        [USERS, GOOD[0], rec("users", "[1, 2]"), DONE],
        "input line 3 is a RECORD message whose 'record' is not an object",
    ),
    unreadable(
        "a line that is not an object",
        [USERS, "[1, 2]", DONE],
        "input line 2 is a JSON array, not an object as every Singer message is",
    ),
    unreadable(
        "nesting 5,000 deep",
        [USERS, GOOD[0], rec("users", '{"id": 3, "v": ' + "[" * 5000 + "]" * 5000 + "}"), DONE],
        "input line 3 is nested too deeply to read (objects or arrays about 1,000 levels deep)",
    ),
    unreadable(
        "an integer of 4,400 digits",
        [USERS, GOOD[0], rec("users", '{"id": 3, "v": ' + "9" * 4400 + "}"), DONE],
        "input line 3 holds an integer of more than 4,300 digits, which Python does not read",
    ),
    Case(
        "a BATCH message whose file is missing",
        [
            USERS,
            line(
                {
                    "type": "BATCH",
                    "stream": "users",
                    "encoding": {"format": "jsonl", "compression": "none"},
                    "manifest": ["file:///nonexistent/users-1.jsonl"],
                }
            ),
            DONE,
        ],
        exit_status=1,
        error="input line 2 is a BATCH message whose file cannot be read ([Errno 2] No such file "
        "or directory: '/nonexistent/users-1.jsonl')",
    ),
    Case(
        "a BATCH message whose file holds malformed JSON",
        [
            USERS,
            line(
                {
                    "type": "BATCH",
                    "stream": "users",
                    "encoding": {"format": "jsonl", "compression": "none"},
                    "manifest": ["file://{tmp}/users-1.jsonl"],
                }
            ),
            DONE,
        ],
        setup=a_file("users-1.jsonl", '{"id": 1}\n{"id": \n'),
        exit_status=1,
        error="input line 2 is a BATCH message whose file has a line that is not valid JSON "
        "(Expecting value at character 9)",
    ),
    *(
        Case(
            f"a BATCH message with {name}",
            [USERS, line({"type": "BATCH", "stream": "users", **body}), DONE],
            exit_status=1,
            error=f"input line 2 {problem}",
        )
        for name, body, problem in BATCH_REFUSALS
    ),
    Case(
        "a BATCH message naming a local file by its absolute path loads it",
        [
            USERS,
            line(
                {
                    "type": "BATCH",
                    "stream": "users",
                    "encoding": {"format": "jsonl"},
                    "manifest": ["{tmp}/users-1.jsonl"],
                }
            ),
            DONE,
        ],
        setup=a_file("users-1.jsonl", '{"id": 1}\n\n{"id": 2}\n'),
        states=['{"done":true}'],
        users={"1", "2"},
    ),
    Case(
        "a UTF-8 byte order mark at the start is skipped",
        ["\ufeff" + USERS, *GOOD, DONE],
        states=['{"done":true}'],
        users={"1", "2"},
    ),
    Case(
        "blank and whitespace-only lines are skipped",
        [USERS, "", "   \t", GOOD[0], " ", GOOD[1], DONE],
        states=['{"done":true}'],
        users={"1", "2"},
    ),
]


# Every case runs in process (the CLI's entry point on the same input bytes, from a file
# descriptor as from a pipe); these also through the real CLI, one of each kind: stdin a pipe,
# the process's exit status and stderr. A full disk needs the process's file-size limit.
THROUGH_THE_CLI = {
    "a lone surrogate in a rejected record",
    "a lone surrogate in a STATE value",
    "batch_dir under a regular file",
    "malformed JSON",
    "nesting 5,000 deep",
    "a BATCH message with an s3:// manifest",
    "a UTF-8 byte order mark at the start is skipped",
}


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_has_a_clear_outcome(case: Case, emulator: Emulator, tmp_path: Path) -> None:
    check_outcome(case, emulator, tmp_path, cli=case.max_file_bytes is not None)


@pytest.mark.parametrize(
    "case",
    [case for case in CASES if case.name in THROUGH_THE_CLI],
    ids=lambda case: case.name,
)
def test_bad_input_has_a_clear_outcome_through_the_cli(
    case: Case, emulator: Emulator, tmp_path: Path
) -> None:
    check_outcome(case, emulator, tmp_path, cli=True)


def check_outcome(case: Case, emulator: Emulator, tmp_path: Path, *, cli: bool) -> None:
    """Run `case` through the CLI (or in process) and check all a user would notice."""

    def at(text: str) -> str:
        return text.replace("{tmp}", str(tmp_path))

    if case.setup is not None:
        case.setup(tmp_path)
    dead = tmp_path / "dead.ndjson"
    config = {
        "api_key": TOKEN,
        "api_url": emulator.url,
        "batch_dir": str(tmp_path / "batches"),
        "dead_letter_path": str(dead),
        "dry_run_dir": str(tmp_path / "dry-run"),
        **{
            key: at(value) if isinstance(value, str) else value
            for key, value in case.settings.items()
        },
    }
    lines = [at(text) for text in case.lines]
    if cli:
        run = run_target(config, lines, tmp_path, max_file_bytes=case.max_file_bytes, timeout=120)
    else:
        run = run_in_process(config, lines, tmp_path)
    assert_clear(case, run, emulator, dead, at)


def assert_clear(
    case: Case, run: Run, emulator: Emulator, dead: Path, at: Callable[[str], str]
) -> None:
    """The exit status, the one ERROR line, STATE, the dead letter and Userpilot: as `case` says."""
    assert run.returncode == case.exit_status, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    errors = [text for text in run.stderr.splitlines() if ERROR_MARK in text]
    if case.error is None:
        assert errors == []
    else:
        assert len(errors) == 1, errors
        assert errors[0].endswith(f"target-userpilot failed: {at(case.error)}"), errors[0]
    assert run.stdout_lines == case.states
    if case.letter_reason is not None:
        raw = dead.read_bytes()
        (letter,) = dead_letters(dead, parse_float=Decimal)
        assert case.letter_reason in letter["reason"]
        assert letter["record"] == case.letter_record
        assert case.letter_text is None or case.letter_text in raw
    elif case.max_file_bytes is None:  # a full disk leaves behind what it could write
        assert not dead.exists()
    if case.users is not None:
        assert set(emulator.users) == case.users
    if case.companies is not None:
        assert set(emulator.companies) == case.companies
    for profile in [*emulator.users.values(), *emulator.companies.values()]:
        assert not [key for key in profile["metadata"] if key.startswith("_sdc_")]
    if case.log is not None:
        assert case.log in run.stderr


def test_a_traceback_only_at_debug(emulator: Emulator, tmp_path: Path) -> None:
    config = {"api_key": TOKEN, "api_url": emulator.url, "batch_dir": str(tmp_path / "b")}
    lines = [USERS, '{"type": "RECORD", "stream"']
    run = run_target(config, lines, tmp_path, env={"LOGLEVEL": "DEBUG"})
    assert run.returncode == 1
    assert "target-userpilot failed: input line 2 is not valid JSON" in run.stderr
    assert "Traceback" in run.stderr
    assert "json.decoder.JSONDecodeError" in run.stderr
