"""The Deletion API on the wire: `DELETE /v1/users` and `/v1/companies`, paced and retried.

Userpilot allows one delete request every 2 seconds per account and answers 429 beyond; a
success is `202 Accepted` with a message saying how many were scheduled (they are deleted at
its daily run, 02:00 UTC). The sender owns a pacer, so its own requests never break that
limit; a 429 (someone else's deletes), a 5xx or a connection error is retried with
exponential backoff for at most `max_time` seconds. Resending is safe: deleting an id twice
only schedules it twice.

Ids are logged at DEBUG only (they may be personal data); the API key never appears in a log
line, an exception message or a repr.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
from typing import TYPE_CHECKING

import requests

from target_userpilot.deletions import count_of

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from target_userpilot.deletions import Kind


API_VERSION = "2020-09-22"
DELETE_INTERVAL = 2.0
"""Userpilot's limit: one delete request every 2 seconds."""
PACE_MARGIN = 0.1
"""Added to the interval, for the granularity of the server's clock."""
BACKOFF_FIRST = 4.0
"""First wait after a 429 (or 5xx): twice the interval, as other deletes are under way."""
BACKOFF_CAP = 60.0
MAX_ATTEMPTS = 20
BODY_LIMIT = 500  # characters of a server answer quoted in an error message

logger = logging.getLogger(__name__)


class DeleteError(Exception):
    """A deletion request failed; the message says what to fix and never holds the key."""


class DeleteAuthError(DeleteError):
    """Userpilot refused the API key (401/403). Never retried."""


class DeleteRejectedError(DeleteError):
    """Userpilot refused the request with another 4xx. Never retried."""

    def __init__(self, message: str, *, status: int) -> None:
        """`status` is the HTTP status."""
        super().__init__(message)
        self.status = status


class DeleteGaveUpError(DeleteError):
    """429, 5xx or connection errors went on for longer than the retry time (or attempts)."""


@dataclasses.dataclass(frozen=True)
class Accepted:
    """A delete request Userpilot accepted: how many ids were sent, how many it scheduled."""

    kind: Kind
    sent: int
    scheduled: int | None  # read from its message; None when the message has no number
    message: str


class Pacer:
    """At most one request per `interval` seconds.

    Measured from the moment the previous answer arrived: the server saw that request no
    later, so the gap it sees is at least `interval` whatever the network delay.
    """

    def __init__(
        self, interval: float, clock: Callable[[], float], sleep: Callable[[float], None]
    ) -> None:
        """Pace with this clock (seconds) and sleep."""
        self._interval = interval
        self._clock = clock
        self._sleep = sleep
        self._last: float | None = None

    def wait(self) -> None:
        """Sleep until the next request may go."""
        if self._last is not None:
            pause = self._last + self._interval - self._clock()
            if pause > 0:
                self._sleep(pause)

    def done(self) -> None:
        """An answer (or a failure) just arrived."""
        self._last = self._clock()


class DeleteSender:
    """Sends delete requests for both kinds through one pacer; one caller thread at a time."""

    def __init__(  # noqa: PLR0913 - every knob is a setting or a test seam
        self,
        api_url: str,
        api_key: str,
        *,
        timeout: float = 60.0,
        max_time: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        log: logging.Logger | None = None,
    ) -> None:
        """Talk to `api_url` (already validated: HTTPS, or HTTP on loopback) with `api_key`."""
        self.api_url = api_url.rstrip("/")
        self._key = api_key
        self._timeout = timeout
        self._max_time = max_time
        self._clock = clock
        self._sleep = sleep
        self._log = log or logger
        self._pacer = Pacer(DELETE_INTERVAL + PACE_MARGIN, clock, sleep)
        self._session = requests.Session()
        self._session.headers.update(
            {
                "Authorization": f"Token {api_key}",
                "Content-Type": "application/json",
                "Accept": "application/json, text/plain, */*",
                "X-API-Version": API_VERSION,
            }
        )

    def __repr__(self) -> str:
        """Without the key."""
        return f"DeleteSender(api_url={self.api_url!r})"

    def close(self) -> None:
        """Release the HTTP connections."""
        self._session.close()

    def delete(self, kind: Kind, ids: Sequence[str]) -> Accepted:
        """Ask Userpilot to delete these profiles (one request's worth, see `chunk_ids`).

        Raises:
            DeleteAuthError: the key was refused.
            DeleteRejectedError: the request was refused (a 4xx other than 401/403/429).
            DeleteGaveUpError: 429, 5xx or connection errors outlasted `max_time`.
        """
        url = f"{self.api_url}/v1/{kind}"
        body = json.dumps({kind: list(ids)})
        what = f"Deletion of {count_of(kind, len(ids))}"
        self._log.debug("%s: %s", what, ", ".join(ids))
        started = self._clock()
        backoff = BACKOFF_FIRST
        attempt = 0
        while True:
            attempt += 1
            self._pacer.wait()
            try:
                response = self._session.request("DELETE", url, data=body, timeout=self._timeout)
            except requests.RequestException as e:
                problem, wait = f"failed ({type(e).__name__}: {self._scrub(str(e))})", 0.0
            else:
                if 200 <= response.status_code < 300:  # noqa: PLR2004
                    return self._accepted(kind, len(ids), response)
                self._raise_unless_retryable(what, url, response)
                problem = f"answered HTTP {response.status_code}"
                wait = _retry_after(response.headers.get("Retry-After"))
            finally:
                self._pacer.done()
            pause = max(backoff, wait)
            spent = self._clock() - started
            if spent + pause > self._max_time or attempt >= MAX_ATTEMPTS:
                msg = (
                    f"{what} {problem} {attempt} times in {spent:.0f} s; giving up "
                    "(`request_retry_max_time`); these deletions are not confirmed."
                )
                raise DeleteGaveUpError(msg)
            self._log.info("%s %s; retrying in %.1f s.", what, problem, pause)
            self._sleep(pause)
            backoff = min(backoff * 2, BACKOFF_CAP)

    def _raise_unless_retryable(self, what: str, url: str, response: requests.Response) -> None:
        status = response.status_code
        if status == 429 or status >= 500:  # noqa: PLR2004
            return
        text = self._scrub(response.text[:BODY_LIMIT])
        if status in {401, 403}:
            msg = (
                f"Userpilot refused the API key (HTTP {status}) for a deletion at {url}: check "
                "`api_key` (and that it may delete users and companies)."
            )
            raise DeleteAuthError(msg)
        msg = f"{what} was refused by {url}: HTTP {status}: {text}"
        raise DeleteRejectedError(msg, status=status)

    def _accepted(self, kind: Kind, sent: int, response: requests.Response) -> Accepted:
        try:
            payload = response.json()
        except ValueError:
            payload = response.text
        message = payload.get("message") if isinstance(payload, dict) else payload
        message = self._scrub(str(message or ""))[:BODY_LIMIT]
        found = re.search(r"\d[\d,]*", message)
        scheduled = int(found.group().replace(",", "")) if found else None
        self._log.info(
            "Userpilot accepted the deletion of %s; it applies it at its daily run (02:00 UTC).",
            count_of(kind, scheduled if scheduled is not None else sent),
        )
        return Accepted(kind=kind, sent=sent, scheduled=scheduled, message=message)

    def _scrub(self, text: str) -> str:
        return text.replace(self._key, "<api_key>") if self._key else text


def _retry_after(value: str | None) -> float:
    """Seconds from a `Retry-After: <seconds>` header; 0 when absent or in another form."""
    try:
        return max(float((value or "").strip()), 0.0)
    except ValueError:
        return 0.0
