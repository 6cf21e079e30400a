"""The emulated Deletion API: scheduling, its rate limit, and the simulated daily run.

`DELETE /v1/users` with `{"users": [ids]}` (or `/v1/companies` with `{"companies": [...]}`)
schedules the ids and answers 202; like Userpilot, nothing is deleted at once. Userpilot
deletes in a daily batch at 02:00 UTC; here `run_now()` (tests, `POST /_emulator/deletions/run`)
is that batch on demand, and `tick()` (the CLI calls it continuously) applies what was
scheduled before the latest 02:00 UTC. The daily run first applies every job completed by
then, so a profile re-created by a later job comes back, as it would in Userpilot.

Only an accepted request opens the 2-second window: a request inside it answers 429 and
schedules nothing. The store's lock guards this state too.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from typing import TYPE_CHECKING, Any

from target_userpilot.emulator.store import iso_z
from target_userpilot.emulator.validation import PayloadError, versioned_json

if TYPE_CHECKING:
    from collections.abc import Mapping

    from target_userpilot.emulator.store import Store
    from target_userpilot.emulator.validation import Kind

logger = logging.getLogger("target_userpilot.emulator")

DELETE_INTERVAL = 2.0
"""Seconds between two accepted delete requests (either kind); sooner answers 429."""
DAILY_RUN_HOUR_UTC = 2
DELETE_PATHS: dict[str, Kind] = {"/v1/users": "users", "/v1/companies": "companies"}
_ONE = {"users": "user", "companies": "company"}


@dataclasses.dataclass(frozen=True)
class Answer:
    """What an endpoint answers: a status and a JSON payload."""

    status: int
    payload: Any


@dataclasses.dataclass(frozen=True)
class Scheduled:
    """An id a delete request scheduled, waiting for the daily run."""

    kind: Kind
    id: str
    scheduled_at: float


@dataclasses.dataclass(frozen=True)
class Applied:
    """A scheduled deletion the daily run applied; `found` is False when no profile existed."""

    kind: Kind
    id: str
    scheduled_at: float
    applied_at: float
    found: bool


@dataclasses.dataclass(frozen=True)
class DeletionsView:
    """Pending and applied deletions, oldest first, and when the next daily run is due."""

    pending: list[Scheduled]
    applied: list[Applied]
    next_run_at: float

    def to_json(self) -> dict[str, Any]:
        """The `GET /_emulator/deletions` body, timestamps as `...Z` strings."""
        return {
            "next_run_at": iso_z(self.next_run_at),
            "pending": [
                {"kind": s.kind, "id": s.id, "scheduled_at": iso_z(s.scheduled_at)}
                for s in self.pending
            ],
            "applied": [
                {
                    "kind": a.kind,
                    "id": a.id,
                    "scheduled_at": iso_z(a.scheduled_at),
                    "applied_at": iso_z(a.applied_at),
                    "found": a.found,
                }
                for a in self.applied
            ],
        }


def last_daily_run(now: float) -> float:
    """The latest 02:00 UTC at or before `now` (epoch seconds)."""
    moment = dt.datetime.fromtimestamp(now, tz=dt.timezone.utc)
    run = moment.replace(hour=DAILY_RUN_HOUR_UTC, minute=0, second=0, microsecond=0)
    if run > moment:
        run -= dt.timedelta(days=1)
    return run.timestamp()


def read_ids(kind: Kind, headers: Mapping[str, str], body: bytes) -> list[str]:
    """The ids of a `DELETE /v1/<kind>` (header names in lower case), each once, in order.

    Raises:
        PayloadError: a 400: no or another X-API-Version, not JSON, or not
            `{"<kind>": ["id", ...]}`.
    """
    mimetype = headers.get("content-type", "").partition(";")[0].strip().lower()
    if mimetype != "application/json":
        msg = f"Content-Type must be application/json, got {mimetype or 'none'}"
        raise PayloadError(400, msg)
    payload = versioned_json(headers, body)
    if not isinstance(payload, dict) or set(payload) != {kind}:
        msg = f'the body must be {{"{kind}": ["id", ...]}}'
        raise PayloadError(400, msg)
    ids = payload[kind]
    if not isinstance(ids, list) or not ids:
        msg = f"{kind} must be a non-empty array of ids"
        raise PayloadError(400, msg)
    for position, value in enumerate(ids, 1):
        if not isinstance(value, str) or not value.strip():
            msg = f"{kind}[{position}] must be a non-empty string"
            raise PayloadError(400, msg)
    return list(dict.fromkeys(ids))


class Deletions:
    """Scheduled and applied deletions of one emulated account."""

    def __init__(self, store: Store) -> None:
        """Share the store's lock and clock."""
        self._store = store
        self._pending: list[Scheduled] = []
        self._applied: list[Applied] = []
        self._last_accepted: float | None = None

    def request(self, kind: Kind, headers: Mapping[str, str], body: bytes) -> Answer:
        """Answer `DELETE /v1/<kind>` (header names in lower case): 400, 429, or 202."""
        try:
            ids = read_ids(kind, headers, body)
        except PayloadError as e:
            return Answer(e.status, e.body())
        with self._store.lock:
            now = self._store.now()
            if self._last_accepted is not None and now - self._last_accepted < DELETE_INTERVAL:
                return Answer(
                    429,
                    {"error": "Too Many Requests: at most one delete request every 2 seconds"},
                )
            self._last_accepted = now
            self._pending.extend(Scheduled(kind, i, now) for i in ids)
        noun = _ONE[kind] if len(ids) == 1 else kind
        logger.info("%d %s scheduled for deletion", len(ids), noun)
        return Answer(202, {"message": f"{len(ids)} {noun} scheduled for deletion"})

    def run_now(self) -> list[Applied]:
        """The daily run, now: apply every pending deletion; what it applied."""
        with self._store.lock:
            due, self._pending = self._pending, []
            return self._apply(self._store.now(), due)

    def tick(self) -> None:
        """Apply the deletions scheduled before the latest 02:00 UTC, as Userpilot would."""
        with self._store.lock:
            now = self._store.now()
            cutoff = last_daily_run(now)
            due = [s for s in self._pending if s.scheduled_at < cutoff]
            if due:
                self._pending = [s for s in self._pending if s.scheduled_at >= cutoff]
                self._apply(now, due)

    def view(self) -> DeletionsView:
        """Pending and applied deletions (copies)."""
        with self._store.lock:
            now = self._store.now()
            next_run = last_daily_run(now) + dt.timedelta(days=1).total_seconds()
            return DeletionsView(list(self._pending), list(self._applied), next_run)

    def _apply(self, now: float, batch: list[Scheduled]) -> list[Applied]:
        found: dict[Kind, set[str]] = {}
        for kind in ("users", "companies"):
            ids = [s.id for s in batch if s.kind == kind]
            found[kind] = set(self._store.delete_profiles(kind, ids)) if ids else set()
        applied = [Applied(s.kind, s.id, s.scheduled_at, now, s.id in found[s.kind]) for s in batch]
        self._applied.extend(applied)
        logger.info(
            "daily deletion run: %d scheduled deletions applied, %d profiles deleted",
            len(applied),
            sum(a.found for a in applied),
        )
        return applied
