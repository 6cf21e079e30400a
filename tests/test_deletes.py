"""Deletions that follow the source (`hard_delete`) against the emulator: through the real CLI
where a process matters (kills, a stop, the daily run, each dry run's folder), the rest in
process (the ten thousand deletions on a fake clock)."""

from __future__ import annotations

import io
import json
import os
import signal
import time
from typing import TYPE_CHECKING, Any
from unittest import mock

import pytest
from fuzz.strategies import MARK_VALUES
from singer_io import (
    dead_letters,
    dry_run_output,
    record,
    run_in_process,
    run_target,
    schema,
    state,
)
from test_target import config_for

from target_userpilot.target import TargetUserpilot
from target_userpilot.wire.retry import Pace

if TYPE_CHECKING:
    import subprocess
    from collections.abc import Callable, Iterable
    from pathlib import Path

    from fake_clock import FakeClock

    from target_userpilot.emulator import Emulator

# A tap-postgres-like stream: string ids, the log-based replication's `_sdc_deleted_at`.
PEOPLE: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "email": {"type": ["string", "null"]},
        "_sdc_deleted_at": {"type": ["string", "null"], "format": "date-time"},
    },
}
ORGS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "name": {"type": ["string", "null"]},
        "is_deleted": {"type": ["boolean", "null"]},
    },
}
GONE = "2026-03-04T10:00:00Z"


def person(pid: str, *, deleted: bool = False, email: str | None = None) -> dict[str, Any]:
    rec = {"id": pid, "email": email or f"{pid}@example.com"}
    return record("users", {**rec, "_sdc_deleted_at": GONE} if deleted else rec)


def people(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [schema("users", PEOPLE), *records, state({"done": True})]


def deletes(emu: Emulator) -> list[Any]:
    return [r for r in emu.requests if r.method == "DELETE"]


def scheduled(emu: Emulator) -> list[str]:
    return [s.id for s in emu.deletions.pending]


def kill_once_scheduled(
    emulator: Emulator, count: int
) -> Callable[[subprocess.Popen[bytes]], None]:
    """SIGKILL the target once the emulator holds `count` scheduled deletions (a 202 came)."""

    def kill(proc: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(emulator.deletions.pending) < count:
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)

    return kill


def test_records_marked_deleted_delete_their_profiles_at_the_daily_run(
    emulator: Emulator, tmp_path: Path
) -> None:
    orgs = [schema("companies", ORGS)]
    created = [
        *people(person(f"p{i}") for i in range(1, 6)),
        *orgs,
        *(record("companies", {"id": f"o{i}", "name": f"Org {i}"}) for i in (1, 2)),
    ]
    assert run_target(config_for(emulator, tmp_path), created, tmp_path).returncode == 0

    marked = [
        *people([person("p2", deleted=True), person("p3"), person("p4", deleted=True)]),
        *orgs,
        record("companies", {"id": "o1", "name": "Org 1", "is_deleted": False}),
        record("companies", {"id": "o2", "name": "Org 2", "is_deleted": True}),
        state({"done": "orgs"}),
    ]
    cfg = config_for(emulator, tmp_path, hard_delete=True, deleted_property="is_deleted")
    run = run_target(cfg, marked, tmp_path, emulator=emulator)

    assert run.returncode == 0, run.stderr
    assert [s.value for s in run.states][-1] == {"done": "orgs"}
    assert "deletion of 2 users and 1 company scheduled for 02:00 UTC in 2 requests" in run.stderr
    assert "p2" not in run.stderr  # ids only at DEBUG
    # Scheduled, not applied: Userpilot deletes at its daily run.
    assert sorted(scheduled(emulator)) == ["o2", "p2", "p4"]
    assert {"p2", "p4"} <= set(emulator.users)
    emulator.run_daily_deletions()
    assert sorted(emulator.users) == ["p1", "p3", "p5"]
    assert sorted(emulator.companies) == ["o1"]
    # The deletion mark is bookkeeping, never a trait.
    assert "is_deleted" not in emulator.companies["o1"]["metadata"]


def test_without_hard_delete_a_marked_record_is_identified_as_before(
    emulator: Emulator, tmp_path: Path
) -> None:
    run = run_in_process(
        config_for(emulator, tmp_path), people([person("p1", deleted=True)]), tmp_path
    )
    assert run.returncode == 0, run.stderr
    assert set(emulator.users) == {"p1"}
    assert not deletes(emulator)


def test_the_guard_stops_a_run_that_would_delete_too_much_with_no_deletion_sent(
    emulator: Emulator, tmp_path: Path
) -> None:
    messages = people(
        person(f"p{i}", deleted=i % 2 == 0) for i in range(1, 401)
    )  # 200 deletions of 400 records: past the default 10%
    run = run_in_process(config_for(emulator, tmp_path, hard_delete=True), messages, tmp_path)

    assert run.returncode == 1
    assert "This run would delete 200 profiles (200 users, 0 companies)" in run.stderr
    assert "`max_deletes_per_run` (10%)" in run.stderr
    assert "Traceback" not in run.stderr
    assert not deletes(emulator)
    assert not run.states  # the STATE comes after the deletions
    # The same input passes once the limit allows it.
    cfg = config_for(emulator, tmp_path, hard_delete=True, max_deletes_per_run="50%")
    assert run_in_process(cfg, messages, tmp_path).returncode == 0
    assert len(scheduled(emulator)) == 200


def test_delete_then_recreate_the_last_word_for_an_id_wins(
    emulator: Emulator, tmp_path: Path
) -> None:
    setup = people(person(p) for p in ("a", "b", "c"))
    assert run_in_process(config_for(emulator, tmp_path), setup, tmp_path).returncode == 0
    messages = people(
        [
            person("a", deleted=True),
            person("a", email="back@example.com"),  # re-created: a stays
            person("b", email="new@example.com"),
            person("b", deleted=True),  # deleted last: b goes
            person("c", deleted=True),
            person("c"),
            person("c", deleted=True),  # deleted last again: c goes
        ]
    )
    cfg = config_for(emulator, tmp_path, hard_delete=True, max_deletes_per_run=10)
    run = run_in_process(cfg, messages, tmp_path)

    assert run.returncode == 0, run.stderr
    assert "2 cancelled by a later record" in run.stderr
    assert sorted(scheduled(emulator)) == ["b", "c"]
    emulator.run_daily_deletions()
    assert sorted(emulator.users) == ["a"]
    assert emulator.users["a"]["metadata"]["email"] == "back@example.com"


def test_a_dry_run_lists_the_deletions_and_sends_nothing(
    emulator: Emulator, tmp_path: Path
) -> None:
    dry = tmp_path / "dry"
    cfg = config_for(emulator, tmp_path, hard_delete=True, dry_run=True, dry_run_dir=str(dry))
    messages = people([person("p1", deleted=True), person("p2"), person("p3", deleted=True)])
    run = run_in_process(cfg, messages, tmp_path)

    assert run.returncode == 0, run.stderr
    assert "would delete 2 users and 0 companies in 1 file" in run.stderr
    listed = json.loads((dry_run_output(dry) / "delete-users-0001.json").read_text())
    assert listed == {"users": ["p1", "p3"]}
    assert not deletes(emulator)
    assert not emulator.users


def test_a_recreated_profile_is_sent_again_after_its_deletion_with_send_only_changes(
    emulator: Emulator, tmp_path: Path
) -> None:
    cfg = config_for(
        emulator,
        tmp_path,
        hard_delete=True,
        send_only_changes=True,
        fingerprint_store_path=str(tmp_path / "fp.sqlite"),
        max_deletes_per_run=10,
    )
    assert run_in_process(cfg, people([person("p1")]), tmp_path).returncode == 0
    assert run_in_process(cfg, people([person("p1", deleted=True)]), tmp_path).returncode == 0
    emulator.run_daily_deletions()
    assert not emulator.users
    run = run_in_process(cfg, people([person("p1")]), tmp_path)  # the same line as the first run
    assert run.returncode == 0, run.stderr
    assert set(emulator.users) == {"p1"}


def test_a_kill_between_a_deletions_202_and_its_state_loses_nothing(
    emulator: Emulator, tmp_path: Path
) -> None:
    total = 2_500  # three delete requests of at most 1,000 ids, 2.1 s apart
    ids = [f"p{i}" for i in range(1, total + 1)]

    def messages(start: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = [schema("users", PEOPLE)]
        for n in range(start + 1, total + 1):
            out += [person(ids[n - 1], deleted=True), state({"records": n})]
        return out

    cfg = config_for(emulator, tmp_path, hard_delete=True, max_deletes_per_run=total)
    killed = run_target(cfg, messages(0), tmp_path, on_start=kill_once_scheduled(emulator, 2_000))
    assert killed.returncode == -signal.SIGKILL
    assert len(emulator.deletions.pending) == 2_000  # two requests accepted, the third unsent
    last = killed.states[-1].value["records"] if killed.states else 0
    assert last >= 1_000  # the first 202's STATE came out during the 2 s pause

    resumed = run_target(cfg, messages(last), tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    done = scheduled(emulator)
    assert set(done) == set(ids)  # nothing lost
    assert len(done) - total == 2_000 - last <= 1_000  # resent: only what no STATE covered


def test_ten_thousand_deletions_never_meet_the_rate_limit(
    clocked_emulator: Emulator, fake_clock: FakeClock, tmp_path: Path
) -> None:
    # In process, the target's waits and the emulator's rate limit on one fake clock: the ten
    # requests keep their 2 s pace without 20 s of real waiting (the CLI runs above pace too).
    total = 10_000
    cfg = config_for(clocked_emulator, tmp_path, hard_delete=True, max_deletes_per_run=total)
    messages = people(person(f"p{i}", deleted=True) for i in range(total))

    def on_fake_clock(**pace: Any) -> Pace:
        return Pace(**{**pace, "sleep": fake_clock.sleep, "clock": fake_clock})

    with mock.patch("target_userpilot.wire.client.Pace", on_fake_clock):
        TargetUserpilot(config=cfg).listen(
            io.StringIO("".join(f"{json.dumps(m)}\n" for m in messages))
        )

    requests = deletes(clocked_emulator)
    assert [r.status for r in requests] == [202] * 10
    assert len(scheduled(clocked_emulator)) == total
    assert fake_clock.sleeps, "the requests were paced on the fake clock"


@pytest.mark.parametrize(
    "path",
    [
        {},  # the fast per-record path
        {"stream_maps": {"users": {"email": "email.upper()"}}},  # the SDK's path
        {"add_record_metadata": True},  # the SDK keeps `_sdc_deleted_at` in the record
    ],
    ids=["fast path", "stream map", "record metadata"],
)
def test_every_record_path_sees_the_deletion_mark(
    emulator: Emulator, tmp_path: Path, path: dict[str, Any]
) -> None:
    cfg = config_for(emulator, tmp_path, hard_delete=True, max_deletes_per_run=1, **path)
    run = run_in_process(cfg, people([person("p1", deleted=True), person("p2")]), tmp_path)

    assert run.returncode == 0, run.stderr
    assert scheduled(emulator) == ["p1"]
    assert set(emulator.users) == {"p2"}
    assert not any(k.startswith("_sdc") for k in emulator.users["p2"]["metadata"])


# --- deletions you can trust (issue 21) ------------------------------------------------------

ANY_MARK: dict[str, Any] = {"type": ["string", "boolean", "integer", "null"]}


# Every row of the mark table (`MARK_VALUES`, which the fuzz suite draws too), for
# `_sdc_deleted_at` (declared `format: date-time`, as taps do) and `deleted_property` alike.
def test_one_mark_table_decides_for_both_marks_through_the_cli(
    emulator: Emulator, tmp_path: Path
) -> None:
    users = {
        **PEOPLE,
        "properties": {
            **PEOPLE["properties"],
            "_sdc_deleted_at": {**ANY_MARK, "format": "date-time"},
        },
    }
    orgs = {**ORGS, "properties": {**ORGS["properties"], "is_deleted": ANY_MARK}}
    messages: list[dict[str, Any]] = [schema("users", users), schema("companies", orgs)]
    for n, (value, _) in enumerate(MARK_VALUES):
        messages.append(record("users", {"id": f"u{n}", "email": "x", "_sdc_deleted_at": value}))
        messages.append(record("companies", {"id": f"c{n}", "name": "x", "is_deleted": value}))
    messages.append(state({"done": True}))
    cfg = config_for(
        emulator,
        tmp_path,
        hard_delete=True,
        deleted_property="is_deleted",
        max_deletes_per_run=100,
        max_invalid_percent=100,
    )
    run = run_target(cfg, messages, tmp_path)

    assert run.returncode == 0, run.stderr
    letters = dead_letters(tmp_path / "dead-letters.ndjson")
    for prefix, named in (("u", "`_sdc_deleted_at`"), ("c", "`deleted_property` 'is_deleted'")):
        outcome = {f"{prefix}{n}": expected for n, (_, expected) in enumerate(MARK_VALUES)}
        loaded = emulator.users if prefix == "u" else emulator.companies
        assert {i for i in scheduled(emulator) if i[0] == prefix} == {
            i for i, o in outcome.items() if o == "deleted"
        }
        assert {i for i in loaded if i[0] == prefix} == {
            i for i, o in outcome.items() if o == "kept"
        }
        dead = [x for x in letters if str(x["record"]["id"]).startswith(prefix)]
        assert {x["record"]["id"] for x in dead} == {
            i for i, o in outcome.items() if o == "invalid"
        }
        assert all(named in x["reason"] for x in dead)


@pytest.mark.parametrize(
    "stream_maps",
    [
        {"users": {"id": "id", "email": "email", "__else__": None}},  # drops the mark
        {"users": {"email": "email.upper()"}},  # key-only records lack `email`
        {"users": {"user_id": "id", "id": "__NULL__", "__key_properties__": ["user_id"]}},
    ],
    ids=["whitelist", "one field", "renamed id"],
)
def test_a_stream_map_never_turns_a_deletion_into_an_update(
    emulator: Emulator, tmp_path: Path, stream_maps: dict[str, Any]
) -> None:
    setup = people(person(p) for p in ("p1", "p2", "p3"))
    assert run_in_process(config_for(emulator, tmp_path), setup, tmp_path).returncode == 0
    key_only = record("users", {"id": "p3", "_sdc_deleted_at": GONE})
    messages = people([person("p1", deleted=True), person("p2", email="new@x.io"), key_only])
    cfg = config_for(
        emulator, tmp_path, hard_delete=True, max_deletes_per_run=5, stream_maps=stream_maps
    )
    run = run_in_process(cfg, messages, tmp_path)

    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    assert sorted(scheduled(emulator)) == ["p1", "p3"]
    assert emulator.users["p1"]["metadata"]["email"] == "p1@example.com"  # not nulled
    emulator.run_daily_deletions()
    assert sorted(emulator.users) == ["p2"]


@pytest.mark.parametrize("fault", ["html200", "empty200", "302"])
def test_an_answer_that_is_no_acceptance_never_releases_state(
    emulator: Emulator, tmp_path: Path, fault: str
) -> None:
    emulator.set_faults(fail_rate=1.0, fault_kinds=(fault,))
    cfg = config_for(
        emulator, tmp_path, hard_delete=True, max_deletes_per_run=5, request_retry_max_time=1
    )
    run = run_in_process(cfg, people([person("p1"), person("p2", deleted=True)]), tmp_path)

    assert run.returncode == 1
    assert "accepted the deletion" not in run.stderr
    assert "Traceback" not in run.stderr
    assert not run.states
    assert not scheduled(emulator)
    assert set(emulator.users) == {"p1"}
    if fault == "302":
        assert "redirect (HTTP 302)" in run.stderr
        methods = [r.method for r in emulator.requests]
        assert methods[methods.index("DELETE") :] == ["DELETE"]  # the redirect not followed
    else:
        assert "no acceptance" in run.stderr


def test_a_resume_of_a_run_the_guard_allowed_completes(emulator: Emulator, tmp_path: Path) -> None:
    kept, gone = 16_000, 1_500  # 8.6% deletions, under the default 10%: two delete requests
    ids = [f"p{i}" for i in range(1, kept + gone + 1)]

    def messages(start: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = [schema("users", PEOPLE)]
        for n in range(start + 1, len(ids) + 1):
            out.append(person(ids[n - 1], deleted=n > kept))
            if n > kept or n % 1_000 == 0:
                out.append(state({"records": n}))
        return out

    cfg = config_for(emulator, tmp_path, hard_delete=True)
    killed = run_target(cfg, messages(0), tmp_path, on_start=kill_once_scheduled(emulator, 1_000))
    assert killed.returncode == -signal.SIGKILL
    assert len(emulator.deletions.pending) == 1_000
    last = killed.states[-1].value["records"]
    assert kept <= last < kept + gone  # mostly deletions left: judged alone, over 10%

    # The note lends nothing to deletions the killed run was not allowed: judged alone.
    others = people(person(f"x{i}", deleted=True) for i in range(200))
    unrelated = run_target(cfg, others, tmp_path)
    assert unrelated.returncode == 1
    assert "would delete 200 profiles" in unrelated.stderr
    assert not {s.id for s in emulator.deletions.pending} & {f"x{i}" for i in range(200)}

    resumed = run_target(cfg, messages(last), tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    left = kept + gone - last
    assert f"{left:,} deletions of this run were allowed to an earlier run" in resumed.stderr
    assert {s.id for s in emulator.deletions.pending} == set(ids[kept:])
    assert resumed.states[-1].value == {"records": kept + gone}
    # Done: the next run is judged alone again.
    alone = run_target(cfg, people(person(i, deleted=True) for i in ids[:200]), tmp_path)
    assert alone.returncode == 1
    assert "would delete 200 profiles" in alone.stderr


def test_a_stop_while_deletions_meet_429s_says_what_was_left(
    emulator: Emulator, tmp_path: Path
) -> None:
    def term_during_429s(proc: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not emulator.requests:
            time.sleep(0.005)  # the start-up check passed: from now on every request is a 429
        emulator.set_faults(fail_rate=1.0, fault_kinds=("429", "429date"), retry_after_seconds=0)
        while time.monotonic() < deadline and len(deletes(emulator)) < 2:
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGTERM)

    cfg = config_for(
        emulator, tmp_path, hard_delete=True, max_deletes_per_run=1_000, termination_grace=1
    )
    messages = people(person(f"p{i}", deleted=True) for i in range(150))
    run = run_target(cfg, messages, tmp_path, on_start=term_during_429s)

    assert run.returncode == 128 + signal.SIGTERM
    assert "Stopped after reading the whole input: 150 records received" in run.stderr
    assert "for the delete request in flight" in run.stderr
    assert "The deletion of 150 users was not accepted by Userpilot" in run.stderr
    assert "sends it again" in run.stderr
    assert "0 requests retried" not in run.stderr
    assert not run.states


def test_each_dry_run_writes_into_a_folder_of_its_own(emulator: Emulator, tmp_path: Path) -> None:
    dry = tmp_path / "dry"
    cfg = config_for(
        emulator,
        tmp_path,
        hard_delete=True,
        dry_run=True,
        dry_run_dir=str(dry),
        max_deletes_per_run=2_000,
    )
    first = run_target(cfg, people(person(f"p{i}", deleted=True) for i in range(1_001)), tmp_path)
    assert first.returncode == 0, first.stderr
    (earlier,) = dry.iterdir()
    assert sorted(p.name for p in earlier.iterdir()) == [
        "delete-users-0001.json",
        "delete-users-0002.json",
    ]

    second = run_target(cfg, people([person("q1", deleted=True), person("q2")]), tmp_path)
    assert second.returncode == 0, second.stderr
    (later,) = set(dry.iterdir()) - {earlier}
    written = sorted(p.name for p in later.iterdir())
    assert len(written) == 2  # one batch file, one delete request
    assert json.loads((later / "delete-users-0001.json").read_text()) == {"users": ["q1"]}
    assert f"would send 1 user and 0 companies in 1 file in {later}" in second.stderr
    assert "would delete 1 user and 0 companies in 1 file" in second.stderr
    assert len(list(earlier.iterdir())) == 2  # the first run's files untouched


def test_a_key_only_deletion_is_not_held_to_the_streams_schema(
    emulator: Emulator, tmp_path: Path
) -> None:
    strict = {**PEOPLE, "required": ["id", "email"]}  # log-based deletions carry the keys only
    messages = [
        schema("users", strict),
        record("users", {"id": "p1", "_sdc_deleted_at": GONE}),
        person("p2"),
        state({"done": True}),
    ]
    cfg = config_for(emulator, tmp_path, hard_delete=True, max_deletes_per_run=5)
    run = run_in_process(cfg, messages, tmp_path)

    assert run.returncode == 0, run.stderr
    assert scheduled(emulator) == ["p1"]
    assert set(emulator.users) == {"p2"}
    assert not (tmp_path / "dead-letters.ndjson").exists()


REGIONS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "region": {"type": ["string", "null"]},
        "_sdc_deleted_at": {"type": ["string", "null"], "format": "date-time"},
    },
}


def test_a_stream_maps_filter_decides_for_deletion_records_too(
    emulator: Emulator, tmp_path: Path
) -> None:
    def user(pid: str, region: str, **more: Any) -> dict[str, Any]:
        return record("users", {"id": pid, "region": region, **more})

    setup = [schema("users", REGIONS), *(user(p, "us") for p in ("p1", "p2", "p3"))]
    assert run_in_process(config_for(emulator, tmp_path), setup, tmp_path).returncode == 0
    messages = [
        schema("users", REGIONS),
        user("p1", "eu", _sdc_deleted_at=GONE),
        user("p2", "us", _sdc_deleted_at=GONE),  # the filter leaves it out: not deleted
        user("p4", "us"),  # nor loaded
        record("users", {"id": "p3", "_sdc_deleted_at": GONE}),  # the filter cannot tell
        state({"done": True}),
    ]
    eu_only = {"users": {"__filter__": "record['region'] == 'eu'"}}
    cfg = config_for(
        emulator, tmp_path, hard_delete=True, max_deletes_per_run=5, stream_maps=eu_only
    )
    run = run_in_process(cfg, messages, tmp_path)

    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    assert scheduled(emulator) == ["p1"]
    assert sorted(emulator.users) == ["p1", "p2", "p3"]
    (letter,) = dead_letters(tmp_path / "dead-letters.ndjson")
    assert letter["record"]["id"] == "p3"
    assert "__filter__" in letter["reason"]
    assert [s.value for s in run.states] == [{"done": True}]
