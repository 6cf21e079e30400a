"""The emulated Deletion API: scheduling, X-API-Version, auth, the 2-second limit, daily run."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
import requests
from fake_clock import FakeClock

from target_userpilot.emulator import Emulator

TOKEN = "test-token"  # noqa: S105 - the emulator's
HEADERS = {
    "Authorization": f"Token {TOKEN}",
    "Content-Type": "application/json",
    "X-API-Version": "2020-09-22",
}


@pytest.fixture
def emu(clocked_emulator: Emulator) -> Emulator:
    return clocked_emulator


def delete(
    emu: Emulator, kind: str, ids: Any, headers: dict[str, str] | None = None
) -> requests.Response:
    return requests.delete(
        f"{emu.url}/v1/{kind}",
        data=json.dumps({kind: ids}),
        headers=HEADERS if headers is None else headers,
        timeout=10,
    )


def load(emu: Emulator, kind: str, ids: list[str]) -> None:
    key = "user_id" if kind == "users" else "company_id"
    r = requests.post(
        f"{emu.url}/v1/{kind}/bulk_identify",
        json={kind: [{key: i, "metadata": {"plan": "pro"}} for i in ids]},
        headers=HEADERS,
        timeout=10,
    )
    assert r.status_code in {200, 202}, r.text


def test_a_deletion_is_scheduled_then_applied_by_the_daily_run(
    emu: Emulator, fake_clock: FakeClock
) -> None:
    load(emu, "users", ["u1", "u2", "u3"])
    r = delete(emu, "users", ["u1", "u2", "ghost"])
    assert r.status_code == 202
    assert r.json() == {"message": "3 users scheduled for deletion"}
    assert set(emu.users) == {"u1", "u2", "u3"}  # nothing deleted at once
    assert [(p.kind, p.id) for p in emu.deletions.pending] == [
        ("users", "u1"),
        ("users", "u2"),
        ("users", "ghost"),
    ]
    fake_clock.advance(60)
    applied = emu.run_daily_deletions()
    assert [(a.id, a.found) for a in applied] == [("u1", True), ("u2", True), ("ghost", False)]
    assert set(emu.users) == {"u3"}
    assert emu.deletions.pending == []
    assert len(emu.deletions.applied) == 3


def test_companies_are_deleted_independently_of_users(emu: Emulator) -> None:
    load(emu, "companies", ["c1", "c2"])
    load(emu, "users", ["c1"])  # a user whose id is also a company's
    r = delete(emu, "companies", ["c1"])
    assert r.status_code == 202
    assert r.json() == {"message": "1 company scheduled for deletion"}
    emu.run_daily_deletions()
    assert set(emu.companies) == {"c2"}
    assert set(emu.users) == {"c1"}


def test_without_x_api_version_or_json_answers_400_and_schedules_nothing(emu: Emulator) -> None:
    headers = {k: v for k, v in HEADERS.items() if k != "X-API-Version"}
    r = delete(emu, "users", ["u1"], headers)
    assert r.status_code == 400
    assert "X-API-Version" in r.json()["error"]
    r = delete(emu, "users", ["u1"], {**HEADERS, "X-API-Version": "2019-01-01"})
    assert r.status_code == 400
    r = delete(emu, "users", ["u1"], {**HEADERS, "Content-Type": "text/plain"})
    assert r.status_code == 400
    assert "application/json" in r.json()["error"]
    assert emu.deletions.pending == []


def test_a_bad_key_answers_401_without_echoing_it(emu: Emulator) -> None:
    r = delete(emu, "users", ["u1"], {**HEADERS, "Authorization": "Token wrong-key"})
    assert r.status_code == 401
    assert "wrong-key" not in r.text
    assert emu.deletions.pending == []


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"users": []}, "non-empty array"),
        ({"users": ["ok", 7]}, "users[2]"),
        ({"users": [""]}, "users[1]"),
        ({"companies": ["c1"]}, '{"users"'),
        (["u1"], '{"users"'),
    ],
)
def test_a_malformed_body_answers_400(emu: Emulator, body: Any, reason: str) -> None:
    r = requests.delete(f"{emu.url}/v1/users", data=json.dumps(body), headers=HEADERS, timeout=10)
    assert r.status_code == 400
    assert reason in r.json()["error"]
    assert emu.deletions.pending == []


def test_a_body_over_one_megabyte_answers_413(emu: Emulator) -> None:
    r = delete(emu, "users", ["x" * 1000] * 1100)
    assert r.status_code == 413
    assert emu.deletions.pending == []


def test_a_second_request_within_two_seconds_answers_429(
    emu: Emulator, fake_clock: FakeClock
) -> None:
    assert delete(emu, "users", ["u1"]).status_code == 202
    fake_clock.advance(1.9)
    r = delete(emu, "companies", ["c1"])  # the limit covers both kinds
    assert r.status_code == 429
    assert "2 seconds" in r.json()["error"]
    fake_clock.advance(0.1)
    assert delete(emu, "companies", ["c1"]).status_code == 202
    assert [(p.kind, p.id) for p in emu.deletions.pending] == [
        ("users", "u1"),
        ("companies", "c1"),
    ]


def test_other_methods_answer_405(emu: Emulator) -> None:
    r = requests.get(f"{emu.url}/v1/users", headers=HEADERS, timeout=10)
    assert r.status_code == 405
    assert r.headers["Allow"] == "DELETE"


def test_the_daily_run_applies_what_was_scheduled_before_0200_utc(
    emu: Emulator, fake_clock: FakeClock
) -> None:
    load(emu, "users", ["early", "late"])
    fake_clock.set(dt.datetime(2026, 3, 5, 1, 0, tzinfo=dt.timezone.utc))
    assert delete(emu, "users", ["early"]).status_code == 202
    fake_clock.set(dt.datetime(2026, 3, 5, 1, 59, 59, tzinfo=dt.timezone.utc))
    emu.tick()
    assert set(emu.users) == {"early", "late"}
    fake_clock.set(dt.datetime(2026, 3, 5, 2, 0, 1, tzinfo=dt.timezone.utc))
    assert delete(emu, "users", ["late"]).status_code == 202  # after today's run
    emu.tick()
    assert set(emu.users) == {"late"}
    assert [p.id for p in emu.deletions.pending] == ["late"]
    fake_clock.set(dt.datetime(2026, 3, 6, 2, 0, tzinfo=dt.timezone.utc))
    emu.tick()
    assert emu.users == {}


def test_a_profile_re_created_by_a_job_after_the_daily_run_comes_back(emu: Emulator) -> None:
    load(emu, "users", ["u1"])
    assert delete(emu, "users", ["u1"]).status_code == 202
    emu.run_daily_deletions()
    assert emu.users == {}
    load(emu, "users", ["u1"])
    assert set(emu.users) == {"u1"}


def test_the_run_endpoint_applies_pending_deletions(emu: Emulator) -> None:
    load(emu, "users", ["u1", "u2"])
    delete(emu, "users", ["u1", "u1", "nobody"])  # a repeated id is scheduled once
    r = requests.post(f"{emu.url}/_emulator/deletions/run", headers=HEADERS, timeout=10)
    assert r.status_code == 200
    assert r.json() == {"applied": 2, "deleted": 1}
    assert set(emu.users) == {"u2"}
    assert (
        requests.get(f"{emu.url}/_emulator/deletions/run", headers=HEADERS, timeout=10).status_code
        == 405
    )


def test_injected_faults_hit_the_deletion_api(emu: Emulator) -> None:
    emu.set_faults(fail_rate=1.0, fault_kinds=("503",))
    assert delete(emu, "users", ["u1"]).status_code == 503
    assert emu.deletions.pending == []
