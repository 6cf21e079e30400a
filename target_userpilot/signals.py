"""SIGTERM/SIGINT as a flag: the handler records the signal; the main path acts on it.

The handler runs on the main thread between two bytecodes, possibly while that thread holds
a lock (a log handler's, the dead-letter file's, SQLite's): it must not block, so it only
sets attributes. The main thread looks at them between records, on its input timer and
while it waits for the job thread, and raises RunStopped there.
"""

from __future__ import annotations


class RunStopped(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Raised on the main path once a termination signal was noticed."""

    def __init__(self, signum: int) -> None:
        """`signum` decides the exit status, 128 + signum."""
        super().__init__(f"signal {signum}")
        self.signum = signum


class StopRequest:
    """Signals received so far; written by the handler only."""

    def __init__(self) -> None:
        """No signal yet."""
        self.signum: int | None = None
        self.count = 0

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
