"""Every way a run ends, through the real CLI: the summary, the exit status, no batch file left."""

from __future__ import annotations

import fcntl
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest
from singer_io import USER_SCHEMA, interleaved, record, run_target, schema, state, user
from test_target import TOKEN
from test_target import config_for as target_config

from target_userpilot.run.rundir import LOCK, PREFIX

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from pathlib import Path

    from target_userpilot.emulator import Emulator


def config_for(emu: Emulator, tmp_path: Path, **extra: Any) -> dict[str, Any]:
    """test_target's config, with small batches and a short retry budget."""
    return target_config(
        emu, tmp_path, **{"request_retry_max_time": 5, "max_batch_rows": 100, **extra}
    )


def leftovers(tmp_path: Path) -> list[str]:
    """Everything left in batch_dir, as paths relative to it."""
    root = tmp_path / "batches"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def users(count: int) -> list[dict[str, Any]]:
    return [schema("users", USER_SCHEMA), *(record("users", user(i)) for i in range(1, count + 1))]


def cut_mid_line() -> list[str]:
    return [json.dumps(m) for m in users(150)] + ['{"type": "RECORD", "stream": "us']


# name, emulator faults, extra settings, input: each ends the run with exit 1 and no STATE.
FAILURES: list[tuple[str, dict[str, Any], dict[str, Any], list[Any]]] = [
    ("malformed line", {}, {}, [*users(150), "{not json", state({"n": 1})]),
    ("input cut mid-line", {}, {}, cut_mid_line()),
    ("unknown message type", {}, {}, [*users(150), {"type": "SURPRISE"}]),
    ("STATE without value", {}, {}, [*users(150), {"type": "STATE"}]),
    ("every job failing", {"fail_jobs": 1_000}, {"job_retries": 1}, [*users(250), state({})]),
    ("every upload refused, one record", {"refuse_uploads": True}, {}, [*users(1), state({})]),
    (
        "every upload refused, one-row batches",
        {"refuse_uploads": True},
        {"max_batch_rows": 1},
        [*users(20), state({"n": 20})],
    ),
    ("job_timeout", {"rows_per_minute": 60}, {"job_timeout": 1}, [*users(150), state({})]),
    (
        "slot_wait_timeout",
        {"foreign_job_seconds": 60},
        {"slot_wait_timeout": 1},
        [*users(150), state({})],
    ),
]


@pytest.mark.parametrize(
    ("faults", "settings", "messages"),
    [case[1:] for case in FAILURES],
    ids=[case[0] for case in FAILURES],
)
def test_a_failed_run_leaves_no_batch_file(
    make_emulator: Callable[..., Emulator],
    tmp_path: Path,
    faults: dict[str, Any],
    settings: dict[str, Any],
    messages: list[Any],
) -> None:
    emu = make_emulator(token=TOKEN, **{"rows_per_minute": float("inf"), **faults})
    run = run_target(config_for(emu, tmp_path, **settings), messages, tmp_path, timeout=60)
    assert run.returncode == 1, run.stderr[-2000:]
    assert [s.value for s in run.states if s.value] == []
    assert "Summary:" in run.stderr
    assert leftovers(tmp_path) == []


def test_a_failure_with_a_job_still_running_is_one_error_line(
    make_emulator: Callable[..., Emulator], tmp_path: Path
) -> None:
    emu = make_emulator(token=TOKEN, rows_per_minute=600)  # a 100-row job takes 10 s
    cfg = config_for(emu, tmp_path, termination_grace=1)

    def tap() -> Iterable[dict[str, Any] | str]:
        """150 users, then, once the first batch's job runs, a line that fails the run."""
        yield from users(150)
        deadline = time.monotonic() + 30
        while not emu.jobs and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # the target learns the job's id on its next tick (0.25 s)
        yield "{not json"

    run = run_target(cfg, tap(), tmp_path, timeout=60, flush_each=True)
    assert run.returncode == 1, run.stderr[-2000:]
    assert "still running" in run.stderr, "the test fails while a job runs"
    errors = [line for line in run.stderr.splitlines() if "| ERROR" in line]
    assert len(errors) == 1, errors
    assert "is not valid JSON" in errors[0], errors


@dataclass
class Signalled:
    returncode: int
    stderr: str
    seconds: float  # from the first signal to the exit


def run_and_signal(
    config: dict[str, Any],
    messages: Iterable[dict[str, Any]],
    tmp_path: Path,
    *,
    after: float,
    signals: tuple[int, ...] = (signal.SIGTERM,),
    pause: float = 0.0,
) -> Signalled:
    """Run the CLI, send `signals` (`pause` apart) `after` s into reading; input keeps flowing.

    The time counts from the first stream's log line: before it, the interpreter may still be
    importing, with Python's default handlers.
    """
    sent: list[float] = []

    def send(proc: subprocess.Popen[bytes]) -> None:
        log = tmp_path / "stderr.log"
        deadline = time.monotonic() + 30
        while "loads as" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(after)
        for n, signum in enumerate(signals):
            if n:
                time.sleep(pause)
            sent.append(time.monotonic())
            proc.send_signal(signum)

    run = run_target(config, messages, tmp_path, timeout=90, on_start=send)
    return Signalled(run.returncode, run.stderr, time.monotonic() - sent[0])


def slow_users(count: int, every: int, pause: float) -> Iterable[dict[str, Any]]:
    """A tap that pauses `pause` s every `every` records, with a STATE each pause."""
    yield schema("users", USER_SCHEMA)
    for i in range(1, count + 1):
        yield record("users", user(i))
        if i % every == 0:
            yield state({"n": i})
            time.sleep(pause)


@pytest.mark.parametrize("seed", range(4))
def test_sigterm_at_a_random_moment_exits_143_with_the_summary(
    make_emulator: Callable[..., Emulator], tmp_path: Path, seed: int
) -> None:
    emu = make_emulator(token=TOKEN, rows_per_minute=60_000)  # a 100-row job takes 0.1 s
    after = random.Random(seed).uniform(0, 2.0)  # noqa: S311 - a test moment, not a secret
    grace = 2
    cfg = config_for(emu, tmp_path, termination_grace=grace)
    run = run_and_signal(cfg, slow_users(5_000, every=200, pause=0.1), tmp_path, after=after)
    assert run.returncode == 128 + signal.SIGTERM, run.stderr[-2000:]
    assert "Summary:" in run.stderr
    assert "Traceback" not in run.stderr
    assert run.seconds < grace + 5
    assert leftovers(tmp_path) == []


def test_a_second_sigterm_cuts_the_wait_short_and_still_prints_the_summary(
    make_emulator: Callable[..., Emulator], tmp_path: Path
) -> None:
    emu = make_emulator(token=TOKEN, rows_per_minute=600)  # a 100-row job takes 10 s
    cfg = config_for(emu, tmp_path, termination_grace=60)
    messages = list(interleaved(users=300, companies=0, state_every=100))
    run = run_and_signal(
        cfg, messages, tmp_path, after=1.0, signals=(signal.SIGTERM, signal.SIGTERM), pause=0.5
    )
    assert run.returncode == 128 + signal.SIGTERM, run.stderr[-2000:]
    assert run.seconds < 5, "the second signal ends the grace wait"
    running = [j.job_id for j in emu.jobs if j.finished_at is None]
    assert running, "the test signals while a job runs"
    assert "waiting up to 60 s (setting `termination_grace`) for Userpilot job" in run.stderr
    assert "still running" in run.stderr
    assert running[0] in run.stderr, "the job left running is named"
    assert "Summary:" in run.stderr
    assert leftovers(tmp_path) == []


def test_sigterm_past_the_grace_leaves_no_batch_file(
    make_emulator: Callable[..., Emulator], tmp_path: Path
) -> None:
    emu = make_emulator(token=TOKEN, rows_per_minute=600)
    cfg = config_for(emu, tmp_path, termination_grace=1)
    messages = list(interleaved(users=400, companies=0, state_every=100))
    run = run_and_signal(cfg, messages, tmp_path, after=1.0)
    assert run.returncode == 128 + signal.SIGTERM
    assert run.seconds < 1 + 5
    assert "Summary:" in run.stderr
    assert leftovers(tmp_path) == []


def test_a_clean_run_removes_what_killed_runs_left_and_never_a_live_runs_folder(
    make_emulator: Callable[..., Emulator], tmp_path: Path
) -> None:
    emu = make_emulator(token=TOKEN, rows_per_minute=600)
    cfg = config_for(emu, tmp_path)
    for n in range(3):
        killed = run_and_signal(
            cfg, users(400), tmp_path, after=0.5 + n / 2, signals=(signal.SIGKILL,)
        )
        assert killed.returncode == -signal.SIGKILL
    assert leftovers(tmp_path), "SIGKILL leaves files behind"
    # A folder held by a live run (this test process) is left alone.
    live = tmp_path / "batches" / f"{PREFIX}{os.getpid()}-live"
    live.mkdir()
    fd = os.open(live / LOCK, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        fast = make_emulator(token=TOKEN, rows_per_minute=float("inf"))
        run = run_target(config_for(fast, tmp_path), users(50), tmp_path)
        assert run.returncode == 0, run.stderr[-2000:]
        assert leftovers(tmp_path) == [live.name, f"{live.name}/{LOCK}"]
        # Each killed run removed its predecessor's folder; the clean run, the last one's.
        assert "Removed 1 batch folder of runs no longer alive" in run.stderr
    finally:
        os.close(fd)


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_during_the_start_up_check_stops_it_saying_nothing_was_sent(
    make_emulator: Callable[..., Emulator], tmp_path: Path, signum: int, status: int
) -> None:
    emu = make_emulator(token=TOKEN, fail_rate=1.0, fault_kinds=("503",))
    sent: list[float] = []

    def send(proc: subprocess.Popen[bytes]) -> None:
        log = tmp_path / "stderr.log"
        deadline = time.monotonic() + 30
        while "retrying in" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.02)
        sent.append(time.monotonic())
        proc.send_signal(signum)

    config = config_for(emu, tmp_path, request_retry_max_time=600)
    run = run_target(config, users(5), tmp_path, timeout=60, on_start=send)
    assert run.returncode == status, run.stderr[-2000:]
    assert time.monotonic() - sent[0] < 30, "not after the 600 s retry budget"
    assert "during start-up" in run.stderr
    assert "nothing was sent to Userpilot" in run.stderr
    assert "Traceback" not in run.stderr
    assert run.states == []
    assert leftovers(tmp_path) == []


def test_a_closed_stdout_stops_the_run_with_one_error_line(
    make_emulator: Callable[..., Emulator], tmp_path: Path
) -> None:
    emu = make_emulator(token=TOKEN, rows_per_minute=float("inf"))
    config = tmp_path / "config.json"
    config.write_text(json.dumps(config_for(emu, tmp_path)))
    messages = [*users(150), state({"n": 150})]
    read_end, write_end = os.pipe()
    os.close(read_end)  # whatever reads STATE is gone
    try:
        run = subprocess.run(
            [sys.executable, "-m", "target_userpilot.target", "--config", str(config)],
            input="".join(json.dumps(m) + "\n" for m in messages),
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)
    assert run.returncode == 1, run.stderr[-2000:]
    errors = [line for line in run.stderr.splitlines() if "| ERROR" in line]
    assert len(errors) == 1, errors
    assert "cannot write STATE to standard output" in errors[0]
    assert "Traceback" not in run.stderr
    assert "Exception ignored" not in run.stderr
    assert leftovers(tmp_path) == []
