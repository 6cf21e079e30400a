"""The Track API on the wire: one `POST /v1/track` per event, paced, retried like uploads.

Userpilot allows 600 real-time requests a minute per token and answers 429 beyond (no
Retry-After is documented). The sender owns an interval pacer, so its own requests stay within
`track_requests_per_minute` smoothly (one every 60/n seconds, never a burst); a 429, a 5xx or a
connection error is retried through the same `Retrier` as uploads (Retry-After when given,
full-jitter backoff otherwise, until `request_retry_max_time`).

Only a `202`, or another 2xx with a JSON body, accepts the event (a proxy's 200 page does
not). A 400 (or 413/422) refuses this one event: `EventRefusedError` with Userpilot's words.
The API key never appears in a log line, an exception message or a repr.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from target_userpilot.wire.errors import KEY_HINT, AuthError, EventRefusedError, UserpilotError
from target_userpilot.wire.jobs_api import server_words
from target_userpilot.wire.retry import Failure, Pace, Retrier, RetryPolicy
from target_userpilot.wire.transport import Transport, clean_api_key
from target_userpilot.wire.urls import check_api_url

if TYPE_CHECKING:
    import logging
    from collections.abc import Callable

    import requests

API_VERSION = "2020-09-22"
# Statuses that refuse the event itself (its content), not the run's settings.
REFUSING_STATUSES = frozenset({400, 413, 422})


class IntervalPacer:
    """Requests on an even grid, one every `60 / per_minute` seconds.

    Requests behind the grid because answers were slow catch up at twice the pace (never two
    starts closer than half an interval), for at most `MAX_BEHIND` seconds of delay: slow
    answers do not lower the rate, and no 60-second window holds more than `per_minute` plus
    the requests of those few seconds. When the sender was idle (no event to send) for more
    than an interval, a new grid starts: a pause saves up no credit for a burst.
    """

    MAX_BEHIND = 5.0

    def __init__(
        self, per_minute: int, clock: Callable[[], float], sleep: Callable[[float], None]
    ) -> None:
        """Pace `per_minute` requests with this clock (seconds) and sleep."""
        self.interval = 60.0 / per_minute
        self._clock = clock
        self._sleep = sleep
        self._next: float | None = None  # the grid's next start
        self._last: float | None = None  # the previous start
        self._idle_since: float | None = None  # the previous answer, until the next start

    def wait(self) -> None:
        """Sleep until the next request may start, and count it as started."""
        now = self._clock()
        idle = self._idle_since is not None and now - self._idle_since > self.interval
        if self._next is None or idle:
            self._next = now
        self._next = max(self._next, now - self.MAX_BEHIND)
        start = (
            self._next if self._last is None else max(self._next, self._last + self.interval / 2)
        )
        if start > now:
            self._sleep(start - now)
        self._last = max(start, now)
        self._idle_since = None
        self._next += self.interval

    def done(self) -> None:
        """The request was answered (or failed): from now the sender may be idle."""
        self._idle_since = self._clock()


@dataclass
class TrackStats:
    """What the summary says of the Track API."""

    requests: int = 0
    retries: int = 0
    too_many: int = 0  # answers 429


class TrackSender:
    """Sends events one at a time; used by one thread (the event worker) only."""

    def __init__(  # noqa: PLR0913 - the settings of the wire, all keyword-only
        self,
        api_url: str,
        api_key: str,
        *,
        per_minute: int,
        retry: RetryPolicy,
        timeout: tuple[float, float] = (10.0, 60.0),
        user_agent: str = "target-userpilot",
        logger: logging.Logger,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        """`sleep` and `clock` pace and back off (a test passes a fake clock's)."""
        self.api_url = check_api_url(api_url)
        self._url = f"{self.api_url}/v1/track"
        self.stats = TrackStats()
        self._retry = retry
        self._pace = Pace(sleep=sleep, clock=clock, log=logger)
        self._pacer = IntervalPacer(per_minute, clock, sleep)
        self._transport = Transport(
            clean_api_key(api_key),
            api_url=self.api_url,
            timeout=timeout,
            user_agent=user_agent,
            wall_clock=wall_clock,
        )

    def __repr__(self) -> str:
        """Without the key."""
        return f"TrackSender(api_url={self.api_url!r})"

    def close(self) -> None:
        """Release the HTTP connections."""
        self._transport.close()

    def send(self, body: bytes, what: str = "An event") -> None:
        """Send one event's JSON body until Userpilot accepts it.

        Raises:
            EventRefusedError: Userpilot refused this event (400, 413, 422).
            AuthError: the key was refused (401/403).
            TransientError: 429, 5xx or connection errors outlasted `request_retry_max_time`.
            UserpilotError: any other answer (a wrong `api_url`).
        """

        def count_retry() -> None:
            self.stats.retries += 1

        retrier = Retrier(self._retry, self._pace, what, where=self.api_url, on_retry=count_retry)
        while True:
            self._pacer.wait()
            self.stats.requests += 1
            answer = self._transport.exchange(
                "POST", self._url, json_body=(body, {"X-API-Version": API_VERSION})
            )
            self._pacer.done()
            if isinstance(answer, Failure):
                self.stats.too_many += answer.reason == "HTTP 429"
                retrier.wait(answer)
                continue
            self._judge(answer)
            return

    def _judge(self, answer: requests.Response) -> None:
        """Return when `answer` accepts the event; raise what it means otherwise."""
        code = answer.status_code
        if code == 202 or (  # noqa: PLR2004
            200 <= code < 300 and self._transport.json(answer) is not None  # noqa: PLR2004
        ):
            return
        body = self._transport.body(answer)
        if code in {401, 403}:
            msg = (
                f"Userpilot rejected the API key (HTTP {code}) for an event at {self._url}: "
                f"check the `api_key` setting ({KEY_HINT})"
            )
            raise AuthError(msg)
        if code in REFUSING_STATUSES:
            raise EventRefusedError(code, server_words(self._transport.json(answer)) or body)
        msg = (
            f"`api_url` {self.api_url} does not answer like Userpilot's Track API: POST "
            f"{self._url} answered HTTP {code}: {body}"
        )
        raise UserpilotError(msg)
