"""Events through the Track API, end to end against the emulator: through the real CLI for the
pace, STATE as it comes out and a kill; the rest in process."""

from __future__ import annotations

import datetime as dt
import json
import logging
import signal
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

import pytest
from click.testing import CliRunner
from pg_fixtures import (  # noqa: F401 - fixtures, found by name
    StoreLocation,
    pg_server_url_fixture,
    pg_url_fixture,
    store_location_fixture,
    store_settings,
)
from singer_io import (
    USER_SCHEMA,
    dead_letters,
    dry_run_output,
    record,
    run_in_process,
    run_target,
    schema,
    state,
    user,
)
from test_target import config_for

from target_userpilot.fingerprints import FingerprintStore, FingerprintStoreError
from target_userpilot.run.event_flow import systematic
from target_userpilot.target import TargetUserpilot

if TYPE_CHECKING:
    import subprocess
    from collections.abc import Callable
    from pathlib import Path

    from singer_io import StateSeen

    from target_userpilot.emulator import Emulator

EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "event_id": {"type": "string"},
        "user_id": {"type": ["integer", "string", "null"]},
        "event_name": {"type": ["string", "null"]},
        "amount": {"type": ["number", "null"]},
        "paid_at": {"type": ["string", "null"], "format": "date-time"},
        "lines": {"type": ["array", "null"]},
        "_sdc_extracted_at": {"type": ["string", "null"]},
    },
}
FAST = {"track_requests_per_minute": 600}  # the pace is the wire tests' subject; be quick


def paid(event_id: str, user_id: object, name: str | None = "invoice_paid") -> dict[str, Any]:
    rec: dict[str, Any] = {"event_id": event_id, "user_id": user_id, "amount": 12.5}
    if name is not None:
        rec["event_name"] = name
    return record("events", rec)


def users_then_events(count: int) -> list[dict[str, Any]]:
    return [
        schema("users", USER_SCHEMA),
        *(record("users", user(i)) for i in range(1, count + 1)),
        state({"users": "done"}),
        schema("events", EVENT_SCHEMA, key="event_id"),
        *(paid(f"e{i}", i) for i in range(1, count + 1)),
        state({"events": "done"}),
    ]


def events_of(emu: Emulator) -> list[dict[str, Any]]:
    return list(emu.events["events"])


def letters(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "dead-letters.ndjson"
    return dead_letters(path) if path.exists() else []


def test_events_arrive_once_each_after_their_users_and_gate_state(
    make_emulator: Callable[..., Emulator], tmp_path: Path
) -> None:
    # 300 rows a minute: the users' job takes a second, while events are ready at once.
    emu = make_emulator(rows_per_minute=300)
    tracked_at_state: list[int] = []

    def seen(_: StateSeen, __: subprocess.Popen[bytes]) -> None:
        tracked_at_state.append(emu.events["count"])

    run = run_target(
        config_for(emu, tmp_path, **FAST), users_then_events(5), tmp_path, on_state=seen
    )
    assert run.returncode == 0, run.stderr
    events = events_of(emu)
    assert sorted(e["user_id"] for e in events) == ["1", "2", "3", "4", "5"]
    assert all(e["user_existed"] for e in events), "an event came before its user"
    assert [s.value for s in run.states][-1] == {"events": "done"}
    assert tracked_at_state[-1] == 5, "STATE passed events not yet accepted"
    arrivals = [dt.datetime.fromisoformat(e["received_at"]).timestamp() for e in events]
    assert arrivals[-1] - arrivals[0] >= 0.3, "five events at 600 a minute take 0.4 s"
    assert "tracked 5 events (0 sent before skipped, 0 refused by Userpilot)" in run.stderr


def test_metadata_follows_the_profile_rules_and_names_come_from_settings(
    emulator: Emulator, tmp_path: Path
) -> None:
    messages = [
        schema("payments", EVENT_SCHEMA, key="event_id"),
        record(
            "payments",
            {
                "event_id": "e1",
                "user_id": 7,
                "event_name": "ignored",
                "amount": 12.5,
                "paid_at": "2026-03-04T12:00:00+01:00",
                "lines": [1, 2],
                "_sdc_extracted_at": "2026-03-04T12:00:00Z",
            },
        ),
    ]
    cfg = config_for(
        emulator,
        tmp_path,
        stream_kinds={"payments": "events"},
        event_names={"payments": "invoice_paid"},
        **FAST,
    )
    run = run_in_process(cfg, messages, tmp_path)
    assert run.returncode == 0, run.stderr
    [event] = events_of(emulator)
    assert event["user_id"] == "7"
    assert event["event_name"] == "invoice_paid"
    assert event["metadata"] == {
        "event_id": "e1",
        "event_name": "ignored",  # a fixed name leaves the property as metadata
        "amount": 12.5,
        "paid_at": "2026-03-04T11:00:00Z",
        "lines": "[1,2]",
    }


def test_a_rerun_with_send_only_changes_sends_no_event_twice(
    emulator: Emulator, tmp_path: Path, store_location: StoreLocation
) -> None:
    cfg = config_for(
        emulator, tmp_path, send_only_changes=True, **store_settings(store_location), **FAST
    )
    first = run_in_process(cfg, users_then_events(3), tmp_path)
    assert first.returncode == 0, first.stderr
    assert emulator.events["count"] == 3

    messages = [*users_then_events(3)[:-1], paid("e4", 1), state({"events": "again"})]
    again = run_in_process(cfg, messages, tmp_path)
    assert again.returncode == 0, again.stderr
    assert [e["metadata"]["event_id"] for e in events_of(emulator)] == ["e1", "e2", "e3", "e4"]
    assert "tracked 1 event (3 sent before skipped, 0 refused by Userpilot)" in again.stderr
    assert [s.value for s in again.states][-1] == {"events": "again"}


def test_refused_and_invalid_events_are_dead_letters_and_the_run_goes_on(
    make_emulator: Callable[..., Emulator], tmp_path: Path
) -> None:
    emu = make_emulator(rows_per_minute=float("inf"), reject_ids=frozenset({"bad"}))
    messages = [
        schema("events", EVENT_SCHEMA, key="event_id"),
        *(paid(f"e{i}", f"u{i}") for i in range(1, 5)),
        paid("e5", "bad"),
        paid("e6", None),
        paid("e7", "u7", name=None),
        state({"events": "done"}),
    ]
    run = run_in_process(config_for(emu, tmp_path, **FAST), messages, tmp_path)
    assert run.returncode == 0, run.stderr
    assert emu.events["count"] == 4
    found = {
        letter["record" if "record" in letter else "profile"].get("user_id"): letter
        for letter in letters(tmp_path)
    }
    assert "refused by Userpilot" in found["bad"]["reason"]
    assert found["bad"]["kind"] == "events"
    assert "missing event user id: property 'user_id' is null" in found[None]["reason"]
    assert "missing event name" in found["u7"]["reason"]
    assert [s.value for s in run.states] == [{"events": "done"}]


def test_systematic_refusals_stop_the_run_without_state(
    make_emulator: Callable[..., Emulator], tmp_path: Path
) -> None:
    emu = make_emulator(rows_per_minute=float("inf"), reject_ids=frozenset({"u1", "u2", "u3"}))
    messages = [
        schema("events", EVENT_SCHEMA, key="event_id"),
        *(paid(f"e{i}", f"u{i}") for i in range(1, 4)),
        state({"events": "done"}),
    ]
    run = run_in_process(config_for(emu, tmp_path, **FAST), messages, tmp_path)
    assert run.returncode == 1
    assert "systematic problem" in run.stderr
    assert "Traceback" not in run.stderr
    assert run.states == []


def test_a_dry_run_writes_the_request_bodies(emulator: Emulator, tmp_path: Path) -> None:
    cfg = config_for(emulator, tmp_path, dry_run=True, dry_run_dir=str(tmp_path / "dry"))
    run = run_in_process(cfg, users_then_events(2), tmp_path)
    assert run.returncode == 0, run.stderr
    bodies = (dry_run_output(tmp_path / "dry") / "track-events.ndjson").read_text().splitlines()
    assert [json.loads(b) for b in bodies] == [
        {
            "user_id": str(i),
            "event_name": "invoice_paid",
            "metadata": {"event_id": f"e{i}", "amount": 12.5},
        }
        for i in (1, 2)
    ]
    assert emulator.events["count"] == 0
    assert "would track 2 events" in run.stderr


def test_refusals_are_systematic_past_half_or_ten_per_ten_thousand() -> None:
    assert not systematic(1, 1)  # the first event refused: maybe one bad event
    assert systematic(2, 2)
    assert not systematic(10, 10_000)
    assert systematic(11, 10_000)
    assert not systematic(20, 20_000)


def test_a_killed_run_resumed_from_its_state_loses_no_event_and_resends_at_most_one(
    emulator: Emulator, tmp_path: Path
) -> None:
    total = 12

    def messages(start: int) -> list[dict[str, Any]]:
        out = [schema("events", EVENT_SCHEMA, key="event_id")]
        for n in range(start + 1, total + 1):
            out += [paid(f"e{n}", "u1"), state({"records": n})]
        return out

    def kill_after_five(proc: subprocess.Popen[bytes]) -> None:
        for _ in range(600):  # at most 30 s
            if emulator.events["count"] >= 5:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)

    cfg = config_for(
        emulator,
        tmp_path,
        send_only_changes=True,
        fingerprint_store_path=str(tmp_path / "fp.sqlite"),
        **FAST,
    )
    killed = run_target(cfg, messages(0), tmp_path, on_start=kill_after_five)
    assert killed.returncode == -signal.SIGKILL
    sent_before_kill = emulator.events["count"]
    last = killed.states[-1].value["records"] if killed.states else 0
    assert last <= sent_before_kill, "STATE passed an event not accepted"
    resumed = run_target(cfg, messages(last), tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    arrived = Counter(e["metadata"]["event_id"] for e in events_of(emulator))
    assert set(arrived) == {f"e{n}" for n in range(1, total + 1)}
    # Only an event accepted in the instant before the kill, not yet remembered, comes twice.
    assert sum(arrived.values()) - total <= 1


def test_events_stop_before_sending_once_the_store_lost_its_run_lock(
    emulator: Emulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The PostgreSQL store's check before each request (issue 22): a database restart dropped
    # its advisory lock and another run took it, after the first two events went out.
    checks = 0
    lost = "another target-userpilot run took the fingerprint store's lock meanwhile"

    def lock_lost_after_two(store: FingerprintStore) -> None:
        nonlocal checks
        checks += 1
        if checks > 2:
            raise FingerprintStoreError(lost)

    monkeypatch.setattr(FingerprintStore, "check_session", lock_lost_after_two)
    config = config_for(
        emulator,
        tmp_path,
        send_only_changes=True,
        fingerprint_store_path=str(tmp_path / "fp.sqlite"),
        **FAST,
    )
    (tmp_path / "config.json").write_text(json.dumps(config))
    messages = [schema("events", EVENT_SCHEMA, key="event_id")]
    messages += [paid(f"e{n}", "u1") for n in range(1, 6)] + [state({"events": "done"})]
    (tmp_path / "input.jsonl").write_text("".join(json.dumps(m) + "\n" for m in messages))
    with caplog.at_level(logging.INFO):
        result = CliRunner().invoke(
            TargetUserpilot.cli,
            ["--config", str(tmp_path / "config.json"), "--input", str(tmp_path / "input.jsonl")],
        )

    assert result.exit_code == 1, result.output
    assert emulator.events["count"] == 2, "an event went out after the lock was lost"
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [f"target-userpilot failed: {lost}"]
    assert result.stdout == "", "a STATE past events never sent"
