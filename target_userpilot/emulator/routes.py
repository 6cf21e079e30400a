"""The routes beside bulk identify: the Deletion and Track APIs, the `/_emulator/` pages."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from target_userpilot.emulator.deletions import DELETE_PATHS, Answer
from target_userpilot.emulator.inspect import PREFIX, RUN_DELETIONS_PATH, Inspector
from target_userpilot.emulator.track import TRACK_PATH

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from target_userpilot.emulator.deletions import Deletions
    from target_userpilot.emulator.store import Store
    from target_userpilot.emulator.track import Events


@dataclasses.dataclass(frozen=True)
class Request:
    """What these routes read of a request: its headers (names in lower case) and body."""

    headers: Mapping[str, str]
    read_body: Callable[[], bytes]


def is_emulator_path(path: str) -> bool:
    """Whether `path` is one of the emulator's own pages (no injected faults there)."""
    return path == PREFIX or path.startswith(PREFIX + "/")


class ExtraRoutes:
    """Finds the handler of a Deletion API, Track API or `/_emulator/` path."""

    def __init__(self, store: Store, deletions: Deletions, events: Events) -> None:
        """Serve these deletions, these events and this store's pages."""
        self._deletions = deletions
        self._events = events
        self._inspector = Inspector(store, deletions, events)

    def route(self, path: str) -> tuple[str, Callable[[Request], Answer]] | None:
        """The method `path` takes and its handler; None when the path is not one of these."""
        bare = path.rstrip("/")
        kind = DELETE_PATHS.get(bare)
        if kind is not None:
            return "DELETE", lambda r: self._deletions.request(kind, r.headers, r.read_body())
        if bare == TRACK_PATH:
            return "POST", lambda r: self._events.request(
                r.headers.get("authorization", "").strip(), r.headers, r.read_body()
            )
        if bare == RUN_DELETIONS_PATH:
            return "POST", lambda _: self._run_deletions()
        if is_emulator_path(path):
            return "GET", lambda _: self._inspector.page(path[len(PREFIX) :])
        return None

    def _run_deletions(self) -> Answer:
        applied = self._deletions.run_now()
        return Answer(200, {"applied": len(applied), "deleted": sum(a.found for a in applied)})
