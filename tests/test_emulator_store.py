"""The emulator's store and payload parsing, without sockets, on a hand-driven clock."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from target_userpilot.emulator import EmulatorConfig
from target_userpilot.emulator.store import SlotBusyError, Store
from target_userpilot.emulator.validation import (
    PayloadError,
    Row,
    parse_json_body,
    parse_ndjson,
)


class Clock:
    def __init__(self) -> None:
        self.t = 1_000.0

    def __call__(self) -> float:
        return self.t


def rows(n: int, start: int = 0, **metadata: Any) -> list[Row]:
    records = [
        {"user_id": str(i), "metadata": {"n": i, **metadata}} for i in range(start, start + n)
    ]
    return parse_json_body(json.dumps({"users": records}).encode(), "users")


def submit(store: Store, batch: list[Row]) -> str:
    job, lost = store.submit("users", batch, size=100, uploaded_filename="f.ndjson", source="json")
    assert not lost
    return job.job_id


def test_a_job_lands_exactly_at_its_finish_time() -> None:
    clock = Clock()
    store = Store(
        EmulatorConfig(profile="legacy", rows_per_minute=600, queued_seconds=2), clock
    )  # 10 rows/s
    job_id = submit(store, rows(20))
    view = store.job_view(job_id)
    assert view is not None
    assert (view["status"], view["processed_count"]) == ("queued", 0)

    clock.t += 1.99
    assert store.jobs()[0].status == "queued"
    assert store.jobs()[0].started_at is None
    clock.t += 0.01
    assert store.jobs()[0].status == "processing"
    clock.t += 0.5
    view = store.job_view(job_id)
    assert view is not None
    assert (view["status"], view["processed_count"], view["completed_at"]) == (
        "processing",
        5,
        None,
    )
    clock.t += 1.499
    assert store.users() == {}
    with pytest.raises(SlotBusyError):
        submit(store, rows(1))
    clock.t += 0.001
    assert len(store.users()) == 20
    record = store.jobs()[0]
    assert (record.status, record.processed_count, record.finished_at) == ("completed", 20, clock.t)
    submit(store, rows(1))  # the slot is free again


def test_later_jobs_and_later_lines_win() -> None:
    clock = Clock()
    store = Store(EmulatorConfig(profile="legacy", rows_per_minute=0), clock)
    first = parse_ndjson(
        io.BytesIO(
            b'{"user_id": "a", "company_id": "x", "metadata": {"k": 1, "keep": true}}\n'
            b'{"user_id": "a", "metadata": {"k": 2}}\n'
        ),
        "users",
    )
    submit(store, first)
    second = parse_json_body(
        b'{"users": [{"user_id": "a", "company_id": "y", "metadata": {"k": 3}}]}', "users"
    )
    submit(store, second)
    assert store.users() == {
        "a": {"user_id": "a", "company_id": "y", "metadata": {"k": 3, "keep": True}}
    }


def test_without_keep_profiles_a_job_completes_and_counts_but_keeps_no_profile() -> None:
    clock = Clock()
    store = Store(EmulatorConfig(profile="legacy", rows_per_minute=0, keep_profiles=False), clock)
    submit(store, rows(50))
    record = store.jobs()[0]
    assert (record.status, record.processed_count) == ("completed", 50)
    assert store.users() == {}  # a ten-million-row benchmark holds none of them


def test_rejections_accumulate_while_processing_and_failures_apply_nothing() -> None:
    clock = Clock()
    store = Store(
        EmulatorConfig(
            profile="legacy", rows_per_minute=60, reject_ids=frozenset({"1", "8"}), fail_jobs=1
        ),
        clock,
    )
    failing = submit(store, rows(2))
    clock.t += 2
    view = store.job_view(failing)
    assert view is not None
    assert view["status"] == "failed"
    assert store.users() == {}

    job_id = submit(store, rows(10))
    clock.t += 5  # rows 0..4 processed, "1" among them
    view = store.job_view(job_id)
    assert view is not None
    assert (view["processed_count"], view["error_count"]) == (4, 1)
    assert view["errors"] == [
        {"line": 2, "user_id": "1", "error": "rejected by the server while processing"}
    ]
    clock.t += 5
    view = store.job_view(job_id)
    assert view is not None
    assert (view["status"], view["processed_count"], view["error_count"]) == ("completed", 8, 2)
    assert set(store.users()) == {str(i) for i in range(10)} - {"1", "8"}


def test_foreign_jobs_queue_behind_a_running_job() -> None:
    clock = Clock()
    store = Store(
        EmulatorConfig(profile="legacy", rows_per_minute=60, foreign_job_seconds=3), clock
    )
    with pytest.raises(SlotBusyError):
        submit(store, rows(1))
    clock.t += 3
    submit(store, rows(2))  # 2 s
    foreign = store.add_foreign_job(1)
    clock.t += 2.5
    assert [j.status for j in store.jobs()] == ["completed", "completed", "processing"]
    listed = store.job_list()
    assert listed[2]["job_id"] == foreign
    assert listed[1]["elapsed_time"] == 2
    clock.t += 0.5
    submit(store, rows(1))


def test_job_ids_follow_the_style() -> None:
    store = Store(
        EmulatorConfig(profile="legacy", rows_per_minute=0, job_id_style="alternate", account="ACC")
    )
    ids = [submit(store, rows(1)) for _ in range(3)]
    assert [i.startswith("bulk:jobs:ACC:") for i in ids] == [False, True, False]
    assert len(ids[0]) == 36


def test_lost_responses_are_counted_down() -> None:
    store = Store(EmulatorConfig(profile="legacy", rows_per_minute=0, drop_submit_responses=1))
    assert store.submit("users", rows(1), size=1, uploaded_filename=None, source="json")[1]
    assert not store.submit("users", rows(1), size=1, uploaded_filename=None, source="json")[1]
    store.set_faults(drop_submit_responses=1)
    assert store.submit("users", rows(1), size=1, uploaded_filename=None, source="json")[1]


def test_parsing_a_413_wins_over_a_bad_line() -> None:
    body = b"{bad\n" + b'{"user_id": "1"}\n' * 10_000
    with pytest.raises(PayloadError) as caught:
        parse_ndjson(io.BytesIO(body), "users")
    assert caught.value.status == 413


def test_parsing_accepts_a_bom_and_crlf() -> None:
    parsed = parse_ndjson(
        io.BytesIO(b'\xef\xbb\xbf{"company_id": "1"}\r\n{"company_id": "2"}\r\n'), "companies"
    )
    assert [r.id for r in parsed] == ["1", "2"]
    assert [r.line for r in parsed] == [1, 2]
