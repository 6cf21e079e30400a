"""The retry policy: full-jitter exponential waits, Retry-After, a bounded budget."""

from __future__ import annotations

import itertools
import logging
import time
from email.utils import formatdate

import pytest
from wire_script import FakeClock

from target_userpilot.wire.errors import TransientError
from target_userpilot.wire.retry import Failure, Pace, Retrier, RetryPolicy, retry_after


def testretry_after_seconds_and_http_date() -> None:
    now = time.time()
    assert retry_after("3", now) == 3
    assert retry_after("0.5", now) == 0.5
    assert retry_after(formatdate(now + 10, usegmt=True), now) == pytest.approx(10, abs=1)
    assert retry_after(formatdate(now - 10, usegmt=True), now) == 0
    assert retry_after("soon", now) is None
    assert retry_after(None, now) is None


def retrier(clock: FakeClock, policy: RetryPolicy) -> Retrier:
    pace = Pace(sleep=clock.sleep, clock=clock, log=logging.getLogger("test"))
    return Retrier(policy, pace, "Listing jobs", where="https://h.io")


def test_backoff_is_full_jitter_exponential_capped_and_bounded() -> None:
    clock = FakeClock()
    budget = retrier(clock, RetryPolicy(max_time=60, base=0.5, cap=4))

    def fail_until_given_up() -> None:
        while True:
            budget.wait(Failure("HTTP 503", maybe_sent=True))

    with pytest.raises(TransientError, match=r"failed \d+ time\(s\) over 60 s") as err:
        fail_until_given_up()
    waits = [b - a for a, b in itertools.pairwise([0.0, *clock.history])]
    assert len(waits) > 10
    assert all(0 <= w <= min(0.5 * 2**i, 4) for i, w in enumerate(waits))
    assert clock.now == pytest.approx(60)
    assert "`request_retry_max_time`" in str(err.value)
    assert "https://h.io" in str(err.value)


def test_retry_after_replaces_the_wait_and_a_missing_one_backs_off() -> None:
    clock = FakeClock()
    budget = retrier(clock, RetryPolicy(max_time=60, base=0.5, cap=4))
    budget.wait(Failure("HTTP 429", maybe_sent=False, retry_after=7.0))
    budget.wait(Failure("HTTP 429", maybe_sent=False))  # no Retry-After: our own backoff
    assert clock.history[0] == 7.0
    assert 0 <= clock.history[1] - 7.0 <= 1.0


def test_retry_after_beyond_the_budget_gives_up_at_once() -> None:
    clock = FakeClock()
    budget = retrier(clock, RetryPolicy(max_time=60))
    with pytest.raises(TransientError, match="3600 s"):
        budget.wait(Failure("HTTP 429", maybe_sent=False, retry_after=3600))
    assert clock.history == []
