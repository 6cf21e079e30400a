"""The owner of a run's state: in-process against a fake Userpilot, and through the CLI."""

from __future__ import annotations

import logging
import random
import time
from typing import TYPE_CHECKING, Any

import pytest
from fake_userpilot import FakeClient, MemoryStore, settings_for
from singer_io import USER_SCHEMA, record, run_target, schema, state, user

from target_userpilot.fingerprints import FingerprintStore, scope_for
from target_userpilot.pipeline import Pipeline
from target_userpilot.profiles import Profile
from target_userpilot.rejections import TooManyInvalidError

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


# --- the owner, in-process against a fake Userpilot -----------------------------------------


def pipeline_for(
    tmp_path: Path,
    client: FakeClient,
    states: list[dict[str, Any]],
    store: MemoryStore | None = None,
    **config: Any,
) -> Pipeline:
    pipeline = Pipeline(
        settings_for(tmp_path, **config),
        client=client,  # type: ignore[arg-type]
        emit_state=states.append,
        logger=logging.getLogger("test-pipeline"),
        fingerprints=store,
    )
    pipeline.start()
    return pipeline


def feed(pipeline: Pipeline, rng: random.Random, count: int) -> dict[str, int]:
    """`count` records of a few ids with values that change and revert; the last value of each."""
    last: dict[str, int] = {}
    for _ in range(count):
        position = pipeline.next_position()
        pid, value = str(rng.randint(1, 8)), rng.randint(0, 2)
        pipeline.add("users", "users", position, Profile(pid, None, {"v": value}))
        last[pid] = value
        if rng.random() < 0.2:
            pipeline.add_state({"at": position})
    return last


@pytest.mark.parametrize("seed", range(200))
def test_stress_changes_only_413_splits_failing_jobs_tiny_batches(
    tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)  # noqa: S311 - a test's choices, not a secret
    client = FakeClient(max_rows=rng.choice([1, 2, 3]), fail_every=rng.choice([0, 3, 5]))
    store = MemoryStore()
    for run in range(2):  # the second run finds most profiles unchanged
        states: list[dict[str, Any]] = []
        pipeline = pipeline_for(
            tmp_path, client, states, store, max_batch_rows=rng.randint(1, 6), job_retries=2
        )
        try:
            last = feed(pipeline, rng, 40)
            pipeline.add_state({"at": "end", "run": run})
            pipeline.finish()
        finally:
            pipeline.close()
        assert states[-1] == {"at": "end", "run": run}
        for pid, value in last.items():
            assert client.profiles["users", pid]["v"] == value, f"id {pid} holds a stale value"
        assert list((tmp_path / "batches").iterdir()) == []


def test_a_profile_too_large_for_any_batch_is_dead_lettered_and_state_goes_out(
    tmp_path: Path,
) -> None:
    client = FakeClient()
    states: list[dict[str, Any]] = []
    pipeline = pipeline_for(tmp_path, client, states, max_batch_bytes=1024)
    huge = Profile("1", None, {"blob": "x" * 2000})
    pipeline.add("users", "users", pipeline.next_position(), huge)
    pipeline.add_state({"n": 1})
    assert list((tmp_path / "batches").glob("*/*.ndjson")) == [], "no batch opened for it"
    for n in (2, 3):
        pipeline.add("users", "users", pipeline.next_position(), Profile(str(n), None, {}))
    pipeline.add_state({"n": 3})
    pipeline.finish()
    pipeline.close()
    assert client.uploads == 1, "one batch, never an empty one"
    assert states == [{"n": 1}, {"n": 3}]
    assert pipeline.counters.invalid == 1


def test_a_merge_that_would_overflow_ships_the_batch_and_starts_the_next(tmp_path: Path) -> None:
    client = FakeClient()
    states: list[dict[str, Any]] = []
    pipeline = pipeline_for(tmp_path, client, states, max_batch_bytes=1024)
    pipeline.add("users", "users", pipeline.next_position(), Profile("1", None, {"a": "x" * 600}))
    pipeline.add("users", "users", pipeline.next_position(), Profile("1", None, {"b": "y" * 600}))
    pipeline.add_state({"n": 2})
    pipeline.finish()
    pipeline.close()
    assert pipeline.counters.invalid == 0
    assert client.jobs == 2
    assert client.profiles["users", "1"] == {"a": "x" * 600, "b": "y" * 600}
    assert states == [{"n": 2}]


def test_rows_rejected_without_detail_are_not_fingerprinted(tmp_path: Path) -> None:
    client, store = FakeClient(unnamed_errors=1), MemoryStore()
    states: list[dict[str, Any]] = []
    pipeline = pipeline_for(tmp_path, client, states, store)
    for n in range(3):
        pipeline.add("users", "users", pipeline.next_position(), Profile(str(n), None, {}))
    pipeline.finish()
    pipeline.close()
    assert client.jobs == 1
    assert store.digests == {}, "the rejected rows are sent again next run"


def test_the_lag_flush_runs_on_the_input_timer(tmp_path: Path) -> None:
    client = FakeClient()
    states: list[dict[str, Any]] = []
    pipeline = pipeline_for(tmp_path, client, states, max_checkpoint_lag_minutes=0.001)
    pipeline.add("users", "users", pipeline.next_position(), Profile("1", None, {}))
    pipeline.add_state({"n": 1})
    deadline = time.monotonic() + 10
    while not states and time.monotonic() < deadline:
        time.sleep(0.05)
        pipeline.tick()  # what the input timer does while the tap is silent
    pipeline.close()
    assert states == [{"n": 1}]
    assert pipeline.counters.early_flushes == 1


def test_invalid_records_past_the_share_stop_before_state_passes_them(tmp_path: Path) -> None:
    client = FakeClient()
    states: list[dict[str, Any]] = []
    pipeline = pipeline_for(tmp_path, client, states)
    for n in range(99):
        position = pipeline.next_position()
        pipeline.add_state({"n": n})
        pipeline.reject("users", "users", position, "no id", {"n": n})
    position = pipeline.next_position()
    with pytest.raises(TooManyInvalidError, match=r"stream 'users'.*`max_invalid_share`"):
        pipeline.reject("users", "users", position, "no id", {"n": 100})
    pipeline.close()
    assert states == [{"n": 0}], "nothing past the first invalid record"
