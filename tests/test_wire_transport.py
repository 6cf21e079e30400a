"""The HTTP session: auth header, multipart and JSON uploads, the key kept out of every text."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from wire_script import KEY, Script, ndjson

from target_userpilot.wire.errors import UserpilotError
from target_userpilot.wire.retry import Failure
from target_userpilot.wire.transport import JsonBody, Transport, clean_api_key


def transport_for(url: str, key: str = KEY) -> Transport:
    return Transport(
        key,
        api_url=url,
        timeout=(2.0, 5.0),
        user_agent="target-userpilot/test",
        wall_clock=time.time,
    )


def test_multipart_upload_is_one_streamed_ndjson_part_with_auth_headers(
    scripted: Script, tmp_path: Path
) -> None:
    scripted.routes["POST /v1/users/bulk_identify"] = [(202, {}, {"job_id": "j"})]
    path = ndjson(tmp_path, 3)
    answer = transport_for(scripted.url).exchange(
        "POST", scripted.url + "/v1/users/bulk_identify", upload=(path, "users", "multipart")
    )
    assert not isinstance(answer, Failure)
    assert answer.status_code == 202
    [post] = scripted.seen
    assert post.headers["Authorization"] == f"Token {KEY}"
    assert post.headers["Accept"] == "application/json, text/plain, */*"
    assert post.headers["User-Agent"] == "target-userpilot/test"
    assert post.headers["Content-Type"].startswith("multipart/form-data; boundary=")
    head = post.body.split(b"\r\n\r\n", 1)[0].decode()
    assert f'name="file"; filename="{path.name}"' in head
    assert "Content-Type: application/x-ndjson" in head
    assert path.read_bytes() in post.body


def test_json_upload_is_the_records_under_their_kind_with_a_content_length(
    scripted: Script, tmp_path: Path
) -> None:
    scripted.routes["POST /v1/companies/bulk_identify"] = [(202, {}, {"job_id": "j"})]
    path = ndjson(tmp_path, 5, "companies")
    transport_for(scripted.url).exchange(
        "POST", scripted.url + "/v1/companies/bulk_identify", upload=(path, "companies", "json")
    )
    [post] = scripted.seen
    assert post.headers["Content-Type"] == "application/json"
    assert int(post.headers["Content-Length"]) == len(post.body)
    sent = json.loads(post.body)
    assert sent == {"companies": [json.loads(line) for line in path.read_text().splitlines()]}
    # Only commas and the wrapper are added: a JSON body fits where its file fits.
    assert len(post.body) <= path.stat().st_size + len('{"companies":[]}')


def test_json_body_reads_in_any_block_size(tmp_path: Path) -> None:
    path = ndjson(tmp_path, 40)
    whole = JsonBody(path, "users").read()
    body = JsonBody(path, "users")
    parts = []
    while block := body.read(7):
        parts.append(block)
    assert b"".join(parts) == whole
    assert len(whole) == len(JsonBody(path, "users"))
    assert json.loads(whole)["users"][39]["user_id"] == "id-39"


@pytest.mark.parametrize("key", [f"{KEY}\n", f"  {KEY}\r\n", f"\t{KEY} "])
def test_a_key_is_stripped_of_surrounding_whitespace(key: str) -> None:
    assert clean_api_key(key) == KEY


@pytest.mark.parametrize(
    ("key", "says"),
    [
        ("", "empty"),
        (" \n", "empty"),
        (12345678, "must be a string, not int"),
        ({"token": KEY}, "must be a string, not dict"),
        (f"{KEY[:8]}\n{KEY[8:]}", "line breaks"),
    ],
)
def test_an_unusable_key_is_refused_without_quoting_it(key: object, says: str) -> None:
    with pytest.raises(ValueError, match="`api_key`") as err:
        clean_api_key(key)
    assert says in str(err.value)
    assert "12345678" not in str(err.value)
    assert KEY[8:] not in str(err.value)


def test_a_header_requests_refuses_never_reaches_a_message(scripted: Script) -> None:
    # Only reachable by skipping clean_api_key: requests' own error quotes the header.
    transport = transport_for(scripted.url, key=f"{KEY}\n")
    with pytest.raises(UserpilotError) as err:
        transport.exchange("GET", scripted.url + "/v1/background_jobs/")
    assert KEY not in str(err.value)
    assert err.value.__cause__ is None
    assert err.value.__suppress_context__
    assert KEY not in repr(transport)
