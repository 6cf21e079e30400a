"""Meltano's conventions met in-process (issue 25): streams dropped by a stream map, Meltano's
settings test stream, whole numbers written as floats. The real `meltano` runs of the same are
in tests/test_e2e_meltano.py.
"""

from __future__ import annotations

import io
import json
from typing import TYPE_CHECKING, Any

import pytest
from singer_io import record, run_in_process, run_target, schema, state

from target_userpilot.settings import SettingsError
from target_userpilot.target import TargetUserpilot

if TYPE_CHECKING:
    from pathlib import Path

    from target_userpilot.emulator import Emulator

TOKEN = "test-token"  # noqa: S105 - the emulator's
SCHEMA = {"type": "object", "properties": {"id": {"type": "integer"}, "name": {"type": "string"}}}


def singer(*streams: str, state: dict[str, Any] | None = None) -> str:
    lines = []
    for stream in streams:
        lines.append(
            {"type": "SCHEMA", "stream": stream, "schema": SCHEMA, "key_properties": ["id"]}
        )
        lines += [
            {"type": "RECORD", "stream": stream, "record": {"id": i, "name": f"{stream} {i}"}}
            for i in (1, 2)
        ]
    lines.append({"type": "STATE", "value": state or {"done": True}})
    return "".join(json.dumps(line) + "\n" for line in lines)


def run(
    emulator: Emulator, tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str], **config: Any
) -> list[dict[str, Any]]:
    """The target in-process against the emulator; the STATE values it wrote."""
    TargetUserpilot(
        config={
            "api_key": TOKEN,
            "api_url": emulator.url,
            "batch_dir": str(tmp_path / "batches"),
            "dead_letter_path": str(tmp_path / "dead.ndjson"),
            **config,
        }
    ).listen(io.StringIO(text))
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


@pytest.mark.parametrize(
    "maps",
    [{"events": "__NULL__"}, {"events": None}, {"__else__": None, "users": {}}],
    ids=["__NULL__", "null", "__else__"],
)
def test_a_stream_a_stream_map_drops_is_not_loaded(
    emulator: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str], maps: dict[str, Any]
) -> None:
    states = run(emulator, tmp_path, singer("users", "events"), capsys, stream_maps=maps)
    assert sorted(emulator.users) == ["1", "2"]
    assert emulator.users["1"]["metadata"] == {"name": "users 1"}
    assert states == [{"done": True}]
    assert not (tmp_path / "dead.ndjson").exists()


def test_an_unmapped_stream_says_how_to_drop_it(
    emulator: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SettingsError) as caught:
        run(emulator, tmp_path, singer("audit_log"), capsys)
    assert '`"stream_maps": {"audit_log": "__NULL__"}`' in str(caught.value)
    assert "`stream_kinds`" in str(caught.value)


def test_meltanos_test_stream_checks_the_key_and_sends_nothing(
    emulator: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = {"bookmarks": {"meltano_test_stream": {"last_record": 1}}}
    # Even with a default kind, which would load any other stream: its record is a test.
    states = run(
        emulator, tmp_path, singer("meltano_test_stream", state=state), capsys, default_kind="users"
    )
    assert emulator.users == {}
    assert emulator.jobs == []
    assert states == [state]
    assert [r.path for r in emulator.requests] == ["/v1/background_jobs/"], "the key was checked"


def test_whole_numbers_written_as_floats_are_taken_as_integers(
    emulator: Emulator, tmp_path: Path
) -> None:
    config = {
        "api_key": TOKEN,
        "api_url": emulator.url,
        "batch_dir": str(tmp_path / "batches"),
        "termination_grace": 5.0,
        "max_batch_rows": 1.0,  # one user per job: the setting took effect
        "job_retries": 0.0,
    }
    messages = [
        schema("users", SCHEMA),
        record("users", {"id": 1}),
        record("users", {"id": 2}),
        state({"n": 2}),
    ]
    run = run_in_process(config, messages, tmp_path)
    assert run.returncode == 0, run.stderr
    assert sorted(emulator.users) == ["1", "2"]
    assert len(emulator.jobs) == 2
    assert [s.value for s in run.states][-1] == {"n": 2}


@pytest.mark.parametrize("value", [5.5, 1e-9, "5"])
def test_an_integer_setting_that_is_not_whole_is_one_line_naming_it(
    emulator: Emulator, tmp_path: Path, value: object
) -> None:
    config = {"api_key": TOKEN, "api_url": emulator.url, "termination_grace": value}
    run = run_target(config, [state({"n": 1})], tmp_path)
    assert run.returncode == 1
    errors = [line for line in run.stderr.splitlines() if "ERROR" in line]
    assert "termination_grace" in errors[0], run.stderr
    assert "Traceback" not in run.stderr
    assert emulator.requests == []


def metric_counters(stderr: str) -> dict[tuple[str, str | None], int]:
    """This target's METRIC counter lines: (metric, kind tag) -> value, summed."""
    totals: dict[tuple[str, str | None], int] = {}
    for line in stderr.splitlines():
        if "METRIC: " in line:
            point = json.loads(line.split("METRIC: ", 1)[1])
            if point["type"] == "counter" and point["metric"] != "record_count":
                key = (point["metric"], point["tags"].get("kind"))
                totals[key] = totals.get(key, 0) + point["value"]
    return totals


def test_metric_lines_count_what_reached_userpilot(emulator: Emulator, tmp_path: Path) -> None:
    config = {
        "api_key": TOKEN,
        "api_url": emulator.url,
        "batch_dir": str(tmp_path / "batches"),
        "dead_letter_path": str(tmp_path / "dead.ndjson"),
        "send_only_changes": True,
        "fingerprint_store_path": str(tmp_path / "fingerprints.sqlite"),
    }
    messages = [
        schema("users", SCHEMA),
        *(record("users", {"id": i}) for i in (1, 2, 3)),
        record("users", {"name": "no id"}),
        schema("companies", SCHEMA),
        record("companies", {"id": 9}),
        state({"n": 5}),
    ]
    first = run_in_process(config, messages, tmp_path)
    assert first.returncode == 0, first.stderr
    assert metric_counters(first.stderr) == {
        ("profiles_sent", "users"): 3,
        ("profiles_sent", "companies"): 1,
        ("deletions_accepted", "users"): 0,
        ("deletions_accepted", "companies"): 0,
        ("unchanged_skipped", None): 0,
        ("invalid_records", None): 1,
        ("rejected_by_userpilot", None): 0,
        ("jobs_completed", None): 2,
        ("events_sent", None): 0,
        ("events_refused", None): 0,
    }
    # The same input again: nothing is sent, which the SDK's `record_count` (5) does not say.
    again = run_in_process(config, messages, tmp_path)
    assert again.returncode == 0, again.stderr
    counters = metric_counters(again.stderr)
    assert counters[("profiles_sent", "users")] == 0
    assert counters[("unchanged_skipped", None)] == 4
    assert counters[("jobs_completed", None)] == 0


def test_fail_policy_on_a_record_lacking_its_key_is_one_line(
    emulator: Emulator, tmp_path: Path
) -> None:
    # In-process this is the SDK's MissingKeyPropertiesError (the standard suite in
    # tests/test_core.py); at the CLI it is one line and exit status 1, as any `fail`.
    config = {"api_key": TOKEN, "api_url": emulator.url, "on_invalid_record": "fail"}
    messages = [schema("users", SCHEMA), record("users", {"name": "no key"}), state({"n": 1})]
    run = run_target(config, messages, tmp_path)
    assert run.returncode == 1
    (error,) = [line for line in run.stderr.splitlines() if " ERROR " in f" {line} "]
    assert "lacks key properties ['id']" in error
    assert "on_invalid_record" in error
    assert "Traceback" not in run.stderr
    assert run.states == []
