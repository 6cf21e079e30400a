"""The client facade: submit, follow a job, preflight; a scripted server and the emulator."""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager as ContextManager
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from emulated import emulator_config
from wire_script import KEY, FakeClock, Reply, Script, ndjson

from target_userpilot.emulator import Emulator, serve
from target_userpilot.wire import (
    AuthError,
    JobStatus,
    Kind,
    PayloadTooLargeError,
    RejectedUploadError,
    RetryPolicy,
    SlotWaitTimeoutError,
    TransientError,
    UnreachableError,
    UserpilotClient,
    UserpilotError,
)

FAST = RetryPolicy(max_time=5.0, base=0.01, cap=0.05)


def client_for(url: str, **kw: Any) -> UserpilotClient:
    kw.setdefault("retry", FAST)
    kw.setdefault("timeout", (2.0, 5.0))
    return UserpilotClient(url, kw.pop("key", KEY), **kw)


def test_2xx_without_job_id_is_an_error_showing_the_body(scripted: Script, tmp_path: Path) -> None:
    scripted.routes["POST /v1/companies/bulk_identify"] = [(200, {}, {"status": "queued"})]
    client = client_for(scripted.url)
    with pytest.raises(UserpilotError, match=r"no job id.*queued") as err:
        client.submit("companies", ndjson(tmp_path, 1, "companies"), rows=1)
    assert type(err.value) is UserpilotError


def test_transient_error_after_max_time_says_what_failed(
    scripted: Script, caplog: pytest.LogCaptureFixture
) -> None:
    scripted.default["GET /v1/background_jobs/"] = (503, {}, {"detail": "down"})
    client = client_for(scripted.url, retry=RetryPolicy(max_time=0.3, base=0.01, cap=0.05))
    started = time.monotonic()
    with caplog.at_level(logging.DEBUG), pytest.raises(TransientError) as err:
        client.get_job("abc")
    assert time.monotonic() - started < 3
    text = str(err.value)
    assert "HTTP 503" in text
    assert "api_url" in text
    assert "time(s)" in text
    assert client.stats.retries >= 2
    retries = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert retries
    assert "attempt 1: HTTP 503" in retries[0].getMessage()
    assert all(KEY not in r.getMessage() for r in caplog.records)


def test_unreachable_server_is_transient(tmp_path: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = server.server_address[1]
    server.server_close()  # nothing listens there now
    client = client_for(
        f"http://127.0.0.1:{port}", retry=RetryPolicy(max_time=0.2, base=0.01, cap=0.02)
    )
    with pytest.raises(TransientError, match="connection refused") as err:
        client.submit("users", ndjson(tmp_path, 1), rows=1)
    assert err.value.__cause__ is None
    assert err.value.__context__ is None
    assert client.requests_sent == client.stats.retries + 1  # refused: nothing sent, no list


def test_server_echoing_the_key_is_redacted(scripted: Script, tmp_path: Path) -> None:
    scripted.routes["POST /v1/users/bulk_identify"] = [
        (400, {}, {"detail": f"line 2: bad user_id; header was Token {KEY}"})
    ]
    client = client_for(scripted.url)
    with pytest.raises(RejectedUploadError) as err:
        client.submit("users", ndjson(tmp_path, 2), rows=2)
    assert err.value.status == 400
    assert "line 2" in err.value.body
    assert KEY not in str(err.value)
    assert KEY not in err.value.body


def test_lost_5xx_submission_found_by_size_and_rows(scripted: Script, tmp_path: Path) -> None:
    path = ndjson(tmp_path, 4)
    now = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())  # naive, as the server may send
    scripted.routes["POST /v1/users/bulk_identify"] = [(502, {}, "bad gateway")]
    scripted.default["GET /v1/background_jobs/"] = (
        200,
        {},
        [
            # an older job of the same shape: not ours
            {"job_id": "old", "status": "completed", "total_rows": 4,
             "file_size": path.stat().st_size, "start_time": "2020-01-01T00:00:00"},
            {"job_id": "bulk:jobs:NX-1:new", "status": "queued", "total_rows": 4,
             "file_size": path.stat().st_size, "filename": "x_identify_user_y.ndjson",
             "start_time": now},
        ],
    )  # fmt: skip
    client = client_for(scripted.url)
    assert client.submit("users", path, rows=4) == "bulk:jobs:NX-1:new"
    assert [s.method for s in scripted.seen] == ["POST", "GET"]


def test_5xx_without_a_created_job_is_resubmitted(scripted: Script, tmp_path: Path) -> None:
    scripted.routes["POST /v1/users/bulk_identify"] = [
        (500, {}, "oops"),
        (200, {}, {"job_id": "j2", "status": "queued"}),
    ]
    scripted.default["GET /v1/background_jobs/"] = (200, {}, [])
    client = client_for(scripted.url)
    assert client.submit("users", ndjson(tmp_path, 1), rows=1) == "j2"
    assert [s.method for s in scripted.seen] == ["POST", "GET", "POST"]
    assert client.stats.retries == 1


def test_get_job_falls_back_to_raw_id_and_links(scripted: Script) -> None:
    job_id = "bulk:jobs:NX-51f4acf7:96b94fed"
    job = {"job_id": job_id, "status": "completed", "completed_rows": 2, "total_rows": 2}
    scripted.default["GET /v1/background_jobs/bulk%3A"] = (404, {}, {"detail": "nope"})
    scripted.default["GET /v1/background_jobs/bulk:"] = (404, {}, {"detail": "nope"})
    scripted.default["GET /v1/background_jobs/"] = (
        200,
        {},
        [{"job_id": job_id, "links": f"/v1/jobs-elsewhere/{job_id}", "status": "completed"}],
    )
    scripted.default["GET /v1/jobs-elsewhere/"] = (200, {}, job)
    client = client_for(scripted.url)
    status = client.get_job(job_id)
    assert status == JobStatus(job_id, "completed", "completed", 2, 0, 2, job)
    paths = [s.path for s in scripted.seen]
    assert paths == [
        "/v1/background_jobs/bulk%3Ajobs%3ANX-51f4acf7%3A96b94fed",
        f"/v1/background_jobs/{job_id}",
        "/v1/background_jobs/",
        f"/v1/jobs-elsewhere/{job_id}",
    ]
    client.get_job(job_id)  # remembered: straight to the working URL
    assert scripted.seen[-1].path == f"/v1/jobs-elsewhere/{job_id}"


def test_429_on_a_poll_honours_http_date_retry_after(scripted: Script) -> None:
    scripted.routes["GET /v1/background_jobs/j"] = [
        (429, {"Retry-After": formatdate(time.time() + 1, usegmt=True)}, "slow down")
    ]
    scripted.default["GET /v1/background_jobs/j"] = (200, {}, {"job_id": "j", "status": "queued"})
    waits: list[float] = []
    client = client_for(scripted.url, sleep=waits.append)
    assert client.get_job("j").state == "running"
    assert len(waits) == 1
    assert 0 < waits[0] <= 1.5


def test_409_with_nothing_listed_as_running_times_out_naming_the_setting(
    scripted: Script, tmp_path: Path
) -> None:
    scripted.default["POST /v1/users/bulk_identify"] = (409, {}, {"detail": "busy"})
    scripted.default["GET /v1/background_jobs/"] = (
        200,
        {},
        [{"job_id": "done", "status": "completed"}, {"job_id": "ended", "end_time": "2025-01-01"}],
    )
    clock = FakeClock()
    client = client_for(scripted.url, sleep=clock.sleep, clock=clock, slot_wait_timeout=30)
    with pytest.raises(SlotWaitTimeoutError, match="slot_wait_timeout") as err:
        client.submit("users", ndjson(tmp_path, 1), rows=1)
    assert "does not show as a running import" in str(err.value)
    assert sum(s.method == "POST" for s in scripted.seen) > 2, "uploaded again after 409s"
    assert clock.now == pytest.approx(30)


@pytest.mark.parametrize("status", [401, 403])
def test_auth_refusal_is_immediate_and_names_the_setting(
    scripted: Script, tmp_path: Path, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    scripted.default["POST /v1/users/bulk_identify"] = (status, {}, {"detail": f"bad {KEY}"})
    client = client_for(scripted.url)
    with caplog.at_level(logging.DEBUG), pytest.raises(AuthError) as err:
        client.submit("users", ndjson(tmp_path, 1), rows=1)
    text = str(err.value)
    assert f"HTTP {status}" in text
    assert "`api_key`" in text
    assert "`api_url`" in text
    assert KEY not in text
    assert len(scripted.seen) == 1
    assert all(KEY not in r.getMessage() for r in caplog.records)


def test_the_links_url_of_the_submit_answer_is_polled(scripted: Script, tmp_path: Path) -> None:
    job_id = "bulk:jobs:NX-1:abc"
    scripted.routes["POST /v1/users/bulk_identify"] = [
        (202, {}, {"job_id": job_id, "links": f"/v1/jobs-at/{job_id}", "status": "queued"})
    ]
    scripted.default["GET /v1/jobs-at/"] = (200, {}, {"job_id": job_id, "status": "validating"})
    client = client_for(scripted.url)
    assert client.submit("users", ndjson(tmp_path, 1), rows=1) == job_id
    assert client.get_job(job_id).state == "running"
    assert [s.path for s in scripted.seen][1:] == [f"/v1/jobs-at/{job_id}"]


def test_a_links_url_on_another_host_is_never_polled(scripted: Script, tmp_path: Path) -> None:
    scripted.routes["POST /v1/users/bulk_identify"] = [
        (202, {}, {"job_id": "j", "links": "https://elsewhere.example/v1/background_jobs/j"})
    ]
    scripted.default["GET /v1/background_jobs/j"] = (200, {}, {"job_id": "j", "status": "queued"})
    client = client_for(scripted.url)
    client.submit("users", ndjson(tmp_path, 1), rows=1)
    assert client.get_job("j").status == "queued"
    assert scripted.seen[-1].path == "/v1/background_jobs/j"


@pytest.mark.parametrize("garbage", ["<html><body>Deploying</body></html>", "", {}])
def test_a_2xx_poll_without_a_job_is_retried_like_a_5xx(scripted: Script, garbage: Any) -> None:
    scripted.routes["GET /v1/background_jobs/j"] = [(200, {}, garbage)] * 2
    done = {"job_id": "j", "status": "completed"}
    scripted.default["GET /v1/background_jobs/j"] = (200, {}, done)
    clock = FakeClock()
    client = client_for(scripted.url, sleep=clock.sleep, clock=clock)
    assert client.get_job("j").state == "completed"
    assert client.stats.retries == 2


def test_a_2xx_poll_without_a_job_gives_up_after_the_retry_time(scripted: Script) -> None:
    scripted.default["GET /v1/background_jobs/j"] = (200, {}, "<html>maintenance</html>")
    clock = FakeClock()
    retry = RetryPolicy(max_time=5.0, base=1.0, cap=2.0)
    client = client_for(scripted.url, retry=retry, sleep=clock.sleep, clock=clock)
    with pytest.raises(TransientError, match=r"without a job.*request_retry_max_time"):
        client.get_job("j")


def test_lost_answer_is_looked_for_over_about_10_s_before_uploading_again(
    scripted: Script, tmp_path: Path
) -> None:
    path = ndjson(tmp_path, 2)
    ours = {"job_id": "bulk:jobs:A:ours", "status": "queued", "filename": f"x-{path.name}",
            "links": "/v1/background_jobs/bulk:jobs:A:ours"}  # fmt: skip
    scripted.routes["POST /v1/users/bulk_identify"] = ["drop"]
    scripted.routes["GET /v1/background_jobs/"] = [(200, {}, [])] * 2  # listed late
    scripted.default["GET /v1/background_jobs/"] = (200, {}, [ours])
    clock = FakeClock()
    client = client_for(scripted.url, sleep=clock.sleep, clock=clock)
    assert client.submit("users", path, rows=2) == "bulk:jobs:A:ours"
    assert [s.method for s in scripted.seen] == ["POST", "GET", "GET", "GET"]  # one upload


def test_lost_answer_never_listed_is_uploaded_again_after_the_look_ups(
    scripted: Script, tmp_path: Path
) -> None:
    scripted.routes["POST /v1/users/bulk_identify"] = ["drop"]
    scripted.default["POST /v1/users/bulk_identify"] = (202, {}, {"job_id": "second"})
    scripted.default["GET /v1/background_jobs/"] = (200, {}, [])
    clock = FakeClock()
    client = client_for(scripted.url, sleep=clock.sleep, clock=clock)
    assert client.submit("users", ndjson(tmp_path, 2), rows=2) == "second"
    assert [s.method for s in scripted.seen] == ["POST", "GET", "GET", "GET", "GET", "POST"]
    assert 10 <= clock.now < 11  # the look-ups' waits, plus one short backoff


def test_dropped_upload_then_409_finds_our_own_job_in_the_list(
    scripted: Script, tmp_path: Path
) -> None:
    path = ndjson(tmp_path, 2)
    ours = {"job_id": "bulk:jobs:A:ours", "status": "queued", "filename": f"x-{path.name}"}
    scripted.routes["POST /v1/users/bulk_identify"] = ["drop", (409, {}, {"detail": "busy"})]
    scripted.routes["GET /v1/background_jobs/"] = [(200, {}, [])] * 4  # not listed yet
    scripted.default["GET /v1/background_jobs/"] = (200, {}, [ours])
    clock = FakeClock()
    client = client_for(scripted.url, sleep=clock.sleep, clock=clock)
    assert client.submit("users", path, rows=2) == "bulk:jobs:A:ours"
    assert [s.method for s in scripted.seen] == ["POST", *["GET"] * 4, "POST", "GET"]


def test_409_is_the_judge_the_list_only_names_the_import_blocking(
    scripted: Script, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    conflict = {"errors": [{"message": "Conflict - Import job already in progress"}]}
    scripted.routes["POST /v1/users/bulk_identify"] = [(409, {}, conflict)] * 3
    scripted.default["POST /v1/users/bulk_identify"] = (202, {}, {"job_id": "mine"})
    listed = [
        {"job_id": "export-1", "type": "export_users", "status": "processing"},  # for ever
        {"job_id": "theirs", "type": "identify_user", "status": "pending_refresh"},
    ]
    scripted.default["GET /v1/background_jobs/"] = (200, {}, listed)
    clock = FakeClock()
    client = client_for(scripted.url, sleep=clock.sleep, clock=clock)
    with caplog.at_level(logging.INFO):
        assert client.submit("users", ndjson(tmp_path, 1), rows=1) == "mine"
    assert clock.history == [1, 3, 7]  # 1, 2, 4 s between uploads
    assert [s.method for s in scripted.seen] == ["POST", "GET", "POST", "POST", "POST"]
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert "theirs" in infos[0]
    assert "export-1" not in infos[0]
    assert "slot_wait_timeout" in infos[0]


def test_a_5xx_after_a_409_wait_longer_than_the_retry_time_is_still_retried(
    scripted: Script, tmp_path: Path
) -> None:
    busy: Reply = (409, {}, {"detail": "busy"})
    scripted.routes["POST /v1/users/bulk_identify"] = [*[busy] * 4, (503, {}, {"detail": "down"})]
    scripted.default["POST /v1/users/bulk_identify"] = (202, {}, {"job_id": "mine"})
    scripted.default["GET /v1/background_jobs/"] = (200, {}, [])
    clock = FakeClock()
    client = client_for(scripted.url, sleep=clock.sleep, clock=clock)
    assert client.submit("users", ndjson(tmp_path, 1), rows=1) == "mine"
    # 1 + 2 + 4 + 8 s of 409s outlast FAST's 5 s: the 503 after them starts a budget of its own.
    assert clock.history[3] == 15
    assert clock.now > FAST.max_time
    assert client.stats.retries == 1


def test_409_with_only_an_export_listed_still_waits_then_names_no_import(
    scripted: Script, tmp_path: Path
) -> None:
    scripted.default["POST /v1/users/bulk_identify"] = (409, {}, {"detail": "busy"})
    scripted.default["GET /v1/background_jobs/"] = (
        200,
        {},
        [{"job_id": "export-1", "type": "export_users", "status": "processing"}],
    )
    clock = FakeClock()
    client = client_for(scripted.url, sleep=clock.sleep, clock=clock, slot_wait_timeout=60)
    with pytest.raises(SlotWaitTimeoutError) as err:
        client.submit("users", ndjson(tmp_path, 1), rows=1)
    assert "export-1" not in str(err.value)
    assert clock.now == pytest.approx(60)
    assert max(b - a for a, b in itertools.pairwise([0.0, *clock.history])) <= 30


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (415, {"errors": [{"message": "Unsupported Media Type"}]}),
        (400, {"errors": [{"message": "No file uploaded: the request body must be JSON"}]}),
        (400, {"error": "file is required"}),
        (400, {"error": "expected one part named 'file', got ['upload']"}),
    ],
)
def test_multipart_refused_on_the_first_upload_switches_the_run_to_json(
    scripted: Script, tmp_path: Path, caplog: pytest.LogCaptureFixture, status: int, body: Any
) -> None:
    scripted.routes["POST /v1/users/bulk_identify"] = [(status, {}, body)]
    scripted.default["POST /v1/users/bulk_identify"] = (202, {}, {"job_id": "j"})
    client = client_for(scripted.url)
    with caplog.at_level(logging.WARNING):
        client.submit("users", ndjson(tmp_path, 2), rows=2)
        client.submit("users", ndjson(tmp_path, 3), rows=3)
    types = [s.headers["Content-Type"] for s in scripted.seen]
    assert types[0].startswith("multipart/form-data")
    assert types[1:] == ["application/json", "application/json"]
    switches = [r for r in caplog.records if "JSON bodies" in r.getMessage()]
    assert len(switches) == 1
    assert "`upload_format`" in switches[0].getMessage()


@pytest.mark.parametrize(
    "said",
    ["line 1: metadata.plan must be a string", "the file holds no records", "line 1: bad profile"],
)
def test_a_400_about_the_rows_never_switches_the_format(
    scripted: Script, tmp_path: Path, said: str
) -> None:
    rejected = {"errors": [{"message": said, "line": 1}]}
    scripted.routes["POST /v1/users/bulk_identify"] = [(400, {}, rejected)]
    client = client_for(scripted.url)
    with pytest.raises(RejectedUploadError) as err:
        client.submit("users", ndjson(tmp_path, 2), rows=2)
    assert said in str(err.value)
    assert len(scripted.seen) == 1


def test_after_a_multipart_success_a_415_is_an_error_not_a_switch(
    scripted: Script, tmp_path: Path
) -> None:
    scripted.routes["POST /v1/users/bulk_identify"] = [
        (202, {}, {"job_id": "j"}),
        (415, {}, {"error": "Unsupported Media Type"}),
    ]
    client = client_for(scripted.url)
    client.submit("users", ndjson(tmp_path, 1), rows=1)
    with pytest.raises(RejectedUploadError, match="415"):
        client.submit("users", ndjson(tmp_path, 1), rows=1)


def test_a_413_is_payload_too_large_with_the_servers_words(
    scripted: Script, tmp_path: Path
) -> None:
    html = "<html><head><title>413 Request Entity Too Large</title></head></html>"
    scripted.routes["POST /v1/users/bulk_identify"] = [(413, {}, html)]
    client = client_for(scripted.url)
    with pytest.raises(PayloadTooLargeError, match="413 Request Entity Too Large"):
        client.submit("users", ndjson(tmp_path, 1), rows=1)


def test_preflight_logs_the_host_never_the_key(
    scripted: Script, caplog: pytest.LogCaptureFixture
) -> None:
    scripted.default["GET /v1/background_jobs/"] = (200, {}, [])
    client = client_for(scripted.url, key=f"{KEY}\n")
    with caplog.at_level(logging.DEBUG):
        client.preflight()
    [seen] = scripted.seen
    assert seen.headers["Authorization"] == f"Token {KEY}"  # stripped
    lines = [r.getMessage() for r in caplog.records]
    assert any(scripted.url in line for line in lines)
    assert all(KEY not in line for line in lines)


@pytest.mark.parametrize("status", [401, 403])
def test_preflight_refused_key_is_an_auth_error_at_once(scripted: Script, status: int) -> None:
    scripted.default["GET /v1/background_jobs/"] = (status, {}, {"detail": "no"})
    with pytest.raises(AuthError, match="`api_key`"):
        client_for(scripted.url).preflight()
    assert len(scripted.seen) == 1


def test_preflight_of_a_wrong_path_names_api_url(scripted: Script) -> None:
    with pytest.raises(UserpilotError, match=r"`api_url`.*HTTP 404"):
        client_for(scripted.url + "/not-the-api").preflight()


def test_preflight_of_a_closed_port_fails_within_seconds_naming_api_url() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    server.server_close()  # nothing listens there now
    clock = FakeClock()
    client = client_for(url, retry=RetryPolicy(max_time=600), sleep=clock.sleep, clock=clock)
    with pytest.raises(UnreachableError) as err:
        client.preflight()
    assert "connection refused" in str(err.value)
    assert "`api_url` setting" in str(err.value)
    assert url in str(err.value)
    assert clock.now <= 4  # not request_retry_max_time's 600 s


EMU_KEY = "sk-live-9e8d-EMULATOR-KEY-1234"


@pytest.fixture
def emulator() -> Callable[..., ContextManager[Emulator]]:
    def start(**kw: Any) -> ContextManager[Emulator]:
        kw.setdefault("token", EMU_KEY)
        kw.setdefault("rows_per_minute", float("inf"))
        return serve(emulator_config(**kw), port=0)

    return start


def wait_done(client: UserpilotClient, job_id: str, limit: float = 10) -> JobStatus:
    deadline = time.monotonic() + limit
    while True:
        status = client.get_job(job_id)
        if status.state != "running" or time.monotonic() > deadline:
            return status
        time.sleep(0.05)


def our_jobs(emu: Emulator) -> list[Any]:
    return [j for j in emu.jobs if not j.foreign]


@pytest.mark.parametrize(
    "case",
    [
        ("users", "uuid", "counts", 200),
        ("companies", "uuid", "rows", 202),
        ("users", "bulk", "rows", 202),
        ("companies", "bulk", "counts", 200),
    ],
)
def test_submit_and_poll_to_completion(
    emulator: Callable[..., ContextManager[Emulator]],
    tmp_path: Path,
    case: tuple[Kind, str, str, int],
) -> None:
    kind, style, fields, code = case
    with emulator(
        rows_per_minute=60_000, job_id_style=style, progress_fields=fields, submit_status=code
    ) as emu:
        client = UserpilotClient(emu.url, EMU_KEY, retry=FAST)
        job_id = client.submit(kind, ndjson(tmp_path, 25, kind), rows=25)
        assert (":" in job_id) == (style == "bulk")
        status = wait_done(client, job_id)
        client.close()
        assert status.state == "completed", status.raw
        assert status.job_id == job_id
        assert status.processed == 25
        assert status.errors == 0
        store = emu.users if kind == "users" else emu.companies
        assert {f"id-{i}" for i in range(25)} <= set(store)
        assert len(our_jobs(emu)) == 1
        assert all(r.status != 404 for r in emu.requests)  # the id was escaped as served


def test_wrong_key_is_an_auth_error_without_the_key(
    emulator: Callable[..., ContextManager[Emulator]],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    wrong = "sk-live-WRONG-KEY-0000"
    with emulator() as emu, caplog.at_level(logging.DEBUG):
        client = UserpilotClient(emu.url, wrong, retry=FAST)
        with pytest.raises(AuthError) as err:
            client.submit("users", ndjson(tmp_path, 1), rows=1)
        assert len(emu.requests) == 1
    text = str(err.value)
    assert "`api_key`" in text
    assert "HTTP 401" in text
    assert wrong not in text
    assert EMU_KEY not in text
    assert all(wrong not in r.getMessage() for r in caplog.records)
    assert wrong not in repr(client)


def test_too_many_rows_is_payload_too_large(
    emulator: Callable[..., ContextManager[Emulator]], tmp_path: Path
) -> None:
    with emulator() as emu:
        client = UserpilotClient(emu.url, EMU_KEY, retry=FAST)
        with pytest.raises(PayloadTooLargeError, match="413"):
            client.submit("users", ndjson(tmp_path, 10_001), rows=10_001)
        assert len(emu.requests) == 1
        assert our_jobs(emu) == []


def test_bad_line_is_rejected_with_the_servers_words(
    emulator: Callable[..., ContextManager[Emulator]], tmp_path: Path
) -> None:
    path = tmp_path / "userpilot-users-bad.ndjson"
    path.write_text('{"user_id": "u1", "metadata": {}}\n{"metadata": {"no": "id"}}\n')
    with emulator() as emu:
        client = UserpilotClient(emu.url, EMU_KEY, retry=FAST)
        with pytest.raises(RejectedUploadError) as err:
            client.submit("users", path, rows=2)
        assert our_jobs(emu) == []
    assert err.value.status == 400
    assert "line 2" in err.value.body
    assert "line 2: user_id is missing" in str(err.value)  # the server's words, either shape


def test_foreign_job_is_waited_out(
    emulator: Callable[..., ContextManager[Emulator]],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with (
        emulator(foreign_job_seconds=1.5, rows_per_minute=600_000) as emu,
        caplog.at_level(logging.INFO),
    ):
        client = UserpilotClient(emu.url, EMU_KEY, retry=FAST)
        started = time.monotonic()
        job_id = client.submit("users", ndjson(tmp_path, 3), rows=3)
        assert 1.0 < time.monotonic() - started < 8
        assert wait_done(client, job_id).state == "completed"
        foreign = [j.job_id for j in emu.jobs if j.foreign]
        assert len(our_jobs(emu)) == 1
    assert client.stats.retries == 0
    waits = [r.getMessage() for r in caplog.records if "slot" in r.getMessage()]
    assert any(foreign[0] in m for m in waits)


def test_foreign_job_outlasting_slot_wait_timeout(
    emulator: Callable[..., ContextManager[Emulator]], tmp_path: Path
) -> None:
    with emulator(foreign_job_seconds=60, rows_per_minute=600_000) as emu:
        client = UserpilotClient(emu.url, EMU_KEY, retry=FAST, slot_wait_timeout=0.5)
        with pytest.raises(SlotWaitTimeoutError) as err:
            client.submit("users", ndjson(tmp_path, 3), rows=3)
        foreign = [j.job_id for j in emu.jobs if j.foreign]
        assert our_jobs(emu) == []
    assert "`slot_wait_timeout`" in str(err.value)
    assert foreign[0] in str(err.value)


def test_faults_are_retried_and_every_job_created_once(
    emulator: Callable[..., ContextManager[Emulator]], tmp_path: Path
) -> None:
    with emulator(seed=11, fail_rate=0.3, fault_kinds=("500", "502", "503", "drop")) as emu:
        # Faults are drawn per request, not per second: the waits (about 10 s of job-list
        # look-ups after each dropped upload) can be skipped.
        client = UserpilotClient(emu.url, EMU_KEY, retry=FAST, sleep=lambda _: None)
        for n in range(4):
            kind: Kind = "users" if n % 2 else "companies"
            job_id = client.submit(kind, ndjson(tmp_path, 10 + n, kind), rows=10 + n)
            assert wait_done(client, job_id).state == "completed"
        assert len(our_jobs(emu)) == 4
        assert any(r.fault for r in emu.requests)
    assert client.stats.retries > 0
    assert client.requests_sent == len(emu.requests)


def test_429_retry_after_is_honoured(
    emulator: Callable[..., ContextManager[Emulator]], tmp_path: Path
) -> None:
    waits: list[float] = []
    with emulator(fail_rate=1.0, fault_kinds=("429",), retry_after_seconds=1) as emu:

        def sleep(seconds: float) -> None:
            waits.append(seconds)
            emu.set_faults(fail_rate=0.0)

        client = UserpilotClient(emu.url, EMU_KEY, retry=FAST, sleep=sleep)
        client.submit("users", ndjson(tmp_path, 2), rows=2)
        assert len(our_jobs(emu)) == 1
    assert waits == [1.0]  # Retry-After, not the 0.01 s backoff
    assert client.stats.retries == 1


def test_lost_submit_response_is_recovered_from_the_job_list(
    emulator: Callable[..., ContextManager[Emulator]],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with emulator(drop_submit_responses=1, job_id_style="bulk") as emu:
        client = UserpilotClient(emu.url, EMU_KEY, retry=FAST)
        with caplog.at_level(logging.WARNING):
            job_id = client.submit("users", ndjson(tmp_path, 5), rows=5)
        assert len(emu.jobs) == 1
        assert emu.jobs[0].job_id == job_id
        assert wait_done(client, job_id).state == "completed"
    assert any(job_id in r.getMessage() for r in caplog.records)


def test_an_html_page_from_a_wrong_api_url_is_one_line_naming_its_title(scripted: Script) -> None:
    page = (
        "<!DOCTYPE html>\n<html>\n<head>\n<title>404 Not Found</title>\n</head>\n"
        "<body>\n<h1>Not Found</h1>\n<p>The requested URL was not found.</p>\n</body>\n</html>\n"
    )
    scripted.default["GET /v1/background_jobs/"] = (404, {}, page)
    client = client_for(scripted.url)
    with pytest.raises(UserpilotError) as wrong:
        client.preflight()
    assert "\n" not in str(wrong.value)
    assert str(wrong.value).endswith("answered HTTP 404: an HTML page (404 Not Found)")
