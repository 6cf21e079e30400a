"""Retry policy: which failures are retried, how long to wait, and when to give up.

A hand-rolled loop around backoff's `expo` and `full_jitter` generators rather than
`backoff.on_exception`: a 429's Retry-After must replace the computed wait, and a submit
interleaves job-list look-ups (lost submissions) between attempts.
"""

from __future__ import annotations

import dataclasses
import email.utils
from dataclasses import dataclass
from datetime import timezone
from typing import TYPE_CHECKING, NoReturn

import backoff

from target_userpilot.wire.errors import TransientError

if TYPE_CHECKING:
    import logging
    from collections.abc import Callable, Iterator


@dataclass(frozen=True)
class RetryPolicy:
    """How long and how fast transient failures of one call are retried."""

    max_time: float = 600.0
    base: float = 0.5
    cap: float = 30.0


@dataclass(frozen=True)
class Failure:
    """A failed exchange worth retrying.

    `maybe_sent`: the server may have acted on the request. `answer_lost`: the request went out
    but no answer came back (a read timeout, a dropped connection), as opposed to an answer
    saying the server failed.
    """

    reason: str  # "HTTP 503", "ReadTimeout", ...
    maybe_sent: bool
    retry_after: float | None = None
    answer_lost: bool = False


def expo(first: float, cap: float) -> Iterator[float]:
    """first, 2 * first, 4 * first, ... capped at `cap` (backoff's generator, primed)."""
    delays: Iterator[float] = backoff.expo(base=2, factor=first, max_value=cap)
    next(delays)  # backoff's generators yield a throw-away 0 first, for its own .send()
    return delays


def retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta seconds or HTTP-date); None if absent."""
    if not value:
        return None
    text = value.strip()
    try:
        return max(float(text), 0.0)
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return max(moment.timestamp() - now, 0.0)


@dataclass(frozen=True)
class Pace:
    """The clock, sleep and log a retry loop uses (injected so tests need not wait)."""

    sleep: Callable[[float], None]
    clock: Callable[[], float]
    log: logging.Logger


class Retrier:
    """The retry budget of one logical call: full-jitter exponential waits until `max_time`.

    A missing Retry-After (the real-time API documents none) falls back to the computed wait.
    """

    def __init__(
        self,
        policy: RetryPolicy,
        pace: Pace,
        what: str,
        *,
        where: str,
        on_retry: Callable[[], None] = lambda: None,
    ) -> None:
        """`what` names the call in log lines; `where` is the `api_url` named when giving up."""
        self.policy = policy
        self.what = what
        self._pace = pace
        self._where = where
        self._on_retry = on_retry
        self.started = pace.clock()
        self.failures = 0
        self._delays = expo(policy.base, policy.cap)

    def wait(self, failure: Failure, step: str = "") -> None:
        """Sleep before the next attempt, or raise TransientError if the time is up."""
        self.failures += 1
        if step:
            failure = dataclasses.replace(failure, reason=f"{step}: {failure.reason}")
        elapsed = self._pace.clock() - self.started
        remaining = self.policy.max_time - elapsed
        if remaining <= 0:
            self._give_up(failure, elapsed, "")
        if failure.retry_after is None:
            delay = min(backoff.full_jitter(next(self._delays)), remaining)
        else:
            delay = failure.retry_after
            if delay > remaining:
                self._give_up(failure, elapsed, f"; the server asked to wait {delay:.0f} s more")
        self._on_retry()
        self._pace.log.warning(
            "%s failed (attempt %d: %s); retrying in %.1f s.",
            self.what,
            self.failures,
            failure.reason,
            delay,
        )
        self._pace.sleep(delay)

    def _give_up(self, failure: Failure, elapsed: float, extra: str) -> NoReturn:
        msg = (
            f"{self.what} failed {self.failures} time(s) over {elapsed:.0f} s "
            f"(last: {failure.reason}{extra}); gave up after the retry limit of "
            f"{self.policy.max_time:g} s (setting `request_retry_max_time`). "
            f"Check `api_url` ({self._where}) and the network."
        )
        raise TransientError(msg)
