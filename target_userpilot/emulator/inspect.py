"""Read-only pages under `/_emulator/`: the stored profiles, the jobs, deletions, events.

They show what the emulated account holds as of now (finished jobs applied first), the way a
user would check a load in Userpilot's dashboard. They change nothing.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from target_userpilot.emulator.deletions import Answer
from target_userpilot.emulator.store import iso_z

if TYPE_CHECKING:
    from target_userpilot.emulator.deletions import Deletions
    from target_userpilot.emulator.store import JobRecord, Store
    from target_userpilot.emulator.track import Events

PREFIX = "/_emulator"
RUN_DELETIONS_PATH = f"{PREFIX}/deletions/run"
PAGES: dict[str, str] = {
    f"{PREFIX}/users": "GET: stored users; /_emulator/users/<user_id>: one user",
    f"{PREFIX}/companies": "GET: stored companies; /_emulator/companies/<company_id>: one",
    f"{PREFIX}/jobs": "GET: every bulk job, oldest first, with timings and errors",
    f"{PREFIX}/deletions": "GET: pending and applied deletions, and the next daily run",
    f"{PREFIX}/events": "GET: every tracked event, oldest first, marking those before their user",
    RUN_DELETIONS_PATH: "POST: run the daily deletion batch now (emulator only)",
}
_TIMES = ("submitted_at", "started_at", "finished_at")


def job_json(job: JobRecord) -> dict[str, Any]:
    """A job as JSON, its epoch timestamps as `...Z` strings (null until they pass)."""
    out = dataclasses.asdict(job)
    for key in _TIMES:
        out[key] = iso_z(out[key]) if out[key] is not None else None
    return out


class Inspector:
    """Answers `GET /_emulator/<page>`."""

    def __init__(self, store: Store, deletions: Deletions, events: Events) -> None:
        """Read from this store, these deletions and these events."""
        self._store = store
        self._deletions = deletions
        self._events = events

    def page(self, rest: str) -> Answer:
        """The page at `/_emulator<rest>` (`rest` still percent-encoded), or 404."""
        name, _, raw_id = rest.strip("/").partition("/")
        if not name:
            return Answer(200, {"endpoints": PAGES})
        if name in {"users", "companies"}:
            return self._profiles(name, unquote(raw_id))
        if name == "jobs" and not raw_id:
            jobs = self._store.jobs()
            return Answer(200, {"count": len(jobs), "jobs": [job_json(j) for j in jobs]})
        if name == "deletions" and not raw_id:
            return Answer(200, self._deletions.view().to_json())
        if name == "events" and not raw_id:
            return Answer(200, self._events.view())
        return Answer(404, {"error": f"Not Found: {PREFIX}{rest}; see GET {PREFIX}/"})

    def _profiles(self, name: str, profile_id: str) -> Answer:
        profiles = self._store.users() if name == "users" else self._store.companies()
        if not profile_id:
            return Answer(200, {"count": len(profiles), name: list(profiles.values())})
        profile = profiles.get(profile_id)
        if profile is None:
            one = "user" if name == "users" else "company"
            return Answer(404, {"error": f"Not Found: no {one} {profile_id!r}"})
        return Answer(200, profile)
