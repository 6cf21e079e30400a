"""A clock that moves only when told to (or when slept on): time-driven code without waiting."""

from __future__ import annotations

import datetime as dt
import threading


class FakeClock:
    """Epoch seconds; `sleep` advances it at once. Thread safe (the emulator reads it too)."""

    def __init__(self, start: dt.datetime) -> None:
        self._now = start.timestamp()
        self._lock = threading.Lock()
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(max(seconds, 0.0))

    def set(self, moment: dt.datetime) -> None:
        with self._lock:
            self._now = moment.timestamp()
