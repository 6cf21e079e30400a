"""What a user sees of the wire, through the real CLI: host, key, preflight, slot, formats."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

import pytest
from singer_io import (
    USER_SCHEMA,
    Run,
    dead_letters,
    interleaved,
    record,
    run_target,
    schema,
    state,
    user,
)

from target_userpilot.run.batches import MAX_API_BYTES

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from target_userpilot.emulator import Emulator

TOKEN = "sk-live-4a1f-WIRE-CLI-KEY-c0de"  # noqa: S105 - the emulator's; must never be printed


def config_for(url: str, tmp_path: Path, **extra: Any) -> dict[str, Any]:
    return {
        "api_key": TOKEN,
        "api_url": url,
        "batch_dir": str(tmp_path / "batches"),
        "dead_letter_path": str(tmp_path / "dead-letters.ndjson"),
        "request_retry_max_time": 600,
        **extra,
    }


def few_users(n: int = 30) -> list[dict[str, Any]]:
    return [
        schema("users", USER_SCHEMA),
        *(record("users", user(i)) for i in range(n)),
        state({"bookmark": n}),
    ]


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def failure_line(stderr: str) -> str:
    return next(line for line in stderr.splitlines() if "target-userpilot failed" in line)


def test_a_key_with_a_trailing_newline_works_and_is_never_printed(
    make_emulator: Callable[..., Emulator], tmp_path: Path
) -> None:
    emu = make_emulator(token=TOKEN, rows_per_minute=float("inf"))
    config = config_for(emu.url, tmp_path, api_key=f"{TOKEN}\n")
    run = run_target(config, few_users(), tmp_path, emulator=emu)
    assert run.returncode == 0, run.stderr
    assert [s.value for s in run.states] == [{"bookmark": 30}]
    assert len(emu.users) == 30
    assert TOKEN not in run.stderr
    assert all(TOKEN not in line for line in run.stdout_lines)
    hosts = [line for line in run.stderr.splitlines() if "Sending to Userpilot at" in line]
    assert len(hosts) == 1  # the host, once, at the start
    assert emu.url in hosts[0]


@pytest.mark.parametrize("key", [12345678901234, ["sk-live-in-a-list-0000"], "  \n"])
def test_an_unusable_key_is_one_line_that_never_quotes_it(tmp_path: Path, key: object) -> None:
    run = run_target(
        config_for("https://analytex.userpilot.io", tmp_path, api_key=key), [], tmp_path
    )
    assert run.returncode == 1
    assert "`api_key`" in run.stderr
    assert "Traceback" not in run.stderr
    assert "12345678901234" not in run.stderr
    assert "sk-live-in-a-list" not in run.stderr


def test_a_closed_port_fails_within_seconds_naming_api_url(tmp_path: Path) -> None:
    url = closed_port_url()
    started = time.monotonic()
    run = run_target(config_for(url, tmp_path), few_users(), tmp_path)
    elapsed = time.monotonic() - started
    assert run.returncode == 1
    line = failure_line(run.stderr)
    assert "connection refused" in line
    assert "`api_url`" in line
    assert url in line
    assert "Traceback" not in run.stderr
    assert elapsed < 30  # not `request_retry_max_time` (600 s)
    assert run.states == []


def test_an_unknown_host_fails_within_seconds_naming_api_url(tmp_path: Path) -> None:
    url = "https://no-such-host.userpilot-target.invalid"
    started = time.monotonic()
    run = run_target(config_for(url, tmp_path), few_users(), tmp_path)
    assert run.returncode == 1
    line = failure_line(run.stderr)
    assert "could not be resolved" in line
    assert url in line
    assert time.monotonic() - started < 30


def test_a_wrong_key_stops_before_reading_input(
    make_emulator: Callable[..., Emulator], tmp_path: Path
) -> None:
    emu = make_emulator(token="the-right-token", rows_per_minute=float("inf"))  # noqa: S106
    run = run_target(config_for(emu.url, tmp_path), few_users(), tmp_path, emulator=emu)
    assert run.returncode == 1
    assert "HTTP 401" in failure_line(run.stderr)
    assert "`api_key`" in failure_line(run.stderr)
    assert "not the App Token" in failure_line(run.stderr), "the key most often mistaken for it"
    assert [r.path for r in emu.requests] == ["/v1/background_jobs/"]  # the preflight only
    assert TOKEN not in run.stderr


def test_a_dry_run_skips_the_preflight(tmp_path: Path) -> None:
    config = config_for(closed_port_url(), tmp_path, dry_run=True, dry_run_dir=str(tmp_path / "d"))
    run = run_target(config, few_users(), tmp_path)
    assert run.returncode == 0, run.stderr
    assert "Sending to Userpilot" not in run.stderr


def run_3_000_users(emu: Emulator, tmp_path: Path, **extra: Any) -> Run:
    """3,000 users in batches of 1,000, a STATE after each 1,000; every one must land."""
    messages = list(interleaved(users=3_000, companies=0, state_every=1_000))
    config = config_for(emu.url, tmp_path, max_batch_rows=1_000, **extra)
    run = run_target(config, messages, tmp_path, emulator=emu)
    assert run.returncode == 0, run.stderr
    assert len(emu.users) == 3_000
    assert run.states[-1].value == messages[-1]["value"]
    return run


def test_an_export_stuck_in_processing_and_a_foreign_import_do_not_stop_the_run(
    make_emulator: Callable[..., Emulator], tmp_path: Path
) -> None:
    emu = make_emulator(
        token=TOKEN,
        rows_per_minute=600_000,
        export_job="stuck",
        foreign_job_seconds=1.5,
        pending_refresh_seconds=0.3,
    )
    run_3_000_users(emu, tmp_path, slot_wait_timeout=60)
    assert len([j for j in emu.jobs if not j.foreign]) == 3


def test_a_server_refusing_multipart_gets_json_after_one_logged_switch(
    make_emulator: Callable[..., Emulator], tmp_path: Path
) -> None:
    emu = make_emulator(token=TOKEN, rows_per_minute=float("inf"), refuse_multipart=415)
    run = run_3_000_users(emu, tmp_path)
    assert {j.source for j in emu.jobs} == {"json"}
    assert run.stderr.count("sending JSON bodies") == 1


def test_lost_submit_answers_create_one_job_per_batch(
    make_emulator: Callable[..., Emulator], tmp_path: Path
) -> None:
    emu = make_emulator(token=TOKEN, rows_per_minute=float("inf"), drop_submit_responses=3)
    run_3_000_users(emu, tmp_path)
    assert len(emu.jobs) == 3  # 3 batches, 3 jobs: none uploaded twice


def test_max_batch_bytes_default_stays_under_50_000_000_with_the_envelope() -> None:
    about = subprocess.run(
        [sys.executable, "-m", "target_userpilot.target", "--about", "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
    )
    setting = json.loads(about.stdout)["settings"]["properties"]["max_batch_bytes"]
    assert MAX_API_BYTES == 50_000_000
    assert setting["default"] <= 50_000_000 - 64 * 1024
    assert setting["maximum"] <= 50_000_000


def test_three_lines_a_stricter_server_refuses_among_25_000_become_dead_letters(
    make_emulator: Callable[..., Emulator], tmp_path: Path
) -> None:
    emu = make_emulator(token=TOKEN, rows_per_minute=float("inf"), reject_keys={"poison"})
    poisoned = {1_234, 12_345, 24_999}
    messages: list[dict[str, Any]] = [schema("users", USER_SCHEMA)]
    for i in range(1, 25_001):
        row = user(i)
        if i in poisoned:
            row["poison"] = "a key this server refuses"
        messages.append(record("users", row))
        if i % 5_000 == 0:
            messages.append(state({"bookmark": i}))
    run = run_target(config_for(emu.url, tmp_path), messages, tmp_path, emulator=emu)
    assert run.returncode == 0, run.stderr[-3000:]
    assert len(emu.users) == 24_997
    assert not {str(i) for i in poisoned} & set(emu.users)
    letters = dead_letters(tmp_path / "dead-letters.ndjson")
    assert sorted(letter["position"] for letter in letters) == sorted(poisoned)
    assert all("poison" in letter["reason"] for letter in letters), letters[0]["reason"]
    assert [s.value for s in run.states][-1] == {"bookmark": 25_000}
    # Isolating each bad line costs about 2*log2(rows) extra uploads (14 halvings of 10,000).
    refused = [r for r in emu.requests if r.method == "POST" and r.status == 400]
    assert len(refused) <= 3 * 2 * 14
