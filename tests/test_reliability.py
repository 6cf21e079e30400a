"""Nothing lost, nothing leaked: faults, failed jobs, kill -9 and resume, signals, secrets."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
from typing import TYPE_CHECKING, Any

from singer_io import (
    USER_SCHEMA,
    StateSeen,
    assert_states_trail_data,
    dead_letters,
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

LOGGER = logging.getLogger(__name__)
TOKEN = "sk-live-5f2b8c1e-SECRET-KEY-9d7a"  # noqa: S105 - the emulator's; must never be printed


def config_for(emu: Emulator, tmp_path: Path, **extra: Any) -> dict[str, Any]:
    return {
        "api_key": TOKEN,
        "api_url": emu.url,
        "batch_dir": str(tmp_path / "batches"),
        "dead_letter_path": str(tmp_path / "dead-letters.ndjson"),
        "request_retry_max_time": 60,
        **extra,
    }


def resume_after(messages: list[dict[str, Any]], seen: StateSeen) -> list[dict[str, Any]]:
    """What a tap sends when restarted from `seen`: the schemas, then what followed that STATE."""
    cut = next(
        i for i, m in enumerate(messages) if m["type"] == "STATE" and m["value"] == seen.value
    )
    return [m for m in messages if m["type"] == "SCHEMA"] + messages[cut + 1 :]


def test_every_record_arrives_through_faults_of_every_kind(
    make_emulator: Callable[..., Emulator], tmp_path: Path
) -> None:
    emu = make_emulator(
        token=TOKEN,
        rows_per_minute=1_200_000,
        seed=7,
        fail_rate=0.1,
        retry_after_seconds=1,
        fail_jobs=1,
        drop_submit_responses=1,
        foreign_job_seconds=2.0,
    )
    messages = list(interleaved(users=4_000, companies=400, state_every=250))
    run = run_target(
        config_for(emu, tmp_path, max_batch_rows=500, max_checkpoint_lag_records=1_000),
        messages,
        tmp_path,
        emulator=emu,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert len(emu.users) == 4_000
    assert len(emu.companies) == 400
    assert_states_trail_data(run, messages)
    assert run.states[-1].value == {"bookmarks": {"records": 4_400}}
    faults = [r for r in emu.requests if r.fault]
    assert faults, "the seeded faults fired"
    ours = [j for j in emu.jobs if not j.foreign]
    completed = [j for j in ours if j.status == "completed"]
    # The lost submission response was found in the job list, not submitted twice.
    assert sum(j.rows for j in completed) == 4_400
    summary = next(line for line in run.stderr.splitlines() if "Summary:" in line)
    LOGGER.info("%d of %d requests faulted; %s", len(faults), len(emu.requests), summary)


def test_kill_9_then_resume_from_the_last_state_loses_nothing(
    make_emulator: Callable[..., Emulator], tmp_path: Path
) -> None:
    emu = make_emulator(token=TOKEN, rows_per_minute=120_000)  # 2,000 rows/s
    messages = list(interleaved(users=9_000, companies=1_000, state_every=500))
    cfg = config_for(emu, tmp_path, max_batch_rows=1_000, max_checkpoint_lag_records=2_000)

    def kill_on_third_state(seen: StateSeen, proc: subprocess.Popen[bytes]) -> None:
        if seen.value["bookmarks"]["records"] >= 3_000:
            proc.kill()

    first = run_target(cfg, messages, tmp_path, emulator=emu, on_state=kill_on_third_state)
    assert first.returncode == -signal.SIGKILL
    assert_states_trail_data(first, messages)
    last = first.states[-1]
    assert last.value["bookmarks"]["records"] < 10_000

    # The pace only had to let the kill land mid-run: the resume may go at full speed.
    emu.set_faults(rows_per_minute=float("inf"))
    second = run_target(cfg, resume_after(messages, last), tmp_path, emulator=emu)
    assert second.returncode == 0, second.stderr[-3000:]
    assert_states_trail_data(second, messages)
    assert len(emu.users) == 9_000
    assert len(emu.companies) == 1_000
    sent = sum(j.rows for j in emu.jobs if j.status == "completed")
    twice = sent - 10_000
    # At-least-once: what was sent twice is bounded by the batches not yet confirmed.
    assert 0 <= twice <= 4 * 1_000
    LOGGER.info("kill -9 at STATE %s, then resume: %d rows sent twice", last.value, twice)


def test_sigterm_stops_without_state_past_confirmed_data(
    make_emulator: Callable[..., Emulator], tmp_path: Path
) -> None:
    emu = make_emulator(token=TOKEN, rows_per_minute=30_000)  # a 1,000-row job takes 2 s
    messages = list(interleaved(users=5_000, companies=0, state_every=200))
    cfg = config_for(emu, tmp_path, max_batch_rows=1_000, termination_grace=1)

    def term_on_first_state(seen: StateSeen, proc: subprocess.Popen[bytes]) -> None:
        proc.send_signal(signal.SIGTERM)

    run = run_target(cfg, messages, tmp_path, emulator=emu, on_state=term_on_first_state)
    assert run.returncode == 128 + signal.SIGTERM
    assert_states_trail_data(run, messages)
    assert "Received signal 15" in run.stderr
    assert len(emu.users) < 5_000
    left = [j.job_id for j in emu.jobs if j.finished_at is None]
    if left:
        assert left[0] in run.stderr, "a job left running is named"


def test_the_api_key_never_appears_in_any_output(
    make_emulator: Callable[..., Emulator], tmp_path: Path
) -> None:
    emu = make_emulator(token=TOKEN, rows_per_minute=float("inf"), seed=3, fail_rate=0.2)
    messages = [
        schema("users", USER_SCHEMA),
        record("users", user(1)),
        record("users", {"email": "no-id@example.com"}),
        record("users", {"id": 2, "plan": {"nested": [1, 2]}, "api_key": "not-the-secret"}),
        state({"n": 3}),
    ]
    run = run_target(
        config_for(emu, tmp_path), messages, tmp_path, emulator=emu, env={"LOGLEVEL": "DEBUG"}
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "DEBUG" in run.stderr
    written = [run.stderr, "\n".join(run.stdout_lines)]
    # Every file the run left (dead letters, logs, batches), but config.json, which the test wrote.
    written += [
        p.read_text(errors="replace")
        for p in tmp_path.rglob("*")
        if p.is_file() and p.name != "config.json"
    ]
    about = subprocess.run(
        [sys.executable, "-m", "target_userpilot.target", "--about", "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
    )
    written.append(about.stdout + about.stderr)
    assert not [text[:200] for text in written if TOKEN in text]


def test_a_full_disk_is_one_clear_error_and_leaves_nothing_behind(
    make_emulator: Callable[..., Emulator], tmp_path: Path
) -> None:
    emulator = make_emulator(token=TOKEN)  # the preflight checks the key before any input
    messages = list(interleaved(users=2_000, companies=0, state_every=500))
    # Any file over 64 KB fails to grow: the first batch (about 250 KB) cannot be written.
    run = run_target(
        config_for(emulator, tmp_path), messages, tmp_path, emulator=emulator, max_file_bytes=65_536
    )
    assert run.returncode == 1
    assert run.states == []
    assert "Traceback" not in run.stderr
    error = next(line for line in run.stderr.splitlines() if "target-userpilot failed" in line)
    assert "cannot write batch file" in error
    assert "`batch_dir`" in error
    assert emulator.jobs == [], "a half-written batch is never uploaded"
    assert not list((tmp_path / "batches").iterdir()), "the half-written batch is removed"


def test_a_rejected_key_fails_fast_naming_the_setting(emulator: Emulator, tmp_path: Path) -> None:
    wrong = "sk-wrong-key-0000"
    cfg = {**config_for(emulator, tmp_path), "api_key": wrong}
    messages = [schema("users", USER_SCHEMA), record("users", user(1)), state({"n": 1})]
    run = run_target(cfg, messages, tmp_path, emulator=emulator)
    assert run.returncode == 1
    assert "api_key" in run.stderr
    assert wrong not in run.stderr
    assert run.states == []
    assert len([r for r in emulator.requests if r.status == 401]) == 1, "never retried"


def test_plain_http_is_refused_except_on_loopback(tmp_path: Path) -> None:
    cfg = {"api_key": TOKEN, "api_url": "http://analytex.userpilot.io"}
    run = run_target(cfg, [], tmp_path)
    assert run.returncode == 1
    assert "api_url" in run.stderr or "http" in run.stderr
    assert TOKEN not in run.stderr


def test_dead_letter_file_has_record_reason_and_position(
    make_emulator: Callable[..., Emulator], tmp_path: Path
) -> None:
    emulator = make_emulator(token=TOKEN, rows_per_minute=float("inf"))
    messages = [
        schema("users", USER_SCHEMA),
        record("users", user(1)),
        record("users", {"email": "no-id@example.com"}),
        state({"n": 2}),
    ]
    run = run_target(config_for(emulator, tmp_path), messages, tmp_path, emulator=emulator)
    assert run.returncode == 0, run.stderr
    letters = dead_letters(tmp_path / "dead-letters.ndjson")
    assert len(letters) == 1
    assert letters[0]["stream"] == "users"
    assert letters[0]["position"] == 2
    assert letters[0]["record"] == {"email": "no-id@example.com"}
    assert "id" in letters[0]["reason"]
    assert [s.value for s in run.states] == [{"n": 2}]
