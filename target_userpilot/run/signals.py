"""SIGTERM/SIGINT as a flag: the handler records the signal; the main path acts on it.

The handler runs on the main thread between two bytecodes, possibly while that thread holds
a lock (a log handler's, the dead-letter file's, SQLite's): it must not block, so it only
sets attributes. The main thread looks at them between records, on its input timer and
while it waits for the job thread, and raises RunStopped there.

Every other wait (retry sleeps, slot waits, deletion pacing, the store's lock waits) sleeps
through `StopRequest.sleep`, in slices, so it notices a stop within `LISTEN_SECONDS` without
the handler having to wake anything.
"""

from __future__ import annotations

import threading
import time

# Longest a listening sleep goes without looking at the stop request.
LISTEN_SECONDS = 0.2


class RunStopped(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Raised on the main path once a termination signal was noticed."""

    def __init__(self, signum: int) -> None:
        """`signum` decides the exit status, 128 + signum."""
        super().__init__(f"signal {signum}")
        self.signum = signum


class WaitStopped(Exception):  # noqa: N818 - a control-flow signal, not an error
    """A wait on the job thread ended early: the main thread gave up on it."""


class StopRequest:
    """Signals received so far (written by the handler only), and whether the run gave up."""

    def __init__(self) -> None:
        """No signal yet."""
        self.signum: int | None = None
        self.count = 0
        # Set by the main thread once it no longer waits for the job thread.
        self.abandoned = False

    def handle(self, signum: int) -> None:
        """The signal handler's whole work: remember the first signal, count them all."""
        if self.signum is None:
            self.signum = signum
        self.count += 1

    @property
    def hurried(self) -> bool:
        """A second signal: stop waiting for the job in flight."""
        return self.count > 1

    def raise_if_requested(self) -> None:
        """Raise RunStopped if a signal came in."""
        if self.signum is not None:
            raise RunStopped(self.signum)

    def abandon(self) -> None:
        """The main thread no longer waits for the job thread: its waits end now."""
        self.abandoned = True

    def sleep(self, seconds: float) -> None:
        """Sleep, ending early once the run stops: what every wait of the run sleeps with.

        On the main thread a signal ends the wait (RunStopped). The job thread's waits go on
        through the termination grace (the job in flight may still complete) and end
        (WaitStopped) once the main thread abandons it or a second signal comes.
        """
        end = time.monotonic() + seconds
        main = threading.current_thread() is threading.main_thread()
        while True:
            if main:
                self.raise_if_requested()
            elif self.abandoned or self.hurried:
                raise WaitStopped
            left = end - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, LISTEN_SECONDS))
