"""Reading Userpilot's answers: job shapes, status mapping, error bodies, lost uploads."""

from __future__ import annotations

from typing import Any

import pytest

from target_userpilot.wire.jobs_api import (
    Upload,
    blocking_jobs,
    find_upload,
    is_job_view,
    job_object,
    parse_job,
    parse_time,
    server_words,
)

JOB_SHAPES: list[tuple[dict[str, Any], tuple[str, int | None, int | None, int | None]]] = [
    # (job object, (state, processed, errors, total))
    ({"job_id": "a", "status": "queued", "submitted_at": "2025-02-02T12:34:56Z"},
     ("running", None, None, None)),
    ({"job_id": "a", "status": "completed", "processed_count": 1500, "error_count": 0},
     ("completed", 1500, 0, None)),
    ({"job_id": "a", "status": "completed", "processed_count": 10, "error_count": 2},
     ("completed", 10, 2, None)),
    ({"job_id": "a", "status": "completed", "completed_rows": 8, "total_rows": 10},
     ("completed", 8, 2, 10)),
    ({"job_id": "a", "status": "completed", "completed_rows": 10, "total_rows": 10},
     ("completed", 10, 0, 10)),
    ({"job_id": "a", "status": "processing", "completed_rows": 4, "total_rows": 10},
     ("running", 4, None, 10)),
    ({"job_id": "a", "status": "validating"}, ("running", None, None, None)),
    ({"job_id": "a", "status": "pending_refresh"}, ("running", None, None, None)),
    ({"job_id": "a", "status": "never-seen-before"}, ("running", None, None, None)),
    ({"job_id": "a"}, ("running", None, None, None)),
    ({"job_id": "a", "status": "failed", "total_rows": 3}, ("failed", None, None, 3)),
    ({"job_id": "a", "status": "error"}, ("failed", None, None, None)),
    ({"job_id": "a", "status": "Completed", "processed_count": "7", "error_count": "1"},
     ("completed", 7, 1, None)),
    ({"job_id": "a", "status": "completed", "processed_count": 5,
      "errors": [{"user_id": "x", "error": "bad"}]},
     ("completed", 5, 1, None)),
    ({"id": "a", "status": "completed", "processed_count": 5.0, "error_count": True},
     ("completed", 5, None, None)),
]  # fmt: skip


@pytest.mark.parametrize(("obj", "expected"), JOB_SHAPES)
def test_parse_job_shapes(
    obj: dict[str, Any], expected: tuple[str, int | None, int | None, int | None]
) -> None:
    job = parse_job(obj)
    assert (job.state, job.processed, job.errors, job.total) == expected
    assert job.job_id == "a"
    assert job.status == str(obj.get("status", ""))
    assert job.raw is obj


def testparse_time_with_and_without_zone() -> None:
    aware = parse_time("2025-03-08T18:50:14Z")
    assert aware is not None
    assert aware == parse_time("2025-03-08T18:50:14.000000")  # naive is UTC
    assert parse_time("2025-03-08T18:50:14.150722") == pytest.approx(aware + 0.150722)
    assert parse_time("2025-03-08T19:50:14+01:00") == aware
    assert parse_time("2025-03-08T18:50:14.1Z") is not None  # odd fraction digits
    assert parse_time("yesterday") is None
    assert parse_time(None) is None


def test_every_non_final_status_is_running() -> None:
    for status in ("queued", "validating", "processing", "pending_refresh", "exporting"):
        assert parse_job({"job_id": "a", "status": status}).state == "running"


def test_reference_job_view_reads_rejected_rows_from_totals() -> None:
    view = {"job_id": "bulk:jobs:NX-1:u", "status": "completed", "completed_rows": 24_997,
            "total_rows": 25_000, "elapsed_time": 12, "links": "/v1/background_jobs/x"}  # fmt: skip
    job = parse_job(view)
    assert (job.state, job.processed, job.errors, job.total) == ("completed", 24_997, 3, 25_000)


def test_a_poll_answer_without_a_job_is_not_a_job_view() -> None:
    assert not is_job_view(job_object(None))  # HTML or empty body
    assert not is_job_view(job_object({}))
    assert not is_job_view(job_object({"message": "ok"}))
    assert is_job_view(job_object({"job": {"job_id": "a", "status": "queued"}}))
    assert is_job_view(job_object({"status": "queued"}))


def test_only_running_import_jobs_block() -> None:
    jobs = [
        {"job_id": "export-1", "type": "export_users", "status": "processing"},
        {"job_id": "imp-done", "type": "identify_user", "status": "completed"},
        {"job_id": "imp-refresh", "type": "identify_company", "status": "pending_refresh"},
        {"job_id": "untyped", "status": "queued"},
    ]
    assert blocking_jobs(jobs) == ["imp-refresh", "untyped"]


@pytest.mark.parametrize(
    ("body", "said"),
    [
        ({"errors": [{"details": "metadata.plan must be a string", "error": "Bad Request",
                      "error_code": "INVALID", "message": "Invalid row", "line": 7}]},
         "line 7: Invalid row; metadata.plan must be a string; Bad Request"),
        ({"error": "line 2: user_id is missing", "line": 2, "reason": "user_id is missing"},
         "line 2: user_id is missing"),
        ({"errors": [{"message": "Conflict - Import job already in progress"}]},
         "Conflict - Import job already in progress"),
        ({"detail": "nothing we read"}, None),
        ("<html>", None),
    ],
)  # fmt: skip
def test_server_words_from_both_error_shapes(body: object, said: str | None) -> None:
    assert server_words(body) == said


def test_lost_upload_found_by_name_then_shape_never_an_export_or_a_known_job() -> None:
    upload = Upload(name="userpilot-users-1.ndjson", size=100, rows=4, not_before=1_000.0)
    after = "2001-01-01T00:00:00"  # well after not_before (POSIX 1000)
    jobs: list[dict[str, Any]] = [
        {"job_id": "old", "status": "completed", "file_size": 100, "total_rows": 4,
         "start_time": "1970-01-01T00:00:01"},
        {"job_id": "export", "type": "export_users", "status": "processing", "file_size": 100,
         "total_rows": 4, "start_time": after},
        {"job_id": "shape", "type": "identify_user", "status": "queued", "file_size": 100,
         "total_rows": 4, "start_time": after},
    ]  # fmt: skip
    assert find_upload(upload, jobs, set()) == jobs[2]
    assert find_upload(upload, jobs, {"shape"}) is None
    named = {"job_id": "named", "filename": "NX_identify_user_userpilot-users-1.ndjson"}
    assert find_upload(upload, [*jobs, named], set()) == named
