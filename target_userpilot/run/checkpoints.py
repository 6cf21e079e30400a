"""STATE gating as a watermark: a STATE goes out only once every record before it is settled.

Every RECORD gets a position as it arrives (1, 2, 3, ...). A STATE is remembered with the
position of the last record before it. A batch holds its records' positions until its job is
confirmed; the watermark is the smallest position still held. A STATE is released when its
position is below the watermark: every record before it is in a completed job, or was reported
(dead letter) or deliberately skipped.

Only the STATEs a release could emit are kept: the watermark only ever stops at the position
where something is held from, so of the STATEs between two such positions only the newest can
ever go out. A tap writing a STATE after every record costs one STATE per batch, not one per
record. Dropping one is always safe (an older STATE is emitted at worst); marking each position
a hold may later start from keeps the releases as fresh as before.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from collections.abc import Callable


@dataclass(frozen=True)
class Hold:
    """What holds STATE back: every kind of holder the run has, in one place.

    - `batch`: a batch's records, until its job completed (`name`: the batch file);
    - `undelivered`: a part whose outcome failed to apply, for good (`name`: its file);
    - `invalid`: a stream's first invalid record, until its share is judged (`name`: stream);
    - `deletions`: deletions read but not yet accepted;
    - `events`: the oldest event not yet answered;
    - `refused`: the first refused row, until Userpilot accepts one row of the run.
    """

    reason: Literal["batch", "undelivered", "invalid", "deletions", "events", "refused"]
    name: str = ""


DELETIONS_HOLD = Hold("deletions")
EVENTS_HOLD = Hold("events")
REFUSED_HOLD = Hold("refused")


class Checkpoints:
    """Holds STATE messages until the data before them is confirmed; the main thread's alone."""

    def __init__(self, emit: Callable[[dict[str, Any]], None]) -> None:
        """`emit` writes one STATE value to stdout."""
        self._emit = emit
        self._states: deque[tuple[int, dict[str, Any]]] = deque()
        self._holds: dict[Hold, int] = {}
        self._last_emitted: dict[str, Any] | None = None
        self._marked = False  # a hold may start after the newest STATE: keep that STATE

    def add_state(self, position: int, state: dict[str, Any]) -> None:
        """Remember a STATE that arrived after record `position`; release it if it can go."""
        if not state:
            # An empty STATE would wipe the bookmarks Meltano keeps; never pass one on.
            return
        if self._states and not self._marked:
            # No watermark can stop between it and this one: it could never be emitted.
            self._states.pop()
        self._states.append((position, state))
        self._marked = False
        self.release()

    def mark(self, position: int) -> None:
        """Something may later hold STATE from `position` on (a deletion, before its turn)."""
        if self._states and position > self._states[-1][0]:
            self._marked = True

    def hold(self, holder: Hold, position: int) -> None:
        """`holder` holds records from `position` on until `settle(holder)`."""
        self.mark(position)
        self._holds[holder] = position

    def settle(self, holder: Hold) -> None:
        """The holder's records are confirmed (or reported); release what can go."""
        self._holds.pop(holder, None)
        self.release()

    def watermark(self) -> float:
        """Smallest position still held; infinity when nothing is pending."""
        return min(self._holds.values(), default=float("inf"))

    def newest_state_position(self) -> int | None:
        """Position of the newest STATE received and not released yet."""
        return self._states[-1][0] if self._states else None

    def release(self) -> None:
        """Emit the newest STATE whose records are all settled, if not emitted already."""
        low = min(self._holds.values(), default=float("inf"))
        ready = None
        while self._states and self._states[0][0] < low:
            ready = self._states.popleft()[1]
        if ready is None or ready == self._last_emitted:
            return
        self._last_emitted = ready
        self._emit(ready)
