"""The Track API: the sender's pace and answers, and the emulator's endpoint, on a fake clock."""

from __future__ import annotations

import bisect
import itertools
import json
import logging
from typing import TYPE_CHECKING, Any

import pytest
import requests
from emulated import EMULATOR_TOKEN, emulator_config

from target_userpilot.emulator import serve
from target_userpilot.wire import AuthError, RetryPolicy, TransientError, UserpilotError
from target_userpilot.wire.errors import EventRefusedError
from target_userpilot.wire.track import IntervalPacer, TrackSender

if TYPE_CHECKING:
    from collections.abc import Iterator

    from fake_clock import FakeClock

    from target_userpilot.emulator import Emulator

LOG = logging.getLogger("test")


def event(user_id: str = "u1", name: str = "invoice_paid", **metadata: Any) -> bytes:
    return json.dumps({"user_id": user_id, "event_name": name, "metadata": metadata}).encode()


def sender(
    emu: Emulator, clock: FakeClock, per_minute: int = 540, key: str = EMULATOR_TOKEN
) -> TrackSender:
    return TrackSender(
        emu.url,
        key,
        per_minute=per_minute,
        retry=RetryPolicy(max_time=120),
        logger=LOG,
        clock=clock,
        sleep=clock.sleep,
        wall_clock=clock,
    )


@pytest.fixture
def track_emulator(fake_clock: FakeClock) -> Iterator[Emulator]:
    config = emulator_config(
        rows_per_minute=float("inf"), validating_seconds=0.0, pending_refresh_seconds=0.0
    )
    with serve(config, port=0, clock=fake_clock) as emu:
        yield emu


def test_the_pacer_spaces_requests_evenly_and_allows_no_burst_after_a_pause(
    fake_clock: FakeClock,
) -> None:
    pacer = IntervalPacer(600, fake_clock, fake_clock.sleep)
    starts = []
    for _ in range(5):
        pacer.wait()
        starts.append(fake_clock())
        pacer.done()
    assert [round(b - a, 6) for a, b in itertools.pairwise(starts)] == [0.1] * 4
    fake_clock.advance(10)  # input was slow: no credit is saved up
    pacer.wait()
    pacer.done()
    pacer.wait()
    assert fake_clock.sleeps[-1] == pytest.approx(0.1)


def test_a_slow_answer_does_not_lower_the_rate(fake_clock: FakeClock) -> None:
    pacer = IntervalPacer(600, fake_clock, fake_clock.sleep)
    started = fake_clock()
    starts = []
    for number in range(100):
        pacer.wait()
        starts.append(fake_clock())
        fake_clock.advance(0.35 if number % 10 == 0 else 0.02)  # every tenth answer is slow
        pacer.done()
    assert fake_clock() - started == pytest.approx(10.0, abs=0.2)  # 100 in 10 s: 600 a minute
    assert min(b - a for a, b in itertools.pairwise(starts)) >= 0.05 - 1e-6  # never a burst


def test_catching_up_is_bounded_so_a_minute_never_passes_the_limit(
    fake_clock: FakeClock,
) -> None:
    pacer = IntervalPacer(540, fake_clock, fake_clock.sleep)
    starts = []
    for number in range(2000):
        pacer.wait()
        starts.append(fake_clock())
        fake_clock.advance(30.0 if number == 100 else 0.01)  # one answer takes 30 s
        pacer.done()
    most = max(bisect.bisect_left(starts, begin + 60) - i for i, begin in enumerate(starts))
    assert most <= 600


def test_events_are_accepted_within_the_limit_and_shown_with_their_users(
    track_emulator: Emulator, fake_clock: FakeClock
) -> None:
    requests.post(
        f"{track_emulator.url}/v1/users/bulk_identify",
        json={"users": [{"user_id": "known", "metadata": {}}]},
        headers={"Authorization": f"Token {EMULATOR_TOKEN}"},
        timeout=10,
    ).raise_for_status()
    track = sender(track_emulator, fake_clock)  # the default, 540 a minute
    started = fake_clock()
    for number in range(700):
        track.send(event("known" if number else "stranger", seats=number))
    view = track_emulator.events
    assert view["count"] == 700
    assert view["answered_429"] == 0
    assert track.stats.too_many == 0
    assert fake_clock() - started == pytest.approx(699 / 9)  # 540 a minute, evenly
    assert view["before_their_user"] == 1
    assert view["events"][0]["user_existed"] is False
    assert view["events"][1] == {
        "user_id": "known",
        "event_name": "invoice_paid",
        "metadata": {"seats": 1},
        "received_at": view["events"][1]["received_at"],
        "user_existed": True,
    }


def test_a_429_is_retried_with_backoff_until_the_window_has_room(
    fake_clock: FakeClock,
) -> None:
    config = emulator_config(
        rows_per_minute=float("inf"), track_per_minute=30, validating_seconds=0.0
    )
    with serve(config, port=0, clock=fake_clock) as emu:
        track = sender(emu, fake_clock, per_minute=600)
        for number in range(40):
            track.send(event(seats=number))
        assert emu.events["count"] == 40
        assert emu.events["answered_429"] == track.stats.too_many > 0
        assert track.stats.retries == track.stats.too_many


def test_a_refused_event_raises_with_userpilots_words(
    fake_clock: FakeClock,
) -> None:
    with serve(emulator_config(reject_ids=frozenset({"bad"})), port=0, clock=fake_clock) as emu:
        track = sender(emu, fake_clock)
        with pytest.raises(EventRefusedError, match="'bad' is refused"):
            track.send(event("bad"))
        with pytest.raises(EventRefusedError, match="event_name must be a non-empty string"):
            track.send(event(name=""))
        assert emu.events["count"] == 0


def test_a_wrong_key_fails_at_once_without_showing_it(
    track_emulator: Emulator, fake_clock: FakeClock
) -> None:
    track = sender(track_emulator, fake_clock, key="wrong-secret")
    with pytest.raises(AuthError) as raised:
        track.send(event())
    assert "wrong-secret" not in str(raised.value)
    assert "wrong-secret" not in repr(track)


def test_faults_are_retried_until_the_retry_time_runs_out(
    fake_clock: FakeClock,
) -> None:
    config = emulator_config(fail_rate=1.0, fault_kinds=("503",))
    with serve(config, port=0, clock=fake_clock) as emu:
        track = sender(emu, fake_clock)
        with pytest.raises(TransientError, match="request_retry_max_time"):
            track.send(event())
        assert track.stats.retries > 1


def test_the_endpoint_requires_the_api_version_header(track_emulator: Emulator) -> None:
    answer = requests.post(
        f"{track_emulator.url}/v1/track",
        data=event(),
        headers={"Authorization": f"Token {EMULATOR_TOKEN}"},
        timeout=10,
    )
    assert answer.status_code == 400  # no X-API-Version
    assert "X-API-Version" in answer.text


@pytest.mark.parametrize(
    "canned", [(202, b"", True), (200, b"{}", True), (200, b"<html>portal</html>", False)]
)
def test_only_a_202_or_a_2xx_with_json_accepts(
    track_emulator: Emulator,
    fake_clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    canned: tuple[int, bytes, bool],
) -> None:
    status, body, accepted = canned
    answer = requests.Response()
    answer.status_code, answer._content = status, body
    track = sender(track_emulator, fake_clock)
    monkeypatch.setattr(track._transport, "exchange", lambda *_, **__: answer)
    if accepted:
        track.send(event())
    else:
        with pytest.raises(UserpilotError, match="does not answer like Userpilot's Track API"):
            track.send(event())
