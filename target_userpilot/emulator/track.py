"""The emulated Track API: `POST /v1/track`, its per-token rate limit, and the events received.

`{"user_id", "event_name", "metadata"?}` with `X-API-Version: 2020-09-22` answers 202 and is
recorded with its arrival time (the API has no timestamp field). Userpilot allows 600 requests
a minute per token: a sliding 60-second window of the requests it answered per token; one past
the limit answers 429 (without Retry-After, as documented) and records nothing.

Userpilot drops an event whose user it does not know, silently; here such an event is kept,
marked `user_existed: false`, so a test can see that it came before its user. An event whose
user id is in `reject_ids` answers 400 (a stand-in for any refusal). The store's lock guards
this state too.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import defaultdict, deque
from typing import TYPE_CHECKING, Any

from target_userpilot.emulator.deletions import Answer
from target_userpilot.emulator.store import iso_z
from target_userpilot.emulator.validation import PayloadError, metadata_problem, versioned_json

if TYPE_CHECKING:
    from collections.abc import Mapping

    from target_userpilot.emulator.store import Store

logger = logging.getLogger("target_userpilot.emulator")

TRACK_PATH = "/v1/track"
WINDOW = 60.0


@dataclasses.dataclass(frozen=True)
class Event:
    """One accepted event, as received."""

    user_id: str
    event_name: str
    metadata: dict[str, Any]
    received_at: float
    user_existed: bool

    def to_json(self) -> dict[str, Any]:
        """The event as the inspection page shows it."""
        out = dataclasses.asdict(self)
        out["received_at"] = iso_z(self.received_at)
        return out


def read_event(headers: Mapping[str, str], body: bytes) -> tuple[str, str, dict[str, Any]]:
    """(user_id, event_name, metadata) of a track request (header names in lower case).

    Raises:
        PayloadError: a 400: no or another X-API-Version, not JSON, or not an event.
    """
    payload = versioned_json(headers, body)
    if not isinstance(payload, dict):
        raise PayloadError(400, "the body must be a JSON object")
    for field in ("user_id", "event_name"):
        value = payload.get(field)
        if not isinstance(value, str) or not value.strip():
            raise PayloadError(400, f"{field} must be a non-empty string")
    metadata = payload.get("metadata") or {}
    problem = metadata_problem(metadata)
    if problem:
        raise PayloadError(400, problem)
    return payload["user_id"], payload["event_name"], metadata


class Events:
    """The events one emulated account received, and each token's recent requests."""

    def __init__(self, store: Store) -> None:
        """Share the store's lock, clock and configuration."""
        self._store = store
        self._events: list[Event] = []
        self._recent: defaultdict[str, deque[float]] = defaultdict(deque)
        self.too_many = 0

    def request(self, token: str, headers: Mapping[str, str], body: bytes) -> Answer:
        """Answer `POST /v1/track` for `token`: 429, 400 or 202."""
        with self._store.lock:
            now = self._store.now()
            limit = self._store.config.track_per_minute
            recent = self._recent[token]
            while recent and recent[0] <= now - WINDOW:
                recent.popleft()
            if limit and len(recent) >= limit:
                self.too_many += 1
                return Answer(429, {"error": f"Too Many Requests: {limit} per minute"})
            recent.append(now)
        try:
            user_id, name, metadata = read_event(headers, body)
        except PayloadError as e:
            return Answer(e.status, e.body())
        if user_id in self._store.config.reject_ids:
            return Answer(400, {"error": f"user_id {user_id!r} is refused (reject_ids)"})
        existed = self._store.has_user(user_id)
        with self._store.lock:
            self._events.append(Event(user_id, name, metadata, now, existed))
        return Answer(202, {})

    def view(self) -> dict[str, Any]:
        """The `GET /_emulator/events` body: every accepted event, oldest first."""
        with self._store.lock:
            events = list(self._events)
            too_many = self.too_many
        return {
            "count": len(events),
            "before_their_user": sum(not e.user_existed for e in events),
            "answered_429": too_many,
            "events": [e.to_json() for e in events],
        }
