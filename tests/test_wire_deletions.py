"""The Deletion API sender: headers, what counts as acceptance, pacing, retries, errors."""

from __future__ import annotations

import json
import logging
from email.utils import formatdate
from typing import Any

import pytest
import requests
from fake_clock import FakeClock
from wire_script import KEY, Script

from target_userpilot.emulator import Emulator
from target_userpilot.run.deletions import DELETE_CHUNK_IDS, DeleteLimit, DeletionLedger
from target_userpilot.wire import (
    AuthError,
    DeletionRefusedError,
    RetryPolicy,
    TransientError,
    UserpilotClient,
    UserpilotError,
)
from target_userpilot.wire.deletions import DeleteSender

TOKEN = "test-token"  # noqa: S105 - the emulator's (conftest)


@pytest.fixture
def emu(clocked_emulator: Emulator) -> Emulator:
    return clocked_emulator


def client_for(url: str, fake_clock: FakeClock, **kwargs: Any) -> UserpilotClient:
    return UserpilotClient(
        url,
        kwargs.pop("api_key", TOKEN),
        retry=RetryPolicy(max_time=kwargs.pop("max_time", 600.0)),
        timeout=(2.0, 5.0),
        sleep=fake_clock.sleep,
        clock=fake_clock,
        wall_clock=fake_clock,
    )


def sender_for(server: Emulator | Script, fake_clock: FakeClock, **kwargs: Any) -> DeleteSender:
    return client_for(server.url, fake_clock, **kwargs).deleter()


def statuses(emu: Emulator) -> list[int]:
    return [r.status for r in emu.requests if r.method == "DELETE"]


def test_ten_thousand_deletions_go_paced_without_a_single_429(
    emu: Emulator, fake_clock: FakeClock
) -> None:
    users = [{"user_id": f"u{i}"} for i in range(10_000)]
    r = requests.post(
        f"{emu.url}/v1/users/bulk_identify",
        json={"users": users},
        headers={"Authorization": f"Token {TOKEN}"},
        timeout=60,
    )
    assert r.status_code in {200, 202}  # the bulk pages' and the API reference's answers
    ledger = DeletionLedger()
    for seq, user in enumerate(users):
        ledger.delete("users", user["user_id"], seq)
    chunks = ledger.seal(DeleteLimit(count=10_000))
    assert len(chunks) == 10_000 // DELETE_CHUNK_IDS
    sender = sender_for(emu, fake_clock)
    started = fake_clock()
    for chunk in chunks:
        accepted = sender.delete(chunk.kind, chunk.ids)
        assert (accepted.sent, accepted.scheduled) == (DELETE_CHUNK_IDS, DELETE_CHUNK_IDS)
        ledger.accepted(chunk)
    assert statuses(emu) == [202] * 10
    assert fake_clock() - started >= 9 * 2.0
    assert len(emu.deletions.pending) == 10_000
    emu.run_daily_deletions()
    assert emu.users == {}


def test_a_429_from_someone_elses_delete_is_waited_out_and_counted(
    emu: Emulator, fake_clock: FakeClock
) -> None:
    other = requests.delete(
        f"{emu.url}/v1/companies",
        json={"companies": ["c9"]},
        headers={"Authorization": f"Token {TOKEN}", "X-API-Version": "2020-09-22"},
        timeout=10,
    )
    assert other.status_code == 202
    client = client_for(emu.url, fake_clock)
    accepted = client.deleter().delete("users", ["u1"])
    assert accepted.scheduled == 1
    assert statuses(emu) == [202, 429, 202]
    assert (client.stats.retries, client.requests_sent) == (1, 2)
    assert [(p.kind, p.id) for p in emu.deletions.pending] == [
        ("companies", "c9"),
        ("users", "u1"),
    ]


def test_429s_give_up_within_the_retry_time(emu: Emulator, fake_clock: FakeClock) -> None:
    emu.set_faults(fail_rate=1.0, fault_kinds=("429",), retry_after_seconds=0)
    started = fake_clock()
    with pytest.raises(TransientError) as caught:
        sender_for(emu, fake_clock, max_time=300).delete("users", ["u1"])
    assert fake_clock() - started <= 300 + 2.1
    assert "HTTP 429" in str(caught.value)
    assert "request_retry_max_time" in str(caught.value)
    assert TOKEN not in str(caught.value)
    assert emu.deletions.pending == []


def test_a_longer_retry_after_is_honoured(scripted: Script, fake_clock: FakeClock) -> None:
    scripted.default["DELETE /v1/users"] = (429, {"Retry-After": "45"}, {})
    with pytest.raises(TransientError, match="asked to wait 45 s more"):
        sender_for(scripted, fake_clock, api_key=KEY, max_time=100).delete("users", ["u1"])
    assert fake_clock.sleeps == [45.0, 45.0]


def test_a_retry_after_as_an_http_date_is_honoured(scripted: Script, fake_clock: FakeClock) -> None:
    later = formatdate(fake_clock() + 30, usegmt=True)
    scripted.routes["DELETE /v1/users"] = [(429, {"Retry-After": later}, {}), (202, {}, {})]
    accepted = sender_for(scripted, fake_clock, api_key=KEY).delete("users", ["u1"])
    assert accepted.sent == 1
    assert fake_clock.sleeps == [30.0]


def test_requests_are_paced_two_seconds_apart(emu: Emulator, fake_clock: FakeClock) -> None:
    sender = sender_for(emu, fake_clock)
    sender.delete("users", ["u1"])
    fake_clock.advance(0.5)
    sender.delete("companies", ["c1"])
    fake_clock.advance(5)
    sender.delete("users", ["u2"])
    assert fake_clock.sleeps == [pytest.approx(1.6)]
    assert statuses(emu) == [202, 202, 202]


def test_a_refused_key_stops_at_once_without_the_key(emu: Emulator, fake_clock: FakeClock) -> None:
    sender = sender_for(emu, fake_clock, api_key="wrong-key-456")
    with pytest.raises(AuthError) as caught:
        sender.delete("users", ["u1"])
    assert "HTTP 401" in str(caught.value)
    assert "api_key" in str(caught.value)
    assert "wrong-key-456" not in str(caught.value)
    assert "wrong-key-456" not in repr(sender)
    assert statuses(emu) == [401]


def test_a_refused_request_is_not_retried(emu: Emulator, fake_clock: FakeClock) -> None:
    with pytest.raises(DeletionRefusedError) as caught:
        sender_for(emu, fake_clock).delete("users", [""])
    assert caught.value.status == 400
    assert "non-empty string" in str(caught.value)
    assert statuses(emu) == [400]


def test_the_request_carries_the_documented_headers_and_body(
    scripted: Script, fake_clock: FakeClock
) -> None:
    scripted.routes["DELETE /v1/users"] = [(202, {}, {"message": "2 users scheduled"})]
    accepted = sender_for(scripted, fake_clock, api_key=KEY).delete("users", ["a", "b"])
    (sent,) = scripted.seen
    assert (sent.method, sent.path) == ("DELETE", "/v1/users")
    assert json.loads(sent.body) == {"users": ["a", "b"]}
    assert sent.headers["Content-Type"] == "application/json"
    assert sent.headers["Authorization"] == f"Token {KEY}"
    assert sent.headers["X-API-Version"] == "2020-09-22"
    assert (accepted.scheduled, accepted.message) == (2, "2 users scheduled")


def test_dropped_connections_and_5xx_are_retried(scripted: Script, fake_clock: FakeClock) -> None:
    scripted.routes["DELETE /v1/companies"] = [
        "drop",
        (503, {}, "busy"),
        (202, {}, "1,500 companies scheduled"),
    ]
    client = client_for(scripted.url, fake_clock, api_key=KEY)
    accepted = client.deleter().delete("companies", ["c1"])
    assert accepted.scheduled == 1500
    assert len(scripted.seen) == 3
    assert client.stats.retries == 2


@pytest.mark.parametrize(
    "answer",
    [
        (200, {}, "<html><body>Down for maintenance</body></html>"),
        (200, {}, ""),
        (204, {}, ""),
    ],
    ids=["html-200", "empty-200", "204"],
)
def test_a_2xx_without_json_is_no_acceptance_and_is_retried(
    scripted: Script, fake_clock: FakeClock, answer: tuple[int, dict[str, str], str]
) -> None:
    scripted.routes["DELETE /v1/users"] = [answer, answer]
    scripted.default["DELETE /v1/users"] = (200, {}, {"message": "5 users scheduled"})
    client = client_for(scripted.url, fake_clock, api_key=KEY)
    accepted = client.deleter().delete("users", ["u1", "u2", "u3", "u4", "u5"])
    assert accepted.scheduled == 5
    assert len(scripted.seen) == 3
    assert client.stats.retries == 2


def test_a_server_that_never_accepts_stops_the_deletion(
    scripted: Script, fake_clock: FakeClock
) -> None:
    scripted.default["DELETE /v1/users"] = (200, {}, "<html>maintenance</html>")
    with pytest.raises(TransientError, match="no acceptance"):
        sender_for(scripted, fake_clock, api_key=KEY, max_time=60).delete("users", ["u1"])


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_never_followed(scripted: Script, fake_clock: FakeClock, status: int) -> None:
    scripted.routes["DELETE /v1/users"] = [(status, {"Location": "/v1/background_jobs/"}, {})]
    scripted.default["GET /v1/background_jobs/"] = (200, {}, [])
    with pytest.raises(UserpilotError, match=f"redirect \\(HTTP {status}\\).*nothing was deleted"):
        sender_for(scripted, fake_clock, api_key=KEY).delete("users", ["u1"])
    assert [s.method for s in scripted.seen] == ["DELETE"]


def test_a_body_echoing_the_key_is_scrubbed(scripted: Script, fake_clock: FakeClock) -> None:
    scripted.routes["DELETE /v1/users"] = [(422, {}, f"bad token {KEY} for ids")]
    with pytest.raises(DeletionRefusedError) as caught:
        sender_for(scripted, fake_clock, api_key=KEY).delete("users", ["u1"])
    assert KEY not in str(caught.value)
    assert "***" in str(caught.value)


def test_ids_are_logged_at_debug_only(
    emu: Emulator, fake_clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="target_userpilot")
    emu.set_faults(fail_rate=1.0, fault_kinds=("429",), retry_after_seconds=0)
    sender = sender_for(emu, fake_clock, max_time=10)
    with pytest.raises(TransientError) as caught:
        sender.delete("users", ["alice@example.com"])
    emu.set_faults(fail_rate=0.0)
    fake_clock.advance(10)
    sender.delete("users", ["bob@example.com"])
    ours = [r for r in caplog.records if r.name.startswith("target_userpilot")]
    above_debug = [r.getMessage() for r in ours if r.levelno > logging.DEBUG]
    assert any("accepted the deletion of 1 user;" in m for m in above_debug)
    assert not any("example.com" in m for m in above_debug)
    assert "example.com" not in str(caught.value)
    assert any("bob@example.com" in r.getMessage() for r in ours if r.levelno == logging.DEBUG)
