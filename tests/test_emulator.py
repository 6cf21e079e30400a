"""The Userpilot emulator over real sockets: contract, jobs, store, faults."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests

from target_userpilot.emulator import MAX_FILE_BYTES, Emulator, EmulatorConfig, serve

TOKEN = "test-token"  # noqa: S105 - the emulator's
AUTH = {"Authorization": f"Token {TOKEN}"}
Make = Callable[..., Emulator]


@pytest.fixture
def make_emulator(make_emulator: Make) -> Make:
    """These tests pin the bulk pages' shapes (profile `legacy`), whatever profile the run tests.

    The API reference's shapes (the default profile) are covered in test_emulator_reference.py.
    """

    def make(**kwargs: Any) -> Emulator:
        kwargs.setdefault("profile", "legacy")
        return make_emulator(**kwargs)

    return make


@pytest.fixture
def emulator(make_emulator: Make) -> Emulator:
    return make_emulator(rows_per_minute=float("inf"))


def ndjson(records: Iterable[Any]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def users(n: int, start: int = 0, **extra: Any) -> list[dict[str, Any]]:
    return [{"user_id": str(i), "metadata": {"n": i, **extra}} for i in range(start, start + n)]


def post_file(
    emu: Emulator,
    kind: str,
    body: bytes | Any,
    filename: str = "batch.ndjson",
    part: str = "file",
) -> requests.Response:
    return requests.post(
        f"{emu.url}/v1/{kind}/bulk_identify",
        files={part: (filename, body, "application/x-ndjson")},
        headers=AUTH,
        timeout=30,
    )


def post_json(emu: Emulator, kind: str, records: list[Any]) -> requests.Response:
    return requests.post(
        f"{emu.url}/v1/{kind}/bulk_identify", json={kind: records}, headers=AUTH, timeout=10
    )


def get_job(emu: Emulator, job_id: str, *, encode: bool = False) -> dict[str, Any]:
    path = quote(job_id, safe="") if encode else job_id
    r = requests.get(f"{emu.url}/v1/background_jobs/{path}", headers=AUTH, timeout=10)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def wait_done(emu: Emulator, job_id: str, *, encode: bool = False) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        job = get_job(emu, job_id, encode=encode)
        if job["status"] in {"completed", "failed"}:
            return job
        time.sleep(0.02)
    pytest.fail(f"job {job_id} never finished")


def submitted(r: requests.Response) -> str:
    assert r.status_code in {200, 202}, r.text
    body = r.json()
    assert body["status"] == "queued"
    assert body["submitted_at"].endswith("Z")
    job_id: str = body["job_id"]
    return job_id


# -- authentication, routing ---------------------------------------------------------------


def test_every_request_needs_the_token(emulator: Emulator) -> None:
    wrong = "Token sk-wrong-0001"
    for headers in ({}, {"Authorization": wrong}, {"Authorization": f"Bearer {TOKEN}"}):
        for method, path in (("GET", "/v1/background_jobs/"), ("POST", "/v1/users/bulk_identify")):
            r = requests.request(method, emulator.url + path, headers=headers, timeout=5)
            assert r.status_code == 401
            assert "error" in r.json()
            assert "sk-wrong-0001" not in r.text
    assert requests.get(emulator.url + "/v1/background_jobs/", headers=AUTH, timeout=5).json() == []
    assert emulator.jobs == []


def test_unknown_paths_and_wrong_methods_answer_json(emulator: Emulator) -> None:
    r = requests.get(emulator.url + "/v1/nothing", headers=AUTH, timeout=5)
    assert r.status_code == 404
    assert "error" in r.json()
    r = requests.get(emulator.url + "/v1/users/bulk_identify", headers=AUTH, timeout=5)
    assert r.status_code == 405
    assert r.headers["Allow"] == "POST"
    assert "error" in r.json()
    r = requests.post(emulator.url + "/v1/background_jobs/", headers=AUTH, timeout=5)
    assert r.status_code == 405
    r = requests.get(emulator.url + "/v1/background_jobs/no-such-job", headers=AUTH, timeout=5)
    assert r.status_code == 404
    assert "no-such-job" in r.json()["error"]


# -- submitting and landing ------------------------------------------------------------------


def test_multipart_and_json_submits_land_with_merge_semantics(emulator: Emulator) -> None:
    first = [
        {"user_id": "1", "company_id": "c1", "metadata": {"name": "Ann", "plan": "free"}},
        {"user_id": "2", "metadata": {"name": "Bob"}},
        {"user_id": "1", "metadata": {"plan": "pro", "seats": 3}},  # later line wins
    ]
    job = wait_done(emulator, submitted(post_file(emulator, "users", ndjson(first))))
    assert job == {
        "job_id": job["job_id"],
        "status": "completed",
        "processed_count": 3,
        "error_count": 0,
        "submitted_at": job["submitted_at"],
        "completed_at": job["completed_at"],
    }
    assert job["completed_at"].endswith("Z")
    second = [{"user_id": "1", "company_id": "c2", "metadata": {"name": "Anne", "ok": True}}]
    wait_done(emulator, submitted(post_json(emulator, "users", second)))
    assert emulator.users == {
        "1": {
            "user_id": "1",
            "company_id": "c2",
            "metadata": {"name": "Anne", "plan": "pro", "seats": 3, "ok": True},
        },
        "2": {"user_id": "2", "metadata": {"name": "Bob"}},
    }

    companies = [{"company_id": "c1", "metadata": {"name": "Acme", "size": None}}]
    wait_done(emulator, submitted(post_file(emulator, "companies", ndjson(companies))))
    more = [{"company_id": "c1", "metadata": {"size": 10}}, {"company_id": "c2"}]
    wait_done(emulator, submitted(post_json(emulator, "companies", more)))
    assert emulator.companies == {
        "c1": {"company_id": "c1", "metadata": {"name": "Acme", "size": 10}},
        "c2": {"company_id": "c2", "metadata": {}},
    }
    kinds = [(j.kind, j.rows, j.source, j.status) for j in emulator.jobs]
    assert kinds == [
        ("users", 3, "multipart", "completed"),
        ("users", 1, "json", "completed"),
        ("companies", 1, "multipart", "completed"),
        ("companies", 2, "json", "completed"),
    ]
    # Copies: mutating what was read changes nothing.
    emulator.users["1"]["metadata"]["name"] = "changed"
    assert emulator.users["1"]["metadata"]["name"] == "Anne"


def test_job_list_shape(emulator: Emulator) -> None:
    job_id = submitted(post_file(emulator, "users", ndjson(users(2)), filename="part-0001.ndjson"))
    wait_done(emulator, job_id)
    json_id = submitted(post_json(emulator, "companies", [{"company_id": "c"}]))
    wait_done(emulator, json_id)
    listed = requests.get(emulator.url + "/v1/background_jobs/", headers=AUTH, timeout=5).json()
    assert [j["job_id"] for j in listed] == [job_id, json_id]  # newest last
    entry = listed[0]
    assert set(entry) == {
        "job_id",
        "links",
        "status",
        "type",
        "total_rows",
        "file_size",
        "filename",
        "start_time",
        "end_time",
        "elapsed_time",
    }
    assert entry["links"] == f"/v1/background_jobs/{job_id}"
    assert entry["status"] == "completed"
    assert entry["type"] == "identify_user"
    assert entry["total_rows"] == 2
    assert entry["file_size"] == len(ndjson(users(2)))
    assert entry["filename"] == "NX-51f4acf7_identify_user_part-0001.ndjson"
    assert "T" in entry["start_time"]
    assert not entry["start_time"].endswith("Z")
    assert "+" not in entry["end_time"]
    assert isinstance(entry["elapsed_time"], int)
    assert listed[1]["type"] == "identify_company"
    assert listed[1]["filename"] == f"NX-51f4acf7_identify_company_{json_id}.json"
    # Without the trailing slash too.
    again = requests.get(emulator.url + "/v1/background_jobs", headers=AUTH, timeout=5)
    assert again.json() == listed


def test_a_10000_line_file_is_accepted_and_10001_is_413(emulator: Emulator) -> None:
    r = post_file(emulator, "users", ndjson(users(10_001)))
    assert r.status_code == 413
    assert "error" in r.json()
    r = post_json(emulator, "users", users(10_001))
    assert r.status_code == 413
    assert emulator.jobs == []
    job = wait_done(emulator, submitted(post_file(emulator, "users", ndjson(users(10_000)))))
    assert job["processed_count"] == 10_000
    assert len(emulator.users) == 10_000
    # The request log times the upload: arrival, body all in, then the job after parsing.
    post = next(r for r in emulator.requests if r.status == 200 and r.method == "POST")
    assert post.received_at is not None
    assert post.at <= post.received_at <= emulator.jobs[0].submitted_at


def _big_file(path: Path, size: int) -> Path:
    line = json.dumps({"user_id": "x", "metadata": {"pad": "p" * 8000}}).encode() + b"\n"
    with path.open("wb") as f:
        written = 0
        while written + len(line) <= size:
            f.write(line)
            written += len(line)
        f.write(b" " * (size - written))  # trailing blank space: still valid NDJSON
    return path


@pytest.mark.parametrize("over", [1, 10 * 1024 * 1024], ids=["just-over", "far-over"])
def test_an_upload_over_50_mb_is_413(emulator: Emulator, tmp_path: Path, over: int) -> None:
    path = _big_file(tmp_path / "big.ndjson", MAX_FILE_BYTES + over)
    with path.open("rb") as f:
        r = post_file(emulator, "users", f)
    assert r.status_code == 413
    assert "50 MB" in r.json()["error"]
    assert emulator.jobs == []
    # The connection stayed usable: the server answers the next request normally.
    assert post_json(emulator, "users", users(1)).status_code == 200


def test_a_file_of_50_mb_exactly_is_accepted(emulator: Emulator, tmp_path: Path) -> None:
    path = _big_file(tmp_path / "max.ndjson", MAX_FILE_BYTES)
    with path.open("rb") as f:
        job_id = submitted(post_file(emulator, "users", f))
    assert emulator.jobs[0].bytes == MAX_FILE_BYTES
    assert wait_done(emulator, job_id)["status"] == "completed"


INVALID_USER_LINES = {
    "not-json": b"{nope",
    "not-an-object": b'["1", "2"]',
    "missing-user-id": b'{"metadata": {}}',
    "empty-user-id": b'{"user_id": ""}',
    "number-user-id": b'{"user_id": 3}',
    "number-company-id": b'{"user_id": "3", "company_id": 7}',
    "null-company-id": b'{"user_id": "3", "company_id": null}',
    "metadata-not-object": b'{"user_id": "3", "metadata": "x"}',
    "nested-metadata": b'{"user_id": "3", "metadata": {"plan": {"name": "pro"}}}',
    "array-metadata": b'{"user_id": "3", "metadata": {"tags": [1, 2]}}',
    "nan": b'{"user_id": "3", "metadata": {"score": NaN}}',
    "unknown-field": b'{"user_id": "3", "email": "x@example.com"}',
    "blank-line-inside": b"",
}


@pytest.mark.parametrize("line", INVALID_USER_LINES.values(), ids=INVALID_USER_LINES.keys())
def test_an_invalid_line_is_400_naming_it(emulator: Emulator, line: bytes) -> None:
    body = ndjson(users(2)) + line + b"\n" + ndjson(users(2, start=10))
    r = post_file(emulator, "users", body)
    assert r.status_code == 400, r.text
    error = r.json()
    assert error["error"].startswith("line 3: ")
    assert error["line"] == 3
    assert error["reason"]
    assert emulator.jobs == []


def test_invalid_companies_and_json_records_are_400(emulator: Emulator) -> None:
    r = post_file(emulator, "companies", b'{"company_id": "a"}\n{"user_id": "u"}\n')
    assert r.status_code == 400
    assert r.json()["line"] == 2
    r = post_file(emulator, "companies", b'{"company_id": "a", "metadata": {"x": {}}}\n')
    assert r.json()["line"] == 1
    r = post_json(emulator, "users", [{"user_id": "1"}, {"user_id": "2", "metadata": []}])
    assert r.status_code == 400
    assert r.json()["error"].startswith("record 2: ")
    assert r.json()["line"] == 2
    assert emulator.jobs == []


def test_malformed_submits_are_400(emulator: Emulator) -> None:
    url = emulator.url + "/v1/users/bulk_identify"
    r = post_file(emulator, "users", ndjson(users(1)), part="upload")
    assert r.status_code == 400
    assert "'file'" in r.json()["error"]
    plain = {**AUTH, "Content-Type": "text/plain"}
    r = requests.post(url, data=ndjson(users(1)), headers=plain, timeout=5)
    assert r.status_code == 400
    r = requests.post(
        url, data=b"{", headers={**AUTH, "Content-Type": "application/json"}, timeout=5
    )
    assert r.status_code == 400
    r = requests.post(url, json={"companies": []}, headers=AUTH, timeout=5)
    assert r.status_code == 400
    r = requests.post(url, files={"file": (None, "x")}, headers=AUTH, timeout=5)
    assert r.status_code == 400
    r = post_file(emulator, "users", b"\n\n")
    assert r.status_code == 400
    assert emulator.jobs == []


def test_blank_trailing_lines_and_chunked_uploads_are_fine(emulator: Emulator) -> None:
    wait_done(emulator, submitted(post_file(emulator, "users", ndjson(users(2)) + b"\n\n")))

    def chunks() -> Iterable[bytes]:
        yield b'{"users": ['
        yield json.dumps(users(1, start=5)[0]).encode()
        yield b"]}"

    r = requests.post(
        emulator.url + "/v1/users/bulk_identify",
        data=chunks(),
        headers={**AUTH, "Content-Type": "application/json"},
        timeout=5,
    )
    wait_done(emulator, submitted(r))
    assert set(emulator.users) == {"0", "1", "5"}


# -- one job at a time ---------------------------------------------------------------------


def test_409_while_a_job_runs_across_kinds(make_emulator: Make) -> None:
    emu = make_emulator(rows_per_minute=60_000, queued_seconds=0.2)  # 100 rows: 0.3 s in all
    job_id = submitted(post_file(emu, "users", ndjson(users(100))))
    for r in (
        post_json(emu, "companies", [{"company_id": "c"}]),
        post_json(emu, "users", users(1)),
    ):
        assert r.status_code == 409
        assert job_id in r.json()["error"]
    wait_done(emu, job_id)
    submitted(post_json(emu, "companies", [{"company_id": "c"}]))
    assert len(emu.jobs) == 2


def test_409_while_a_foreign_job_holds_the_slot(make_emulator: Make) -> None:
    emu = make_emulator(foreign_job_seconds=0.4, rows_per_minute=float("inf"))
    assert post_json(emu, "users", users(1)).status_code == 409
    assert [j.foreign for j in emu.jobs] == [True]
    time.sleep(0.45)
    wait_done(emu, submitted(post_json(emu, "users", users(1))))
    foreign = emu.add_foreign_job(0.3)
    r = post_json(emu, "companies", [{"company_id": "c"}])
    assert r.status_code == 409
    assert foreign in r.json()["error"]
    assert get_job(emu, foreign)["status"] == "processing"
    listed = requests.get(emu.url + "/v1/background_jobs/", headers=AUTH, timeout=5).json()
    assert len(listed) == 3
    assert [j.foreign for j in emu.jobs] == [True, False, True]


def test_status_progresses_at_the_configured_rate_and_rows_land_at_completion(
    make_emulator: Make,
) -> None:
    emu = make_emulator(rows_per_minute=60_000, queued_seconds=0.2)  # 500 rows: 0.5 s
    start = time.monotonic()
    job_id = submitted(post_file(emu, "users", ndjson(users(500))))
    seen: list[tuple[str, int]] = []
    while True:
        stored = len(emu.users)  # read before polling: if the poll says not done, nor was this
        job = get_job(emu, job_id)
        seen.append((job["status"], job["processed_count"]))
        if job["status"] == "completed":
            break
        assert stored == 0
        assert job["completed_at"] is None
        time.sleep(0.03)
    elapsed = time.monotonic() - start
    assert 0.65 <= elapsed < 2.0
    statuses = [s for s, _ in seen]
    assert statuses[0] == "queued"
    assert "processing" in statuses
    assert statuses == sorted(statuses, key=["queued", "processing", "completed"].index)
    counts = [c for _, c in seen]
    assert counts == sorted(counts)
    assert any(0 < c < 500 for s, c in seen if s == "processing")
    assert seen[-1] == ("completed", 500)
    assert len(emu.users) == 500
    record = emu.jobs[0]
    assert record.finished_at is not None
    assert record.started_at is not None
    assert record.finished_at - record.started_at == pytest.approx(0.5)
    assert record.started_at - record.submitted_at == pytest.approx(0.2)


@pytest.mark.parametrize("style", ["bulk", "alternate"])
def test_job_id_styles_poll_raw_and_percent_encoded(make_emulator: Make, style: str) -> None:
    emu = make_emulator(job_id_style=style, rows_per_minute=float("inf"))
    ids = []
    for n, encode in enumerate([False, False, True, True]):
        job_id = submitted(post_json(emu, "users", users(1, start=n)))
        assert wait_done(emu, job_id, encode=encode)["job_id"] == job_id
        ids.append(job_id)
    bulk = [i.startswith("bulk:jobs:NX-51f4acf7:") for i in ids]
    assert bulk == ([True] * 4 if style == "bulk" else [False, True, False, True])
    paths = [r.path for r in emu.requests if r.method == "GET"]
    assert any("%3A" in p for p in paths)
    assert any(":" in p for p in paths)
    assert len(emu.users) == 4


def test_progress_fields_rows_and_submit_status_202(make_emulator: Make) -> None:
    emu = make_emulator(progress_fields="rows", submit_status=202, reject_ids={"1"})
    r = post_json(emu, "users", users(3))
    assert r.status_code == 202
    job = wait_done(emu, submitted(r))
    assert set(job) == {
        "job_id",
        "status",
        "total_rows",
        "completed_rows",
        "submitted_at",
        "completed_at",
        "errors",
    }
    assert (job["total_rows"], job["completed_rows"]) == (3, 2)


def test_fail_jobs_end_failed_and_store_nothing(make_emulator: Make) -> None:
    emu = make_emulator(fail_jobs=1, rows_per_minute=float("inf"))
    job = wait_done(emu, submitted(post_json(emu, "users", users(3))))
    assert job["status"] == "failed"
    assert "error" in job
    assert emu.users == {}
    assert emu.jobs[0].status == "failed"
    assert wait_done(emu, submitted(post_json(emu, "users", users(3))))["status"] == "completed"
    assert len(emu.users) == 3


def test_rejected_ids_are_counted_detailed_and_not_stored(make_emulator: Make) -> None:
    emu = make_emulator(reject_ids={"2", "c9"}, rows_per_minute=float("inf"))
    job = wait_done(emu, submitted(post_file(emu, "users", ndjson(users(4)))))
    assert (job["status"], job["processed_count"], job["error_count"]) == ("completed", 3, 1)
    assert job["errors"] == [
        {"line": 3, "user_id": "2", "error": "rejected by the server while processing"}
    ]
    assert set(emu.users) == {"0", "1", "3"}
    assert emu.jobs[0].error_count == 1
    assert emu.jobs[0].errors == job["errors"]
    records = [{"company_id": "c1"}, {"company_id": "c9"}]
    job = wait_done(emu, submitted(post_json(emu, "companies", records)))
    assert job["errors"][0]["company_id"] == "c9"
    assert set(emu.companies) == {"c1"}


# -- faults -------------------------------------------------------------------------------


def test_fail_rate_one_faults_every_request_and_changes_nothing(make_emulator: Make) -> None:
    emu = make_emulator(fail_rate=1.0, seed=7, retry_after_seconds=3)
    outcomes = set()
    for _ in range(40):
        try:
            r = post_json(emu, "users", users(1))
        except requests.ConnectionError:
            outcomes.add("drop")
            continue
        outcomes.add(str(r.status_code))
        if r.status_code == 429:
            assert r.headers["Retry-After"] == "3"
    assert outcomes == {"500", "502", "503", "429", "drop"}
    assert emu.jobs == []
    assert emu.users == {}
    assert {r.fault for r in emu.requests} == outcomes
    assert {r.status for r in emu.requests if r.fault == "drop"} == {0}
    emu.set_faults(fail_rate=0.0)
    assert emu.config.fail_rate == 0.0
    wait_done(emu, submitted(post_json(emu, "users", users(1))))


def test_faults_are_reproducible_by_seed(make_emulator: Make) -> None:
    def pattern(emu: Emulator) -> list[int]:
        out = []
        for _ in range(15):
            r = requests.get(emu.url + "/v1/background_jobs/", headers=AUTH, timeout=5)
            out.append(r.status_code)
        return out

    kinds = ("500", "429")
    a = pattern(make_emulator(fail_rate=0.5, seed=11, fault_kinds=kinds))
    b = pattern(make_emulator(fail_rate=0.5, seed=11, fault_kinds=kinds))
    assert a == b
    assert {200, 500, 429} == set(a)


def test_a_lost_submit_response_still_creates_the_job(make_emulator: Make) -> None:
    emu = make_emulator(drop_submit_responses=1, rows_per_minute=60_000)
    with pytest.raises(requests.ConnectionError):
        post_json(emu, "users", users(100))
    listed = requests.get(emu.url + "/v1/background_jobs/", headers=AUTH, timeout=5).json()
    assert len(listed) == 1
    assert listed[0]["total_rows"] == 100
    assert post_json(emu, "users", users(1)).status_code == 409  # it is running
    wait_done(emu, listed[0]["job_id"])
    assert len(emu.users) == 100
    assert [r.fault for r in emu.requests if r.method == "POST"] == ["lost_response", None]


def test_slow_seconds_delays_every_response(make_emulator: Make) -> None:
    emu = make_emulator(slow_seconds=0.3)
    start = time.monotonic()
    requests.get(emu.url + "/v1/background_jobs/", headers=AUTH, timeout=5)
    requests.get(emu.url + "/v1/background_jobs/", timeout=5)
    assert time.monotonic() - start >= 0.6
    emu.set_faults(slow_seconds=0)
    start = time.monotonic()
    requests.get(emu.url + "/v1/background_jobs/", headers=AUTH, timeout=5)
    assert time.monotonic() - start < 0.3


def test_set_faults_is_validated(emulator: Emulator) -> None:
    with pytest.raises(ValueError, match="fail_rate"):
        emulator.set_faults(fail_rate=2)
    with pytest.raises(TypeError):
        emulator.set_faults(seed=3)
    with pytest.raises(TypeError):
        emulator.set_faults(nope=1)
    with pytest.raises(ValueError, match="job_id_style"):
        EmulatorConfig(job_id_style="weird")  # type: ignore[arg-type]


# -- the server ---------------------------------------------------------------------------


def test_realtime_identify_applies_at_once(emulator: Emulator) -> None:
    r = requests.post(
        emulator.url + "/v1/identify",
        json={"user_id": "9", "metadata": {"a": 1}, "company": {"id": "c", "name": "Acme"}},
        headers={**AUTH, "X-API-Version": "2020-09-22"},
        timeout=5,
    )
    assert r.status_code == 202
    assert emulator.users["9"] == {"user_id": "9", "company_id": "c", "metadata": {"a": 1}}
    assert emulator.companies["c"]["metadata"] == {"name": "Acme"}
    bad = requests.post(emulator.url + "/v1/identify", json={"user_id": 1}, headers=AUTH, timeout=5)
    assert bad.status_code == 400


def test_keep_alive_concurrency_and_a_clean_shutdown() -> None:
    before = {t.name for t in threading.enumerate()}
    with serve(EmulatorConfig(token=TOKEN, rows_per_minute=float("inf")), port=0) as emu:
        session = requests.Session()
        for _ in range(5):
            assert session.get(emu.url + "/v1/background_jobs/", headers=AUTH).status_code == 200
        errors: list[BaseException] = []

        def poll() -> None:
            try:
                with requests.Session() as s:
                    for _ in range(10):
                        s.get(emu.url + "/v1/background_jobs/", headers=AUTH, timeout=5)
            except BaseException as e:  # noqa: BLE001
                errors.append(e)

        threads = [threading.Thread(target=poll) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert len(emu.requests) == 85
        url = emu.url
        # `session` still holds an idle keep-alive connection while the server stops.
    leftover = {t.name for t in threading.enumerate()} - before
    assert not [name for name in leftover if name.startswith("userpilot-emulator")]
    with pytest.raises(requests.ConnectionError):
        requests.get(url + "/v1/background_jobs/", headers=AUTH, timeout=2)
    session.close()


def test_refuses_a_non_loopback_host() -> None:
    with pytest.raises(ValueError, match="loopback"), serve(EmulatorConfig(), host="0.0.0.0"):  # noqa: S104
        pass
