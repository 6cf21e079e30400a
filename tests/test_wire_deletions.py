"""The Deletion API sender: headers, 202, pacing, 429 backoff, errors without the key or ids."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import requests
from fake_clock import FakeClock

from target_userpilot.deletions import DELETE_CHUNK_IDS, DeleteLimit, DeletionLedger
from target_userpilot.emulator import Emulator
from target_userpilot.wire.deletions import (
    BACKOFF_CAP,
    DeleteAuthError,
    DeleteGaveUpError,
    DeleteRejectedError,
    DeleteSender,
)

TOKEN = "test-token"  # noqa: S105 - the emulator's (conftest)


@pytest.fixture
def emu(clocked_emulator: Emulator) -> Emulator:
    return clocked_emulator


def sender_for(emu: Emulator, fake_clock: FakeClock, **kwargs: Any) -> DeleteSender:
    kwargs.setdefault("api_key", TOKEN)
    return DeleteSender(emu.url, clock=fake_clock, sleep=fake_clock.sleep, **kwargs)


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


def test_a_429_from_someone_elses_delete_is_waited_out(
    emu: Emulator, fake_clock: FakeClock
) -> None:
    other = requests.delete(
        f"{emu.url}/v1/companies",
        json={"companies": ["c9"]},
        headers={"Authorization": f"Token {TOKEN}", "X-API-Version": "2020-09-22"},
        timeout=10,
    )
    assert other.status_code == 202
    accepted = sender_for(emu, fake_clock).delete("users", ["u1"])
    assert accepted.scheduled == 1
    assert statuses(emu) == [202, 429, 202]
    assert [(p.kind, p.id) for p in emu.deletions.pending] == [
        ("companies", "c9"),
        ("users", "u1"),
    ]


def test_429s_back_off_exponentially_within_the_retry_time(
    emu: Emulator, fake_clock: FakeClock
) -> None:
    emu.set_faults(fail_rate=1.0, fault_kinds=("429",), retry_after_seconds=0)
    sender = sender_for(emu, fake_clock, max_time=300)
    started = fake_clock()
    with pytest.raises(DeleteGaveUpError) as caught:
        sender.delete("users", ["u1"])
    assert fake_clock.sleeps == [4.0, 8.0, 16.0, 32.0] + [BACKOFF_CAP] * 4  # 300 s in all
    assert fake_clock() - started <= 300
    assert "HTTP 429" in str(caught.value)
    assert "request_retry_max_time" in str(caught.value)
    assert TOKEN not in str(caught.value)
    assert emu.deletions.pending == []


def test_a_longer_retry_after_is_honoured(emu: Emulator, fake_clock: FakeClock) -> None:
    emu.set_faults(fail_rate=1.0, fault_kinds=("429",), retry_after_seconds=45)
    with pytest.raises(DeleteGaveUpError):
        sender_for(emu, fake_clock, max_time=100).delete("users", ["u1"])
    assert fake_clock.sleeps == [45.0, 45.0]


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
    with pytest.raises(DeleteAuthError) as caught:
        sender.delete("users", ["u1"])
    assert "HTTP 401" in str(caught.value)
    assert "api_key" in str(caught.value)
    assert "wrong-key-456" not in str(caught.value)
    assert "wrong-key-456" not in repr(sender)
    assert statuses(emu) == [401]


def test_a_refused_request_is_not_retried(emu: Emulator, fake_clock: FakeClock) -> None:
    with pytest.raises(DeleteRejectedError) as caught:
        sender_for(emu, fake_clock).delete("users", [""])
    assert caught.value.status == 400
    assert "non-empty string" in str(caught.value)
    assert statuses(emu) == [400]


class _Scripted(requests.Session):
    """Answers from a script: an exception to raise, or (status, body) to answer."""

    def __init__(self, script: list[Exception | tuple[int, str]]) -> None:
        super().__init__()
        self.script = script
        self.sent: list[dict[str, Any]] = []

    def request(self, method: str | bytes, url: str | bytes, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        self.sent.append({"method": method, "url": url, "headers": dict(self.headers), **kwargs})
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        response = requests.Response()
        response.status_code, response._content = step[0], step[1].encode()
        return response


def scripted(
    fake_clock: FakeClock, script: list[Exception | tuple[int, str]]
) -> tuple[DeleteSender, _Scripted]:
    sender = DeleteSender(
        "https://analytex.userpilot.io/", TOKEN, clock=fake_clock, sleep=fake_clock.sleep
    )
    session = _Scripted(script)
    session.headers.update(sender._session.headers)
    sender._session = session
    return sender, session


def test_the_request_carries_the_documented_headers_and_body(fake_clock: FakeClock) -> None:
    sender, session = scripted(fake_clock, [(202, '{"message": "2 users scheduled"}')])
    accepted = sender.delete("users", ["a", "b"])
    (sent,) = session.sent
    assert (sent["method"], sent["url"]) == ("DELETE", "https://analytex.userpilot.io/v1/users")
    assert sent["data"] == '{"users": ["a", "b"]}'
    assert sent["headers"]["Content-Type"] == "application/json"
    assert sent["headers"]["Authorization"] == f"Token {TOKEN}"
    assert sent["headers"]["X-API-Version"] == "2020-09-22"
    assert (accepted.scheduled, accepted.message) == (2, "2 users scheduled")


def test_connection_errors_and_5xx_are_retried(fake_clock: FakeClock) -> None:
    sender, session = scripted(
        fake_clock,
        [requests.ConnectionError("reset"), (503, "busy"), (202, "1,500 companies scheduled")],
    )
    accepted = sender.delete("companies", ["c1"])
    assert accepted.scheduled == 1500
    assert len(session.sent) == 3
    assert fake_clock.sleeps == [4.0, 8.0]


def test_a_body_echoing_the_key_is_scrubbed(fake_clock: FakeClock) -> None:
    sender, _ = scripted(fake_clock, [(422, f"bad token {TOKEN} for ids")])
    with pytest.raises(DeleteRejectedError) as caught:
        sender.delete("users", ["u1"])
    assert TOKEN not in str(caught.value)
    assert "<api_key>" in str(caught.value)


def test_ids_are_logged_at_debug_only(
    emu: Emulator, fake_clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="target_userpilot")
    emu.set_faults(fail_rate=1.0, fault_kinds=("429",), retry_after_seconds=0)
    sender = sender_for(emu, fake_clock, max_time=10)
    with pytest.raises(DeleteGaveUpError) as caught:
        sender.delete("users", ["alice@example.com"])
    emu.set_faults(fail_rate=0.0)
    fake_clock.advance(10)
    sender.delete("users", ["bob@example.com"])
    ours = [r for r in caplog.records if r.name.startswith("target_userpilot.wire.deletions")]
    above_debug = [r.getMessage() for r in ours if r.levelno > logging.DEBUG]
    assert any("accepted the deletion of 1 user;" in m for m in above_debug)
    assert not any("example.com" in m for m in above_debug)
    assert "example.com" not in str(caught.value)
    assert any("bob@example.com" in r.getMessage() for r in ours if r.levelno == logging.DEBUG)
