"""Send only what changed: fingerprints of confirmed profiles, through the target (in process;
through the real CLI where a process matters: a kill, an overlapping run, the environment).

Every test that is not about the SQLite file itself runs on both stores: the SQLite file
(`fingerprint_store_path`) and PostgreSQL (`fingerprint_store_url`).
"""

from __future__ import annotations

import re
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest
from pg_fixtures import (  # noqa: F401 - fixtures, found by name
    StoreLocation,
    pg_server_url_fixture,
    pg_url_fixture,
    store_location_fixture,
    store_settings,
)
from singer_io import (
    USER_SCHEMA,
    StateSeen,
    interleaved,
    record,
    run_in_process,
    run_target,
    schema,
    state,
    user,
)
from sqlalchemy.engine import make_url

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from target_userpilot.emulator import Emulator

TOKEN = "test-token"  # noqa: S105 - the emulator's


def users_input(count: int, changed: frozenset[int] = frozenset()) -> list[dict[str, Any]]:
    out = [schema("users", USER_SCHEMA)]
    for i in range(1, count + 1):
        rec = user(i)
        if i in changed:
            rec["plan"] = "enterprise"
        out.append(record("users", rec))
    out.append(state({"records": count}))
    return out


def config_for(
    emu: Emulator, tmp_path: Path, store: StoreLocation | None = None, **extra: Any
) -> dict[str, Any]:
    return {
        "api_key": TOKEN,
        "api_url": emu.url,
        "batch_dir": str(tmp_path / "batches"),
        "send_only_changes": True,
        **store_settings(store or {"path": tmp_path / "fingerprints.sqlite"}),
        "max_batch_rows": 100,
        **extra,
    }


def rows_sent(emu: Emulator) -> int:
    return sum(j.rows for j in emu.jobs if j.status == "completed")


def test_unchanged_profiles_are_not_sent_again(
    make_emulator: Callable[..., Emulator], tmp_path: Path, store_location: StoreLocation
) -> None:
    emu = make_emulator(token=TOKEN, rows_per_minute=float("inf"))
    cfg = config_for(emu, tmp_path, store_location)
    first = run_in_process(cfg, users_input(300), tmp_path, emulator=emu)
    assert first.returncode == 0, first.stderr[-2000:]
    assert rows_sent(emu) == 300

    again = run_in_process(cfg, users_input(300), tmp_path, emulator=emu)
    assert again.returncode == 0, again.stderr[-2000:]
    assert rows_sent(emu) == 300, "nothing new sent"
    assert "300 unchanged skipped" in again.stderr
    assert [s.value for s in again.states] == [{"records": 300}]

    changed = run_in_process(
        cfg, users_input(300, changed=frozenset({7, 8, 9})), tmp_path, emulator=emu
    )
    assert changed.returncode == 0, changed.stderr[-2000:]
    assert rows_sent(emu) == 303
    assert emu.users["8"]["metadata"]["plan"] == "enterprise"


def test_a_failed_job_marks_nothing_as_sent(
    make_emulator: Callable[..., Emulator], tmp_path: Path, store_location: StoreLocation
) -> None:
    emu = make_emulator(token=TOKEN, rows_per_minute=float("inf"))
    cfg = config_for(emu, tmp_path, store_location, job_retries=0)
    first = run_in_process(cfg, users_input(100), tmp_path, emulator=emu)
    assert first.returncode == 0, first.stderr[-2000:]
    # The next job (users 1-100, all changed) fails and the run stops.
    emu.set_faults(fail_jobs=1)
    failing = run_in_process(
        cfg, users_input(200, changed=frozenset(range(1, 101))), tmp_path, emulator=emu
    )
    assert failing.returncode == 1
    assert failing.states == []
    assert len([j for j in emu.jobs if j.status == "completed"]) == 1

    emu.set_faults(fail_jobs=0)
    rerun = run_in_process(
        cfg, users_input(200, changed=frozenset(range(1, 101))), tmp_path, emulator=emu
    )
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert rows_sent(emu) == 100 + 200, "every profile of the failed job was sent again"
    assert len(emu.users) == 200


def test_resend_all_and_resend_after_days_send_everything(
    make_emulator: Callable[..., Emulator], tmp_path: Path, store_location: StoreLocation
) -> None:
    emu = make_emulator(token=TOKEN, rows_per_minute=float("inf"))
    cfg = config_for(emu, tmp_path, store_location)
    assert run_in_process(cfg, users_input(50), tmp_path).returncode == 0
    assert rows_sent(emu) == 50
    run = run_in_process({**cfg, "resend_all": True}, users_input(50), tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert rows_sent(emu) == 100
    run = run_in_process({**cfg, "resend_after_days": 0}, users_input(50), tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert rows_sent(emu) == 150


def test_fingerprints_are_per_host_and_account(
    make_emulator: Callable[..., Emulator], tmp_path: Path, store_location: StoreLocation
) -> None:
    first = make_emulator(token=TOKEN, rows_per_minute=float("inf"))
    other = make_emulator(token=TOKEN, rows_per_minute=float("inf"))
    cfg = config_for(first, tmp_path, store_location)
    assert run_in_process(cfg, users_input(20), tmp_path).returncode == 0
    run = run_in_process(config_for(other, tmp_path, store_location), users_input(20), tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert rows_sent(other) == 20, "another host starts from nothing"


def wait_for_log(path: Path, text: str, timeout: float = 30) -> bool:
    """Whether `text` shows up in the log file at `path` within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text():
            return True
        time.sleep(0.05)
    return False


def test_an_overlapping_run_on_the_same_account_stops_naming_the_other(
    emulator: Emulator, tmp_path: Path, store_location: StoreLocation
) -> None:
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    first_dir.mkdir()
    second_dir.mkdir()
    cfg = config_for(emulator, tmp_path, store_location, max_batch_rows=5)
    go_on = threading.Event()

    def slow_tap() -> Iterator[dict[str, Any]]:
        messages = users_input(20)
        yield from messages[:6]
        go_on.wait(timeout=60)
        yield from messages[6:]

    runs: list[Any] = []
    first = threading.Thread(target=lambda: runs.append(run_target(cfg, slow_tap(), first_dir)))
    first.start()
    try:
        assert wait_for_log(first_dir / "stderr.log", "Fingerprints are kept in"), "store opened"
        second = run_target(cfg, users_input(20), second_dir)
    finally:
        go_on.set()
        first.join(timeout=60)
    assert second.returncode == 1
    assert second.states == []
    assert "Traceback" not in second.stderr
    (error,) = [line for line in second.stderr.splitlines() if "target-userpilot failed" in line]
    assert "in use by another target-userpilot run" in error
    assert re.search(rf"host {re.escape(socket.gethostname())}, pid \d+, started 20", error)
    assert f"`fingerprint_store_{next(iter(store_location))}`" in error
    (done,) = runs
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(emulator.users) == 20
    assert rows_sent(emulator) == 20, "the second run sent nothing"


def test_kill_9_mid_run_loses_nothing(
    make_emulator: Callable[..., Emulator], tmp_path: Path, store_location: StoreLocation
) -> None:
    emu = make_emulator(token=TOKEN, rows_per_minute=120_000)  # a 500-row job takes 0.25 s
    messages = list(interleaved(users=3_000, companies=0, state_every=250))
    cfg = config_for(emu, tmp_path, store_location, max_batch_rows=500)

    def kill_at_second_job(seen: StateSeen, proc: subprocess.Popen[bytes]) -> None:
        if seen.value["bookmarks"]["records"] >= 1_000:
            proc.kill()

    killed = run_target(cfg, messages, tmp_path, emulator=emu, on_state=kill_at_second_job)
    assert killed.returncode == -9
    assert 0 < len(emu.users) < 3_000
    # The next run starts at once (the lock died with the process) and sends what is missing.
    rerun = run_target(cfg, messages, tmp_path, emulator=emu)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert len(emu.users) == 3_000
    # Every fingerprint the killed run kept was for a profile Userpilot had: none is lost, and
    # a third run finds nothing to send.
    sent = rows_sent(emu)
    again = run_target(cfg, messages, tmp_path, emulator=emu)
    assert again.returncode == 0, again.stderr[-2000:]
    assert rows_sent(emu) == sent
    assert "3,000 unchanged skipped" in again.stderr


def _write_corrupt_store(path: Path) -> None:
    path.write_bytes(b"this is not a database" * 100)


def _write_foreign_store(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, total REAL)")


@pytest.mark.parametrize(
    ("make_store", "aside", "says"),
    [
        (_write_corrupt_store, "corrupt", "unreadable"),
        (_write_foreign_store, "not-ours", "not a target-userpilot fingerprint store"),
    ],
)
def test_an_sqlite_store_that_is_not_usable_is_set_aside_and_everything_sent(
    emulator: Emulator,
    tmp_path: Path,
    make_store: Callable[[Path], None],
    aside: str,
    says: str,
) -> None:
    make_store(tmp_path / "fingerprints.sqlite")
    run = run_target(config_for(emulator, tmp_path), users_input(10), tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    (warning,) = [line for line in run.stderr.splitlines() if "WARNING" in line]
    assert says in warning
    assert "full resend" in warning
    assert rows_sent(emulator) == 10
    assert list(tmp_path.glob(f"fingerprints.sqlite.{aside}-*"))


def test_the_database_password_never_appears_in_any_output(
    emulator: Emulator, tmp_path: Path, pg_url: str
) -> None:
    url = make_url(pg_url)
    password = str(url.password)
    cfg = config_for(emulator, tmp_path, {"url": pg_url})
    outputs: list[str] = []

    ok = run_target(cfg, users_input(10), tmp_path, env={"LOGLEVEL": "DEBUG"})
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert f"PostgreSQL database 'postgres' on {url.host}:{url.port}" in ok.stderr
    outputs += [ok.stderr, *ok.stdout_lines]

    wrong = "wrong-Pa$$word-73"
    wrong_password = url.set(password=wrong).render_as_string(hide_password=False)
    unreachable = url.set(port=1).render_as_string(hide_password=False)
    for bad_url, secret in ((wrong_password, wrong), (unreachable, password)):
        failed = run_target({**cfg, "fingerprint_store_url": bad_url}, users_input(1), tmp_path)
        assert failed.returncode == 1
        assert "Traceback" not in failed.stderr
        (error,) = [line for line in failed.stderr.splitlines() if "failed" in line.lower()]
        assert "`fingerprint_store_url`" in error
        assert "database 'postgres' on" in error
        assert secret not in failed.stderr
        outputs += [failed.stderr, *failed.stdout_lines]

    config = str(tmp_path / "config.json")
    about = subprocess.run(
        [sys.executable, "-m", "target_userpilot.target", "--about", "--config", config],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "fingerprint_store_url" in about.stdout
    outputs.append(about.stdout + about.stderr)
    assert not [text[:200] for text in outputs if password in text]
    assert emulator.jobs, "the good run sent its profiles"
