"""The real CLI over real pipes against the emulator: routing, batches, one job at a time, STATE."""

from __future__ import annotations

import gzip
import itertools
import json
from typing import TYPE_CHECKING, Any

from singer_io import (
    COMPANY_SCHEMA,
    USER_SCHEMA,
    assert_states_trail_data,
    interleaved,
    record,
    run_target,
    schema,
    state,
    user,
)

if TYPE_CHECKING:
    from collections.abc import Callable
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
    run = run_target(cfg, messages, tmp_path, emulator=emulator)
    assert run.returncode == 0, run.stderr
    assert emulator.users["1"]["company_id"] == "7"
    assert emulator.companies["7"]["metadata"] == {"name": "Acme"}
    assert [s.value for s in run.states] == [{"done": True}]


def test_an_unmapped_stream_is_an_error_naming_the_setting(
    emulator: Emulator, tmp_path: Path
) -> None:
    messages = [schema("contacts", USER_SCHEMA), record("contacts", user(1))]
    run = run_target(config_for(emulator, tmp_path), messages, tmp_path)
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
    run = run_target(config_for(emu, tmp_path), messages, tmp_path, emulator=emu)
    assert run.returncode == 0, run.stderr
    assert set(emu.users) == {"1"}
    assert [s.value for s in run.states] == [{"n": 1}]


def test_no_input_no_state(emulator: Emulator, tmp_path: Path) -> None:
    run = run_target(config_for(emulator, tmp_path), [], tmp_path)
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
    run = run_target(config_for(emulator, tmp_path), messages, tmp_path, emulator=emulator)
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
    run = run_target(config_for(emulator, tmp_path), messages, tmp_path, emulator=emulator)
    assert run.returncode == 0, run.stderr
    assert set(emulator.users) == {"1", "2", "3"}
    assert "ACTIVATE_VERSION for stream 'users' acknowledged" in run.stderr
    assert [s.value for s in run.states] == [{"batch": 1}]
