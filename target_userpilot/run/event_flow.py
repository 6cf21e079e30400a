"""The main thread's side of events: order after their users, STATE, duplicates, counters.

- **After their users.** A user profile added to a batch gates that user's events: an event
  whose user is in a batch not yet settled waits until the job holding it completed (Userpilot
  drops events of users it does not know). Events leave in record order, so one waiting event
  holds back those after it; at most `MAX_PENDING` wait, then the reader waits too.
- **STATE.** The oldest event not yet answered holds STATE back (one hold, `EVENTS_HOLD`):
  events are sent and answered in order, so that is the only position to hold.
- **Never twice** (`send_only_changes`): an event whose identity Userpilot accepted in an
  earlier run (or is on its way in this one) is skipped; an accepted one is remembered at once.
- A dry run writes each request body to `track-events.ndjson` in `dry_run_dir`.

Only the main thread calls this; the event thread (`event_worker.py`) sends what it is handed.
"""

from __future__ import annotations

import json
import math
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

from typing_extensions import assert_never

from target_userpilot.run.checkpoints import EVENTS_HOLD
from target_userpilot.run.event_worker import EventItem, EventRefused, EventSent
from target_userpilot.run.jobs import MAX_REFUSED_ROWS, JobFailedError
from target_userpilot.run.summary import plural

if TYPE_CHECKING:
    import logging
    from pathlib import Path

    from target_userpilot.events import Event
    from target_userpilot.run.changes import ChangeFilter
    from target_userpilot.run.checkpoints import Checkpoints
    from target_userpilot.run.deadletters import DeadLetters
    from target_userpilot.run.event_worker import EventOutcome, EventWorker
    from target_userpilot.run.summary import Counters

EVENTS = "events"  # the kind in fingerprints and dead letters
DRY_RUN_FILE = "track-events.ndjson"
MAX_PENDING = 10_000  # events waiting or on their way before the reader waits
REFUSALS_PER = 10_000  # refusals are judged like an upload's rows, per this many events
PROGRESS_SECONDS = 30.0


def systematic(refused: int, answered: int) -> bool:
    """Whether refusals are a systematic problem rather than a few bad events.

    The uploads' rule (`jobs._Refusals`), with every `REFUSALS_PER` events as one batch: more
    than half refused, or more than `MAX_REFUSED_ROWS` a batch.
    """
    batches = max(1, math.ceil(answered / REFUSALS_PER))
    return refused > max(1, answered / 2) or refused > MAX_REFUSED_ROWS * batches


class UserGates:
    """Which batch not yet settled holds each user's latest profile."""

    def __init__(self) -> None:
        """No user waits."""
        self._batch_of: dict[str, Path] = {}
        self._users_in: dict[Path, list[str]] = {}

    def added(self, kind: str, profile_id: str, batch: Path) -> None:
        """A profile went into this batch (a user's gates its events)."""
        if kind == "users" and self._batch_of.get(profile_id) != batch:
            self._batch_of[profile_id] = batch
            self._users_in.setdefault(batch, []).append(profile_id)

    def settled(self, batch: Path) -> None:
        """Every row of the batch is confirmed or refused."""
        for user_id in self._users_in.pop(batch, ()):
            if self._batch_of.get(user_id) == batch:
                del self._batch_of[user_id]

    def gate(self, user_id: str) -> Path | None:
        """The batch an event of this user must wait for; None when it may go."""
        return self._batch_of.get(user_id)

    def waiting(self, batch: Path) -> bool:
        """Whether this batch is not settled yet."""
        return batch in self._users_in


@dataclass(frozen=True)
class _Waiting:
    item: EventItem
    gate: Path | None


class EventFlow:
    """Events from the sinks to the event thread, and the outcomes back into run state."""

    def __init__(  # noqa: PLR0913 - each is a distinct collaborator
        self,
        *,
        checkpoints: Checkpoints,
        counters: Counters,
        letters: DeadLetters,
        changes: ChangeFilter | None,
        worker: EventWorker | None,
        dry_run_dir: Path | None,
        logger: logging.Logger,
    ) -> None:
        """`worker` is None for a dry run, which writes to `dry_run_dir` instead."""
        self._checkpoints = checkpoints
        self._counters = counters
        self._letters = letters
        self._changes = changes
        self._worker = worker
        self._dry_run_dir = dry_run_dir
        self._dry_run: BinaryIO | None = None
        self._logger = logger
        self.gates = UserGates()
        self._waiting: deque[_Waiting] = deque()
        self._sent: deque[EventItem] = deque()  # handed to the thread, not answered
        self._on_the_way: set[str] = set()  # identities waiting or sent, not answered
        self._next_progress = time.monotonic() + PROGRESS_SECONDS

    @property
    def pending(self) -> int:
        """Events waiting for their users or not answered yet."""
        return len(self._waiting) + len(self._sent)

    def blocking_batch(self) -> Path | None:
        """The batch the first waiting event waits for, if it waits."""
        return self._waiting[0].gate if self._waiting else None

    def add(self, stream: str, position: int, event: Event, identity: str) -> None:
        """An event: skipped, written (dry run), or queued behind its user."""
        changes = self._changes
        if changes is not None and (identity in self._on_the_way or changes.seen(EVENTS, identity)):
            self._counters.events_skipped += 1
            return
        item = EventItem(position, stream, event.body(), identity if changes else None)
        if self._worker is None:
            self._write(item)
            return
        if item.identity is not None:
            self._on_the_way.add(item.identity)
        self._waiting.append(_Waiting(item, self.gates.gate(event.user_id)))
        self._hold()
        self.release()

    def batch_settled(self, batch: Path) -> None:
        """A users batch is settled: events waiting for it may go."""
        self.gates.settled(batch)
        self.release()

    def release(self) -> None:
        """Hand the waiting events whose users are in Userpilot to the thread, in order."""
        worker = self._worker
        while worker is not None and self._waiting:
            head = self._waiting[0]
            if head.gate is not None and self.gates.waiting(head.gate):
                return
            self._waiting.popleft()
            self._sent.append(head.item)
            worker.send(head.item)

    def apply(self, outcome: EventOutcome) -> None:
        """An answer from the event thread (they come in the order the events were sent)."""
        item = self._sent.popleft()
        if item.identity is not None:
            self._on_the_way.discard(item.identity)
        match outcome:
            case EventSent():
                if self._changes is not None and item.identity is not None:
                    # Before STATE moves past it: a crash in between cannot send it twice.
                    self._changes.remember(EVENTS, item.identity)
                self._counters.events_accepted += 1
            case EventRefused():
                self._refused(outcome)
            case _:
                assert_never(outcome)
        self._hold()
        self._log_progress()

    def close(self) -> None:
        """Release the dry run's file."""
        if self._dry_run is not None:
            self._dry_run.close()
            self._dry_run = None

    def _refused(self, outcome: EventRefused) -> None:
        counters = self._counters
        counters.events_refused += 1
        answered = counters.events_accepted + counters.events_refused
        if systematic(counters.events_refused, answered):
            msg = (
                f"Userpilot refused {plural(counters.events_refused, 'event')} of "
                f"{answered:,} sent, last with: {outcome.reason}. That many is not a bad event "
                "but a systematic problem (the settings `event_user_property`, "
                "`event_name_property`, `event_names`, or the metadata): fix it and rerun. No "
                "STATE past these events was emitted."
            )
            raise JobFailedError(msg)
        item = outcome.item
        self._letters.report(
            stream=item.stream,
            kind=EVENTS,
            position=item.position,
            reason=f"refused by Userpilot: {outcome.reason}",
            profile=json.loads(item.body),
        )

    def _hold(self) -> None:
        oldest = self._sent[0] if self._sent else self._waiting[0].item if self._waiting else None
        if oldest is None:
            self._checkpoints.settle(EVENTS_HOLD)
        else:
            self._checkpoints.hold(EVENTS_HOLD, oldest.position)
            self._checkpoints.release()

    def _write(self, item: EventItem) -> None:
        if self._dry_run is None:
            assert self._dry_run_dir is not None  # noqa: S101 - a pipeline without a worker
            self._dry_run = (self._dry_run_dir / DRY_RUN_FILE).open("ab")
        self._dry_run.write(item.body + b"\n")
        self._counters.events_accepted += 1

    def _log_progress(self) -> None:
        now = time.monotonic()
        if now < self._next_progress:
            return
        self._next_progress = now + PROGRESS_SECONDS
        c = self._counters
        self._logger.info(
            "Events: %s accepted, %d refused, %d skipped, %s waiting.",
            f"{c.events_accepted:,}",
            c.events_refused,
            c.events_skipped,
            f"{self.pending:,}",
        )
