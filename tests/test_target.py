"""The target against the emulator: routing, batches, one job at a time, STATE. Through the real
CLI over real pipes where the process matters (STATE as it comes out, failures, a silent tap),
the rest in process (`run_in_process`, the same entry point without ~1.7 s of imports each)."""

from __future__ import annotations

import gzip
import itertools
import json
import time
from typing import TYPE_CHECKING, Any

from singer_io import (
    COMPANY_SCHEMA,
    USER_SCHEMA,
    assert_states_trail_data,
    dead_letters,
    interleaved,
    record,
    run_in_process,
    run_target,
    schema,
    state,
    user,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from target_userpilot.emulator import Emulator

TOKEN = "test-token"  # noqa: S105 - the emulator's


def config_for(emu: Emulator, tmp_path: Path, **extra: Any) -> dict[str, Any]:
    return {
        "api_key": TOKEN,
        "api_url": emu.url,
        "batch_dir": str(tmp_path / "batches"),
        "dead_letter_path": str(tmp_path / "dead-letters.ndjson"),
        **extra,
    }


def assert_one_job_at_a_time(emu: Emulator) -> None:
    jobs = sorted((j for j in emu.jobs if not j.foreign), key=lambda j: j.submitted_at)
    for earlier, later in itertools.pairwise(jobs):
        assert earlier.finished_at is not None
        assert later.submitted_at >= earlier.finished_at, "two jobs ran at once"


def test_state_is_released_only_after_its_records_are_in_userpilot(
    make_emulator: Callable[..., Emulator], tmp_path: Path
) -> None:
    # 10,000 rows/s: each full job takes about a second, so input outruns the slot and
    # STATE gating is exercised under back-pressure.
    emu = make_emulator(token=TOKEN, rows_per_minute=600_000)
    messages = list(interleaved(users=25_000, companies=3_000, state_every=1_000))
    run = run_target(
        config_for(emu, tmp_path, max_checkpoint_lag_records=12_000),
        messages,
        tmp_path,
        emulator=emu,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert len(emu.users) == 25_000
    assert len(emu.companies) == 3_000
    assert emu.users["42"]["metadata"]["email"] == "user42@example.com"
    assert [j.rows for j in emu.jobs if j.kind == "users"] == [10_000, 10_000, 5_000]
    assert sum(j.rows for j in emu.jobs if j.kind == "companies") == 3_000
    assert_one_job_at_a_time(emu)
    assert_states_trail_data(run, messages)
    # Checkpoints come out along the way, not only at the end, and the last one is final.
    assert len(run.states) >= 4
    assert run.states[-1].value == {"bookmarks": {"records": 28_000}}
    assert not list((tmp_path / "batches").iterdir()), "confirmed batch files are removed"
    # The SDK's METRIC lines keep working: records counted per stream.
    counted: dict[str, int] = {}
    for line in run.stderr.splitlines():
        if "METRIC: " in line:
            metric = json.loads(line.split("METRIC: ", 1)[1])
            if metric["metric"] == "record_count":
                stream = metric["tags"]["stream"]
                counted[stream] = counted.get(stream, 0) + metric["value"]
    assert counted == {"users": 25_000, "companies": 3_000}


def test_streams_are_routed_by_stream_kinds(emulator: Emulator, tmp_path: Path) -> None:
    messages = [
        schema("contacts", USER_SCHEMA),
        schema("accounts", COMPANY_SCHEMA),
        record("contacts", user(1, company=7)),
        record("accounts", {"id": 7, "name": "Acme"}),
        state({"done": True}),
    ]
    cfg = config_for(
        emulator, tmp_path, stream_kinds={"contacts": "users", "accounts": "companies"}
    )
    run = run_in_process(cfg, messages, tmp_path, emulator=emulator)
    assert run.returncode == 0, run.stderr
    assert emulator.users["1"]["company_id"] == "7"
    assert emulator.companies["7"]["metadata"] == {"name": "Acme"}
    assert [s.value for s in run.states] == [{"done": True}]


def test_an_unmapped_stream_is_an_error_naming_the_setting(
    emulator: Emulator, tmp_path: Path
) -> None:
    messages = [schema("contacts", USER_SCHEMA), record("contacts", user(1))]
    run = run_in_process(config_for(emulator, tmp_path), messages, tmp_path)
    assert run.returncode == 1
    assert "stream_kinds" in run.stderr
    assert "contacts" in run.stderr
    assert "Traceback" not in run.stderr


def test_a_job_that_keeps_failing_stops_the_run_without_state(
    make_emulator: Callable[..., Emulator], tmp_path: Path
) -> None:
    emu = make_emulator(token=TOKEN, rows_per_minute=float("inf"), fail_jobs=10)
    messages = [schema("users", USER_SCHEMA), record("users", user(1)), state({"n": 1})]
    run = run_target(config_for(emu, tmp_path, job_retries=1), messages, tmp_path, emulator=emu)
    assert run.returncode == 1
    assert run.states == []
    failed = [j.job_id for j in emu.jobs]
    assert len(failed) == 2  # the first attempt and one retry
    assert failed[-1] in run.stderr
    assert "job_retries" in run.stderr
    assert "Traceback" not in run.stderr
    assert not list((tmp_path / "batches").iterdir()), "no batch file is left behind"


def test_a_job_that_fails_once_is_resubmitted(
    make_emulator: Callable[..., Emulator], tmp_path: Path
) -> None:
    emu = make_emulator(token=TOKEN, rows_per_minute=float("inf"), fail_jobs=1)
    messages = [schema("users", USER_SCHEMA), record("users", user(1)), state({"n": 1})]
    run = run_in_process(config_for(emu, tmp_path), messages, tmp_path, emulator=emu)
    assert run.returncode == 0, run.stderr
    assert set(emu.users) == {"1"}
    assert [s.value for s in run.states] == [{"n": 1}]


def test_no_input_no_state(emulator: Emulator, tmp_path: Path) -> None:
    run = run_in_process(config_for(emulator, tmp_path), [], tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout_lines == []
    assert emulator.jobs == []


def test_empty_state_is_never_passed_on_and_floats_stay_exact(
    emulator: Emulator, tmp_path: Path
) -> None:
    messages: list[dict[str, Any] | str] = [
        state({}),
        schema("users", USER_SCHEMA),
        record("users", user(1)),
        '{"type": "STATE", "value": {"cursor": 0.1, "big": 12345678901234567890.123456789}}',
    ]
    run = run_in_process(config_for(emulator, tmp_path), messages, tmp_path, emulator=emulator)
    assert run.returncode == 0, run.stderr
    assert run.stdout_lines == ['{"cursor":0.1,"big":12345678901234567890.123456789}']


def test_batch_messages_load_like_records(emulator: Emulator, tmp_path: Path) -> None:
    batch_file = tmp_path / "users-0001.jsonl.gz"
    with gzip.open(batch_file, "wt") as handle:
        for i in range(1, 4):
            handle.write(json.dumps(user(i)) + "\n")
    messages = [
        schema("users", USER_SCHEMA),
        {
            "type": "BATCH",
            "stream": "users",
            "encoding": {"format": "jsonl", "compression": "gzip"},
            "manifest": [batch_file.as_uri()],
        },
        {"type": "ACTIVATE_VERSION", "stream": "users", "version": 1},
        state({"batch": 1}),
    ]
    run = run_in_process(config_for(emulator, tmp_path), messages, tmp_path, emulator=emulator)
    assert run.returncode == 0, run.stderr
    assert set(emulator.users) == {"1", "2", "3"}
    assert "ACTIVATE_VERSION for stream 'users' acknowledged" in run.stderr
    assert [s.value for s in run.states] == [{"batch": 1}]


# --- batches as a user sees them (issue 11, cases 4 to 7) ------------------------------------


def test_a_first_profile_too_large_for_any_batch_is_a_dead_letter_not_an_empty_upload(
    emulator: Emulator, tmp_path: Path
) -> None:
    messages = [
        schema("users", USER_SCHEMA),
        record("users", {**user(1), "plan": "x" * 2_000}),
        state({"n": 1}),
        *(record("users", user(i)) for i in range(2, 6)),
        state({"n": 5}),
    ]
    run = run_in_process(config_for(emulator, tmp_path, max_batch_bytes=1_024), messages, tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert [s.value for s in run.states] == [{"n": 1}, {"n": 5}]
    assert sorted(emulator.users) == ["2", "3", "4", "5"]
    assert all(r.status < 400 for r in emulator.requests), "no empty batch was uploaded"
    (letter,) = dead_letters(tmp_path / "dead-letters.ndjson")
    assert "max_batch_bytes" in letter["reason"]
    last = run.stderr.strip().splitlines()[-1]
    assert "WARNING" in last
    assert f"1 dead letter written to {tmp_path / 'dead-letters.ndjson'}" in last


def test_two_records_of_one_id_too_large_merged_go_in_two_batches(
    emulator: Emulator, tmp_path: Path
) -> None:
    messages = [
        schema("users", USER_SCHEMA),
        record("users", {**user(1), "plan": "a" * 700}),
        record("users", {"id": 1, "email": "e" * 700}),
        state({"n": 2}),
    ]
    run = run_in_process(config_for(emulator, tmp_path, max_batch_bytes=1_024), messages, tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert not (tmp_path / "dead-letters.ndjson").exists()
    assert len(emulator.jobs) == 2
    assert emulator.users["1"]["metadata"]["plan"] == "a" * 700
    assert emulator.users["1"]["metadata"]["email"] == "e" * 700
    assert [s.value for s in run.states] == [{"n": 2}]


def test_many_records_of_one_growing_id_merge_into_one_line(
    emulator: Emulator, tmp_path: Path
) -> None:
    schema_body = {"type": "object", "properties": {"id": {"type": "integer"}}}
    count = 3_000
    messages = [
        schema("users", schema_body),
        *(record("users", {"id": 1, f"attribute_{n}": n}) for n in range(count)),
        state({"n": count}),
    ]
    run = run_in_process(config_for(emulator, tmp_path), messages, tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert [j.rows for j in emulator.jobs] == [1]
    assert len(emulator.users["1"]["metadata"]) == count
    assert f"{count - 1:,} duplicates merged" in run.stderr


def test_a_silent_tap_gets_its_sparse_batch_flushed_on_time(
    emulator: Emulator, tmp_path: Path
) -> None:
    resumed: list[float] = []

    def slow_tap() -> Iterator[dict[str, Any]]:
        yield schema("users", USER_SCHEMA)
        yield from (record("users", user(i)) for i in range(1, 4))
        yield state({"n": 3})
        log = tmp_path / "stderr.log"  # run_target's: the target has read the schema
        deadline = time.monotonic() + 30
        while "loads as" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(4)  # the tap goes quiet: only the input timer can notice the lag
        resumed.append(time.monotonic())
        yield record("users", user(4))
        yield state({"n": 4})

    # 0 minutes: the batch is overdue as soon as the lag is looked at (at least once a second).
    cfg = config_for(emulator, tmp_path, max_checkpoint_lag_minutes=0)
    run = run_target(cfg, slow_tap(), tmp_path, flush_each=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert [s.value for s in run.states] == [{"n": 3}, {"n": 4}]
    assert run.states[0].at < resumed[0], "the STATE came out while the tap was silent"
    assert "early" in run.stderr


def test_a_stream_whose_every_record_is_invalid_stops_the_run(
    emulator: Emulator, tmp_path: Path
) -> None:
    body = {"type": "object", "properties": {"uid": {"type": "integer"}}}
    messages = [
        schema("users", body, key=None),
        *(record("users", {"uid": i}) for i in range(1, 151)),
        state({"n": 150}),
    ]
    run = run_in_process(config_for(emulator, tmp_path), messages, tmp_path)
    assert run.returncode == 1
    assert run.states == []
    assert "Traceback" not in run.stderr
    error = next(line for line in run.stderr.splitlines() if "target-userpilot failed" in line)
    assert "stream 'users'" in error
    assert "100 of 100 records invalid" in error
    assert str(tmp_path / "dead-letters.ndjson") in error
    assert emulator.jobs == []
