"""The event thread: sends the events it is handed, in order, and reports what became of each.

It owns only its conversation with the Track API (a `TrackSender`: pacing, retries). Every
outcome goes to the main thread as a message on the run's outcome queue (the one the job
thread reports on), and the main thread applies it: nothing here touches run state. Events go
out beside the bulk jobs: the Track API has its own limit, not the bulk job slot.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from target_userpilot.run.jobs import RunnerFailed
from target_userpilot.wire.errors import EventRefusedError

if TYPE_CHECKING:
    from collections.abc import Callable

    from target_userpilot.wire.track import TrackSender


@dataclass(frozen=True)
class EventItem:
    """One event handed to the thread: its record's position and stream, its request body."""

    position: int
    stream: str
    body: bytes
    identity: str | None  # with `send_only_changes`: remembered once accepted


@dataclass(frozen=True)
class EventSent:
    """Userpilot accepted the event."""

    item: EventItem


@dataclass(frozen=True)
class EventRefused:
    """Userpilot refused the event (400); `reason` is its word."""

    item: EventItem
    reason: str


EventOutcome = EventSent | EventRefused


class _Stopped(Exception):  # noqa: N818 - a signal between two methods, not an error
    """`stop()` was called while the thread waited."""


class EventWorker:
    """The event thread; `open_sender` builds its sender around the thread's stoppable sleep."""

    def __init__(
        self,
        open_sender: Callable[[Callable[[float], None]], TrackSender],
        outcomes: queue.SimpleQueue[Any],
        before_send: Callable[[], None] = lambda: None,
    ) -> None:
        """Start nothing yet; `start()` launches the thread.

        `before_send` runs before each event is sent, as before each upload (the fingerprint
        store's check that the run still holds its lock); what it raises stops the run.
        """
        self._halt = threading.Event()
        self.sender = open_sender(self._sleep)
        self._outcomes = outcomes
        self._before_send = before_send
        self._inbox: queue.SimpleQueue[EventItem | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="userpilot-events", daemon=True)

    def start(self) -> None:
        """Launch the thread."""
        self._thread.start()

    def send(self, item: EventItem) -> None:
        """Hand one event to the thread (sent after those handed before)."""
        self._inbox.put(item)

    def close(self) -> None:
        """No more events: the thread ends once it has reported those it holds."""
        self._inbox.put(None)

    def stop(self) -> None:
        """Stop waiting (pace, backoff) and end the thread as soon as it can; release the wire."""
        self._halt.set()
        self._inbox.put(None)
        if not self._thread.is_alive():  # else a request is under way: the daemon thread ends it
            self.sender.close()

    def _sleep(self, seconds: float) -> None:
        if self._halt.wait(seconds):
            raise _Stopped

    def _run(self) -> None:
        try:
            while not self._halt.is_set():
                item = self._inbox.get()
                if item is None or self._halt.is_set():
                    return
                self._before_send()
                try:
                    self.sender.send(item.body)
                except EventRefusedError as exc:
                    self._outcomes.put(EventRefused(item, str(exc)))
                    continue
                self._outcomes.put(EventSent(item))
        except _Stopped:
            return
        except BaseException as exc:  # noqa: BLE001 - reported to the main thread, which raises it
            self._outcomes.put(RunnerFailed(exc))
