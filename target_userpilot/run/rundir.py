"""Each run keeps its batch files in a folder of its own, removed whatever way the run ends.

The folder is `batch_dir/userpilot-run-<pid>-<random>`. While the run lives it holds an
exclusive lock (flock) on the folder's `.lock` file, which the kernel releases when the process
dies however it dies. A run removes the folders whose lock it can take: those of runs killed
with SIGKILL or lost with their machine. A live run's folder is never touched.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
import shutil
import tempfile
from pathlib import Path

from target_userpilot.run.batches import BatchFileError

PREFIX = "userpilot-run-"


def dry_run_folder(parent: Path, now: float, pid: int) -> Path:
    """A dry run's own folder in `dry_run_dir`: `<UTC time>-<pid>`, never an earlier run's."""
    moment = dt.datetime.fromtimestamp(now, tz=dt.timezone.utc)
    return parent / f"{moment:%Y%m%dT%H%M%S.%fZ}-{pid}"


LOCK = ".lock"


def _pid_alive(name: str) -> bool:
    """Whether the pid in a folder's name is a live process (True when unsure)."""
    try:
        pid = int(name.removeprefix(PREFIX).split("-", 1)[0])
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (ValueError, OSError):
        return True
    return True


def _remove_if_dead(folder: Path) -> bool:
    """Remove a run folder whose owner is gone; whether it was removed."""
    try:
        fd = os.open(folder / LOCK, os.O_RDONLY)
    except FileNotFoundError:
        # Created but not locked yet, or its run died right then: the pid tells which.
        if _pid_alive(folder.name):
            return False
        shutil.rmtree(folder, ignore_errors=True)
        return True
    except OSError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False  # held: a live run
        shutil.rmtree(folder, ignore_errors=True)
        return True
    finally:
        os.close(fd)


class RunFolder:
    """The run's batch folder: created by `open`, removed by `remove`."""

    def __init__(self, parent: Path) -> None:
        """The folder goes in `parent` (the `batch_dir` setting)."""
        self.parent = parent
        self.path: Path | None = None
        self._lock_fd: int | None = None
        self.removed_stale = 0

    def open(self) -> Path:
        """Remove dead runs' folders, then create and lock this run's; returns its path."""
        try:
            self.parent.mkdir(parents=True, exist_ok=True)
            for folder in self.parent.glob(f"{PREFIX}*"):
                if folder.is_dir() and _remove_if_dead(folder):
                    self.removed_stale += 1
            path = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=self.parent))
            self._lock_fd = os.open(path / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        except OSError as exc:
            msg = (
                f"cannot use {self.parent} for batch files: {exc.strerror or exc}; point the "
                "`batch_dir` setting at a writable folder."
            )
            raise BatchFileError(msg) from exc
        self.path = path
        return path

    def remove(self) -> None:
        """Remove the folder and everything in it; safe to call twice."""
        if self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)
            self.path = None
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)
            self._lock_fd = None
