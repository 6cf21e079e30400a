"""The Deletion API on the wire: `DELETE /v1/users` and `/v1/companies`, paced and retried.

Deletions go through the bulk client's `Transport` and retry policy (`UserpilotClient.deleter`):
one session and key scrubbing, the same `Retry-After` reading (seconds or an HTTP date), no
redirect followed for a write, and the same request and retry counters in the summary.

Userpilot allows one delete request every 2 seconds per account and answers 429 beyond; a
success is `202 Accepted` with a message saying how many were scheduled (they are deleted at
its daily run, 02:00 UTC). The sender owns a pacer, so its own requests never break that
limit. Only an answer Userpilot documents is an acceptance: a 202, or another 2xx with a JSON
body. A 2xx without one (a maintenance page, an empty answer) scheduled nothing we can trust
and is retried like a 429, a 5xx or a dropped connection; a redirect or another 4xx stops the
run. Resending is safe: deleting an id twice only schedules it twice.

Ids are logged at DEBUG only (they may be personal data); the API key never appears in a log
line, an exception message or a repr.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import TYPE_CHECKING

from target_userpilot.kinds import count_of
from target_userpilot.wire.errors import AuthError, DeletionRefusedError, UserpilotError
from target_userpilot.wire.retry import Failure, Pace, Retrier, RetryPolicy

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    import requests

    from target_userpilot.kinds import Kind
    from target_userpilot.wire.transport import Transport


API_VERSION = "2020-09-22"
DELETE_INTERVAL = 2.0
"""Userpilot's limit: one delete request every 2 seconds."""
PACE_MARGIN = 0.1
"""Added to the interval, for the granularity of the server's clock."""
BACKOFF_FIRST = 4.0
"""First backoff step after a 429 (or 5xx): twice the interval, as other deletes are under way."""
BACKOFF_CAP = 60.0
MESSAGE_LIMIT = 500  # characters of Userpilot's acceptance message kept


def deletion_policy(policy: RetryPolicy) -> RetryPolicy:
    """The bulk client's retry time, with the Deletion API's slower backoff steps."""
    return dataclasses.replace(policy, base=BACKOFF_FIRST, cap=BACKOFF_CAP)


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

    def __init__(self, interval: float, pace: Pace) -> None:
        """Pace with this clock (seconds) and sleep."""
        self._interval = interval
        self._pace = pace
        self._last: float | None = None

    def wait(self) -> None:
        """Sleep until the next request may go."""
        if self._last is not None:
            pause = self._last + self._interval - self._pace.clock()
            if pause > 0:
                self._pace.sleep(pause)

    def done(self) -> None:
        """An answer (or a failure) just arrived."""
        self._last = self._pace.clock()


class DeleteSender:
    """Sends delete requests for both kinds through one pacer; one caller thread at a time."""

    def __init__(
        self,
        transport: Transport,
        *,
        pace: Pace,
        retrier: Callable[[str], Retrier],
    ) -> None:
        """Talk through `transport`; `retrier(what)` gives one request's retry budget."""
        self.api_url = transport.api_url.rstrip("/")
        self._transport = transport
        self._pace = pace
        self._retrier = retrier
        self._pacer = Pacer(DELETE_INTERVAL + PACE_MARGIN, pace)

    def __repr__(self) -> str:
        """Without the key."""
        return f"DeleteSender(api_url={self.api_url!r})"

    def delete(self, kind: Kind, ids: Sequence[str]) -> Accepted:
        """Ask Userpilot to delete these profiles (one request's worth, see `chunk_ids`).

        Raises:
            AuthError: the key was refused.
            DeletionRefusedError: the request was refused (a 4xx other than 401/403/429).
            UserpilotError: the answer was a redirect (never followed for a deletion).
            TransientError: 429s, 5xx, 2xx answers that are no acceptance or connection
                errors outlasted `request_retry_max_time`; nothing of this request is confirmed.
        """
        url = f"{self.api_url}/v1/{kind}"
        body = (json.dumps({kind: list(ids)}).encode(), {"X-API-Version": API_VERSION})
        what = f"Deletion of {count_of(kind, len(ids))}"
        self._pace.log.debug("%s: %s", what, ", ".join(ids))
        retrier = self._retrier(what)
        while True:
            self._pacer.wait()
            try:
                answer = self._transport.exchange("DELETE", url, json_body=body)
            finally:
                self._pacer.done()
            if not isinstance(answer, Failure):
                accepted = self._read(kind, len(ids), what, url, answer)
                if isinstance(accepted, Accepted):
                    return accepted
                answer = accepted
            retrier.wait(answer)

    def _read(
        self, kind: Kind, sent: int, what: str, url: str, answer: requests.Response
    ) -> Accepted | Failure:
        """The acceptance in a non-transient answer, a Failure to retry, or the error raised."""
        code = answer.status_code
        payload = self._transport.json(answer)
        if code == 202 or (200 <= code < 300 and payload is not None):  # noqa: PLR2004
            return self._accepted(kind, sent, answer, payload)
        text = self._transport.body(answer)
        if 200 <= code < 300:  # noqa: PLR2004
            # A maintenance page or an empty answer: nothing says the deletion was scheduled.
            return Failure(f"HTTP {code} that is no acceptance ({text[:80]!r})", maybe_sent=True)
        if code in {401, 403}:
            msg = (
                f"Userpilot refused the API key (HTTP {code}) for a deletion at {url}: check "
                "`api_key` (and that it may delete users and companies)."
            )
            raise AuthError(msg)
        if 300 <= code < 400:  # noqa: PLR2004
            msg = (
                f"{what} was answered with a redirect (HTTP {code}) by {url}; a deletion is "
                "never sent on to another address, so nothing was deleted. Check `api_url`: "
                "it must be your environment's API host itself."
            )
            raise UserpilotError(msg)
        msg = f"{what} was refused by {url}: HTTP {code}: {text}"
        raise DeletionRefusedError(msg, status=code)

    def _accepted(
        self, kind: Kind, sent: int, answer: requests.Response, payload: object
    ) -> Accepted:
        said = payload.get("message") if isinstance(payload, dict) else payload
        if said is None:
            said = self._transport.body(answer)
        message = self._transport.scrub(str(said))[:MESSAGE_LIMIT]
        found = re.search(r"\d[\d,]*", message)
        scheduled = int(found.group().replace(",", "")) if found else None
        self._pace.log.info(
            "Userpilot accepted the deletion of %s; it applies it at its daily run (02:00 UTC).",
            count_of(kind, scheduled if scheduled is not None else sent),
        )
        return Accepted(kind=kind, sent=sent, scheduled=scheduled, message=message)
