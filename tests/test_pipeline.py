"""Send only what changed: fingerprints of confirmed profiles, through the real CLI."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from singer_io import USER_SCHEMA, record, run_target, schema, state, user

from target_userpilot.fingerprints import FingerprintStore, scope_for

if TYPE_CHECKING:
    from collections.abc import Callable
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


def config_for(emu: Emulator, tmp_path: Path, **extra: Any) -> dict[str, Any]:
    return {
        "api_key": TOKEN,
        "api_url": emu.url,
        "batch_dir": str(tmp_path / "batches"),
        "send_only_changes": True,
        "fingerprint_store_path": str(tmp_path / "fingerprints.sqlite"),
        "max_batch_rows": 100,
        **extra,
    }


def rows_sent(emu: Emulator) -> int:
    return sum(j.rows for j in emu.jobs if j.status == "completed")


def test_unchanged_profiles_are_not_sent_again(
    make_emulator: Callable[..., Emulator], tmp_path: Path
) -> None:
    emu = make_emulator(token=TOKEN, rows_per_minute=float("inf"))
    cfg = config_for(emu, tmp_path)
    first = run_target(cfg, users_input(300), tmp_path, emulator=emu)
    assert first.returncode == 0, first.stderr[-2000:]
    assert rows_sent(emu) == 300

    again = run_target(cfg, users_input(300), tmp_path, emulator=emu)
    assert again.returncode == 0, again.stderr[-2000:]
    assert rows_sent(emu) == 300, "nothing new sent"
    assert "300 unchanged skipped" in again.stderr
    assert [s.value for s in again.states] == [{"records": 300}]

    changed = run_target(
        cfg, users_input(300, changed=frozenset({7, 8, 9})), tmp_path, emulator=emu
    )
    assert changed.returncode == 0, changed.stderr[-2000:]
    assert rows_sent(emu) == 303
    assert emu.users["8"]["metadata"]["plan"] == "enterprise"


def test_a_failed_job_marks_nothing_as_sent(
    make_emulator: Callable[..., Emulator], tmp_path: Path
) -> None:
    emu = make_emulator(token=TOKEN, rows_per_minute=float("inf"))
    cfg = config_for(emu, tmp_path, job_retries=0)
    first = run_target(cfg, users_input(100), tmp_path, emulator=emu)
    assert first.returncode == 0, first.stderr[-2000:]
    # The next job (users 1-100, all changed) fails and the run stops.
    emu.set_faults(fail_jobs=1)
    failing = run_target(
        cfg, users_input(200, changed=frozenset(range(1, 101))), tmp_path, emulator=emu
    )
    assert failing.returncode == 1
    assert failing.states == []
    assert len([j for j in emu.jobs if j.status == "completed"]) == 1

    emu.set_faults(fail_jobs=0)
    rerun = run_target(
        cfg, users_input(200, changed=frozenset(range(1, 101))), tmp_path, emulator=emu
    )
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert rows_sent(emu) == 100 + 200, "every profile of the failed job was sent again"
    assert len(emu.users) == 200


def test_resend_all_and_resend_after_days_send_everything(
    make_emulator: Callable[..., Emulator], tmp_path: Path
) -> None:
    emu = make_emulator(token=TOKEN, rows_per_minute=float("inf"))
    assert run_target(config_for(emu, tmp_path), users_input(50), tmp_path).returncode == 0
    assert rows_sent(emu) == 50
    run = run_target(config_for(emu, tmp_path, resend_all=True), users_input(50), tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert rows_sent(emu) == 100
    run = run_target(config_for(emu, tmp_path, resend_after_days=0), users_input(50), tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert rows_sent(emu) == 150


def test_fingerprints_are_per_host_and_account(
    make_emulator: Callable[..., Emulator], tmp_path: Path
) -> None:
    first = make_emulator(token=TOKEN, rows_per_minute=float("inf"))
    other = make_emulator(token=TOKEN, rows_per_minute=float("inf"))
    assert run_target(config_for(first, tmp_path), users_input(20), tmp_path).returncode == 0
    run = run_target(config_for(other, tmp_path), users_input(20), tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert rows_sent(other) == 20, "another host starts from nothing"


def test_a_second_run_on_the_same_store_fails_clearly(emulator: Emulator, tmp_path: Path) -> None:
    cfg = config_for(emulator, tmp_path)
    with FingerprintStore(tmp_path / "fingerprints.sqlite", scope_for(emulator.url, TOKEN)):
        run = run_target(cfg, users_input(5), tmp_path)
    assert run.returncode == 1
    assert "fingerprint_store_path" in run.stderr
    assert "Traceback" not in run.stderr
    assert emulator.jobs == []


def test_a_corrupt_store_is_set_aside_and_everything_sent(
    emulator: Emulator, tmp_path: Path
) -> None:
    (tmp_path / "fingerprints.sqlite").write_bytes(b"this is not a database" * 100)
    run = run_target(config_for(emulator, tmp_path), users_input(10), tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "WARNING" in run.stderr
    assert rows_sent(emulator) == 10
    assert list(tmp_path.glob("fingerprints.sqlite.corrupt-*"))
