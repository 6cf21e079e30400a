"""A record a stream map cannot be evaluated on follows `on_invalid_record` (mapguard.py),
through the CLI's entry point in process."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from singer_io import USER_SCHEMA, dead_letters, record, run_in_process, schema, state, user
from test_events import EVENT_SCHEMA, FAST, paid
from test_target import config_for

if TYPE_CHECKING:
    from pathlib import Path

    from target_userpilot.emulator import Emulator

ACCOUNTS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "region": {"type": ["string", "null"]},
        "plan": {"type": ["string", "null"]},
    },
}
EU_ONLY = {"users": {"__filter__": "record['region'] == 'eu'"}}


def account(pid: str, **fields: Any) -> dict[str, Any]:
    return record("users", {"id": pid, **fields})


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "| ERROR" in line]


def test_a_filter_on_a_field_a_record_lacks_dead_letters_that_record(
    emulator: Emulator, tmp_path: Path
) -> None:
    messages = [
        schema("users", ACCOUNTS),
        account("u1", region="eu"),
        account("u2", region="us"),  # the filter leaves it out
        account("u3"),  # no region: the filter cannot tell
        account("u4", region="eu"),
        state({"done": True}),
    ]
    run = run_in_process(
        config_for(emulator, tmp_path, stream_maps=EU_ONLY), messages, tmp_path, emulator=emulator
    )

    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    assert sorted(emulator.users) == ["u1", "u4"]
    (letter,) = dead_letters(tmp_path / "dead-letters.ndjson")
    assert letter["record"] == {"id": "u3"}
    assert letter["stream"] == "users"
    assert "stream map for 'users'" in letter["reason"]
    assert "`__filter__` raised KeyError: 'region'" in letter["reason"]
    assert "record.get(" in letter["reason"]
    assert [s.value for s in run.states] == [{"done": True}]


def test_a_property_map_that_raises_on_some_records_loads_the_others(
    emulator: Emulator, tmp_path: Path
) -> None:
    # A stream split in two by maps: the one that fails leaves the other's copy loaded.
    maps = {
        "users": {"plan_name": "plan.upper()"},
        "companies": {"__source__": "users", "id": "id", "__else__": None},
    }
    messages = [
        schema("users", ACCOUNTS),
        account("u1", plan="pro"),
        account("u2", plan=None),
        account("u3", plan="free"),
        state({"done": True}),
    ]
    run = run_in_process(
        config_for(emulator, tmp_path, stream_maps=maps), messages, tmp_path, emulator=emulator
    )

    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    assert {pid: u["metadata"]["plan_name"] for pid, u in emulator.users.items()} == {
        "u1": "PRO",
        "u3": "FREE",
    }
    assert sorted(emulator.companies) == ["u1", "u2", "u3"]
    (letter,) = dead_letters(tmp_path / "dead-letters.ndjson")
    assert letter["record"]["id"] == "u2"
    assert "stream map for 'users'" in letter["reason"]
    assert "property expressions raised" in letter["reason"]
    assert "1 invalid" in run.stderr
    assert [s.value for s in run.states] == [{"done": True}]


def test_under_the_fail_policy_a_map_failure_is_one_error_line(
    emulator: Emulator, tmp_path: Path
) -> None:
    messages = [
        schema("users", ACCOUNTS),
        account("u1", region="eu"),
        state({"n": 1}),
        account("u2"),
        account("u3", region="eu"),
        state({"n": 3}),
    ]
    cfg = config_for(emulator, tmp_path, stream_maps=EU_ONLY, on_invalid_record="fail")
    run = run_in_process(cfg, messages, tmp_path, emulator=emulator)

    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    (error,) = error_lines(run.stderr)
    assert "record 2 of stream 'users'" in error
    assert "KeyError" in error
    assert "on_invalid_record" in error
    assert {"n": 3} not in [s.value for s in run.states]
    assert "u3" not in emulator.users


def test_an_expression_that_fails_on_every_record_stops_the_run_in_one_line(
    emulator: Emulator, tmp_path: Path
) -> None:
    typo = {"users": {"__filter__": "regoin == 'eu'"}}  # a name no record has
    messages = [
        schema("users", ACCOUNTS),
        *(account(f"u{i}", region="eu") for i in range(150)),
        state({"done": True}),
    ]
    run = run_in_process(
        config_for(emulator, tmp_path, stream_maps=typo), messages, tmp_path, emulator=emulator
    )

    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    (error,) = error_lines(run.stderr)
    assert "100 of 100 records invalid" in error
    assert "max_invalid_percent" in error
    assert run.states == []
    assert emulator.users == {}
    letters = dead_letters(tmp_path / "dead-letters.ndjson")
    assert len(letters) == 100
    assert "NameNotDefined: 'regoin' is not defined" in letters[0]["reason"]


def test_a_map_the_sdk_refuses_for_a_streams_schema_stops_the_run_in_one_line(
    emulator: Emulator, tmp_path: Path
) -> None:
    messages = [
        schema("users", ACCOUNTS, key="uid"),  # a key property the schema does not declare
        account("u1", region="eu", uid="1"),
        state({"done": True}),
    ]
    run = run_in_process(
        config_for(emulator, tmp_path, stream_maps=EU_ONLY), messages, tmp_path, emulator=emulator
    )

    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    (error,) = error_lines(run.stderr)
    assert "stream maps cannot apply to stream 'users'" in error
    assert "'uid' was not detected in schema" in error
    assert run.states == []


def test_an_event_a_map_fails_on_is_a_dead_letter_and_the_others_are_sent(
    emulator: Emulator, tmp_path: Path
) -> None:
    messages = [
        schema("users", USER_SCHEMA),
        record("users", user(1)),
        record("users", user(2)),
        schema("events", EVENT_SCHEMA, key="event_id"),
        paid("e1", 1),
        record("events", {"event_id": "e2", "user_id": 2, "event_name": None}),
        state({"done": True}),
    ]
    shout = {"events": {"label": "event_name.upper()"}}
    cfg = config_for(emulator, tmp_path, stream_maps=shout, **FAST)
    run = run_in_process(cfg, messages, tmp_path, emulator=emulator)

    assert run.returncode == 0, run.stderr
    assert [e["user_id"] for e in emulator.events["events"]] == ["1"]
    (letter,) = dead_letters(tmp_path / "dead-letters.ndjson")
    assert letter["record"]["event_id"] == "e2"
    assert "stream map for 'events'" in letter["reason"]
    assert "Attribute 'upper' does not exist" in letter["reason"]
    assert [s.value for s in run.states] == [{"done": True}]
