"""The emulator's read-only `/_emulator/` pages: profiles, jobs, deletions; HTTP and CLI."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable

import pytest
import requests
from test_emulator_cli import command

from target_userpilot.emulator import Emulator

AUTH = {"Authorization": "Token test-token"}


@pytest.fixture
def emulator(make_emulator: Callable[..., Emulator]) -> Emulator:
    """Jobs finish at once: these tests are about the pages, not job phases."""
    return make_emulator(
        rows_per_minute=float("inf"), validating_seconds=0.0, pending_refresh_seconds=0.0
    )


def get(emu: Emulator, path: str) -> requests.Response:
    return requests.get(emu.url + path, headers=AUTH, timeout=10)


def load(emu: Emulator) -> None:
    users = [
        {"user_id": "u1", "company_id": "acme", "metadata": {"plan": "pro"}},
        {"user_id": "team/a b", "metadata": {"seats": 3}},
    ]
    r = requests.post(
        f"{emu.url}/v1/users/bulk_identify", json={"users": users}, headers=AUTH, timeout=10
    )
    assert r.status_code in {200, 202}
    r = requests.post(
        f"{emu.url}/v1/companies/bulk_identify",
        json={"companies": [{"company_id": "acme", "metadata": {"tier": "gold"}}]},
        headers=AUTH,
        timeout=10,
    )
    assert r.status_code in {200, 202}


def test_stored_users_and_companies_are_listed_and_shown_one_by_one(emulator: Emulator) -> None:
    load(emulator)
    users = get(emulator, "/_emulator/users").json()
    assert users["count"] == 2
    assert {u["user_id"] for u in users["users"]} == {"u1", "team/a b"}
    one = get(emulator, "/_emulator/users/u1").json()
    assert one == {"user_id": "u1", "company_id": "acme", "metadata": {"plan": "pro"}}
    encoded = get(emulator, "/_emulator/users/team%2Fa%20b")
    assert encoded.json()["metadata"] == {"seats": 3}
    companies = get(emulator, "/_emulator/companies/").json()
    assert companies == {
        "count": 1,
        "companies": [{"company_id": "acme", "metadata": {"tier": "gold"}}],
    }
    missing = get(emulator, "/_emulator/companies/nope")
    assert missing.status_code == 404
    assert "nope" in missing.json()["error"]


def test_jobs_are_listed_with_their_outcome(emulator: Emulator) -> None:
    load(emulator)
    jobs = get(emulator, "/_emulator/jobs").json()
    assert jobs["count"] == 2
    first = jobs["jobs"][0]
    assert (first["kind"], first["rows"], first["status"]) == ("users", 2, "completed")
    assert first["submitted_at"].endswith("Z")
    assert first["finished_at"].endswith("Z")


def test_pending_and_applied_deletions_are_shown(emulator: Emulator) -> None:
    load(emulator)
    r = requests.delete(
        f"{emulator.url}/v1/users",
        json={"users": ["u1"]},
        headers={**AUTH, "X-API-Version": "2020-09-22"},
        timeout=10,
    )
    assert r.status_code == 202
    pending = get(emulator, "/_emulator/deletions").json()
    assert [(d["kind"], d["id"]) for d in pending["pending"]] == [("users", "u1")]
    assert pending["applied"] == []
    assert pending["next_run_at"].endswith("T02:00:00.000000Z")
    emulator.run_daily_deletions()
    done = get(emulator, "/_emulator/deletions").json()
    assert done["pending"] == []
    assert [(d["id"], d["found"]) for d in done["applied"]] == [("u1", True)]
    assert get(emulator, "/_emulator/users").json()["count"] == 1


def test_the_index_lists_the_pages_and_unknown_pages_answer_404(emulator: Emulator) -> None:
    index = get(emulator, "/_emulator/").json()["endpoints"]
    assert set(index) >= {
        "/_emulator/users",
        "/_emulator/companies",
        "/_emulator/jobs",
        "/_emulator/deletions",
    }
    assert get(emulator, "/_emulator/requests").status_code == 404
    assert get(emulator, "/_emulator/jobs/x").status_code == 404


def test_the_pages_need_the_token_and_change_nothing(emulator: Emulator) -> None:
    load(emulator)
    assert requests.get(emulator.url + "/_emulator/users", timeout=10).status_code == 401
    r = requests.post(emulator.url + "/_emulator/users", headers=AUTH, json={}, timeout=10)
    assert r.status_code == 405
    r = requests.delete(emulator.url + "/_emulator/users/u1", headers=AUTH, timeout=10)
    assert r.status_code == 405
    assert set(emulator.users) == {"u1", "team/a b"}


def test_injected_faults_never_hit_the_pages(emulator: Emulator) -> None:
    emulator.set_faults(fail_rate=1.0)
    assert all(get(emulator, "/_emulator/users").status_code == 200 for _ in range(5))
    answered = [r for r in emulator.requests if r.path == "/_emulator/users"]
    assert [r.fault for r in answered] == [None] * 5


def test_the_cli_says_where_the_pages_are() -> None:
    proc = subprocess.Popen(
        [*command(), "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stderr is not None
        url = proc.stdout.readline().strip()  # written once the log lines are out
        lines = [proc.stderr.readline() for _ in range(2)]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
    shown = next(line for line in lines if "Inspect it" in line)
    for page in ("/_emulator/users", "/_emulator/jobs", "/_emulator/deletions"):
        assert f"{url}{page}" in shown
