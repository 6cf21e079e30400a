"""The emulator's default profile: Userpilot's API reference, and its stricter-server rules."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests

from target_userpilot.emulator import Emulator

Make = Callable[..., Emulator]
AUTH = {"Authorization": "Token test-token"}
STATUSES = ["queued", "validating", "processing", "pending_refresh", "completed"]


@pytest.fixture
def make_emulator(make_emulator: Make) -> Make:
    """These tests pin the `reference` profile, whatever profile the run tests."""

    def make(**kwargs: Any) -> Emulator:
        kwargs.setdefault("profile", "reference")
        return make_emulator(**kwargs)

    return make


def upload(emu: Emulator, records: list[dict[str, Any]], kind: str = "users") -> requests.Response:
    body = b"".join(json.dumps(r).encode() + b"\n" for r in records)
    return requests.post(
        f"{emu.url}/v1/{kind}/bulk_identify",
        files={"file": ("batch.ndjson", body, "application/x-ndjson")},
        headers=AUTH,
        timeout=10,
    )


def post_json(emu: Emulator, records: list[dict[str, Any]]) -> requests.Response:
    return requests.post(
        f"{emu.url}/v1/users/bulk_identify", json={"users": records}, headers=AUTH, timeout=10
    )


def get(emu: Emulator, path: str) -> Any:
    answer = requests.get(f"{emu.url}{path}", headers=AUTH, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_submit_answers_202_with_a_list_entry_and_the_job_walks_all_statuses(
    make_emulator: Make,
) -> None:
    emu = make_emulator(
        rows_per_minute=600, validating_seconds=0.2, pending_refresh_seconds=0.2, queued_seconds=0.2
    )
    answer = upload(emu, [{"user_id": str(i)} for i in range(3)])
    assert answer.status_code == 202
    entry = answer.json()
    assert set(entry) == {
        "job_id", "links", "type", "filename", "file_size", "total_rows", "status",
        "start_time", "end_time", "elapsed_time",
    }  # fmt: skip
    assert entry["job_id"].startswith("bulk:jobs:NX-51f4acf7:")
    assert entry["links"] == f"/v1/background_jobs/{entry['job_id']}"
    assert (entry["type"], entry["total_rows"], entry["status"]) == ("identify_user", 3, "queued")
    assert entry["start_time"] is None
    assert entry["end_time"] is None
    seen: list[str] = []
    deadline = time.monotonic() + 10
    while (not seen or seen[-1] != "completed") and time.monotonic() < deadline:
        view = get(emu, entry["links"])
        if not seen or seen[-1] != view["status"]:
            seen.append(view["status"])
        time.sleep(0.02)
    assert seen == STATUSES
    assert "processed_count" not in view
    assert "error_count" not in view
    assert (view["completed_rows"], view["total_rows"]) == (3, 3)
    assert {"elapsed_time", "start_time", "end_time", "links", "type", "file_size"} <= set(view)


def test_rejected_rows_show_only_as_completed_rows_short_of_total(make_emulator: Make) -> None:
    emu = make_emulator(rows_per_minute=float("inf"), reject_ids={"1"})
    job_id = upload(emu, [{"user_id": str(i)} for i in range(3)]).json()["job_id"]
    time.sleep(0.6)
    view = get(emu, f"/v1/background_jobs/{job_id}")
    assert (view["status"], view["completed_rows"], view["total_rows"]) == ("completed", 2, 3)
    assert "errors" not in view  # no per-row detail, as with the real service


def test_errors_bodies_and_the_409_wording(make_emulator: Make) -> None:
    emu = make_emulator(rows_per_minute=60)
    assert upload(emu, [{"user_id": "a"}]).status_code == 202
    busy = upload(emu, [{"user_id": "b"}])
    assert busy.status_code == 409
    [error] = busy.json()["errors"]
    assert error["message"] == "Conflict - Import job already in progress"
    assert {"details", "error", "error_code", "message"} <= set(error)
    unauthorized = requests.get(f"{emu.url}/v1/background_jobs/", timeout=10)
    assert "errors" in unauthorized.json()


def test_job_list_is_the_newest_page_with_an_export_job(make_emulator: Make) -> None:
    emu = make_emulator(
        rows_per_minute=float("inf"),
        validating_seconds=0,
        pending_refresh_seconds=0,
        job_list_page_size=3,
        export_job="stuck",
    )
    ids = []
    for i in range(4):
        ids.append(upload(emu, [{"user_id": str(i)}]).json()["job_id"])
        time.sleep(0.01)
    listed = get(emu, "/v1/background_jobs/")
    assert len(listed) == 3
    assert [j["job_id"] for j in listed if j["type"] == "identify_user"] == ids[:1:-1]
    [export] = [j for j in listed if j["type"] != "identify_user"]
    assert export["status"] == "processing"
    assert export["end_time"] is None
    # An export never holds the import slot.
    assert upload(emu, [{"user_id": "x"}]).status_code == 202


def test_some_429s_carry_no_retry_after(make_emulator: Make) -> None:
    emu = make_emulator(fail_rate=1.0, fault_kinds=("429",), seed=3)
    answers = [requests.get(f"{emu.url}/v1/background_jobs/", timeout=10) for _ in range(20)]
    assert {a.status_code for a in answers} == {429}
    with_header = sum("Retry-After" in a.headers for a in answers)
    assert 0 < with_header < 20


@pytest.mark.parametrize(
    ("rules", "bad", "says"),
    [
        ({"max_value_chars": 10}, {"bio": "x" * 11}, "metadata.bio is longer than 10 characters"),
        (
            {"string_values_only": True},
            {"seats": 3},
            "metadata.seats must be a string: only string values are supported",
        ),
        ({"reject_keys": {"ssn"}}, {"ssn": "123"}, "metadata.ssn is not an allowed property"),
    ],
)
def test_a_stricter_server_refuses_an_upload_naming_the_line(
    make_emulator: Make, rules: dict[str, Any], bad: dict[str, Any], says: str
) -> None:
    emu = make_emulator(rows_per_minute=float("inf"), **rules)
    records = [{"user_id": str(i), "metadata": {"plan": "pro", "n": None}} for i in range(5)]
    records[3] = {"user_id": "3", "metadata": bad}
    answer = upload(emu, records)
    assert answer.status_code == 400
    [error] = answer.json()["errors"]
    assert error["line"] == 4
    assert error["message"] == f"line 4: {says}"
    as_json = post_json(emu, records)
    assert as_json.status_code == 400
    assert as_json.json()["errors"][0]["message"] == f"record 4: {says}"
    assert emu.jobs == []
    del records[3]
    assert upload(emu, records).status_code == 202


@pytest.mark.parametrize("status", [415, 400])
def test_a_json_only_server_refuses_multipart(make_emulator: Make, status: int) -> None:
    emu = make_emulator(rows_per_minute=float("inf"), refuse_multipart=status)
    refused = upload(emu, [{"user_id": "a"}])
    assert refused.status_code == status
    assert post_json(emu, [{"user_id": "a"}]).status_code == 202


def test_a_proxy_body_limit_refuses_even_one_row(make_emulator: Make) -> None:
    emu = make_emulator(proxy_body_limit=40)
    refused = upload(emu, [{"user_id": "a"}])
    assert refused.status_code == 413
    assert "Request Entity Too Large" in refused.text
    assert emu.jobs == []
