"""Records that cannot be loaded: written to a dead-letter NDJSON file, counted, or fatal.

One policy for every way a record can fail: invalid for the tap's own schema, impossible to
turn into a profile, or rejected by Userpilot inside a completed job.

Letters hold whole records (emails, names), so the file is readable by its owner only (0600).
Each run that writes letters first appends one marker line, `{"run": ..., "started_at": ...,
"target_version": ...}`, so the letters of each run can be told apart; a letter has a
`stream`, a marker has none.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import uuid
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any, BinaryIO, Literal

from target_userpilot.errors import UserFacingError
from target_userpilot.profiles import encode_exact

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

Policy = Literal["dead_letter", "fail", "skip"]
FILE_MODE = 0o600
# A dry run's dead letters, in its `dry_run_dir`.
DRY_RUN_LETTERS = "dead-letters.ndjson"


class InvalidRecordError(UserFacingError, ValueError):
    """A record could not be loaded and the policy is `fail`."""


class DeadLetterFileError(UserFacingError):
    """The dead-letter file cannot be written (a full disk, a path that is not a file)."""


class DeadLetters:
    """Applies the `on_invalid_record` policy; used by the main thread only (the run's owner)."""

    def __init__(self, path: Path, policy: Policy, setting: str = "dead_letter_path") -> None:
        """The file is created only when the first dead letter arrives; `setting` places it."""
        self.path = path
        self.policy = policy
        self.setting = setting
        self.run = run_marker()
        self._handle: BinaryIO | None = None
        self.written = 0
        self.skipped = 0

    def report(  # noqa: PLR0913 - one field per part of a dead letter
        self,
        *,
        stream: str,
        kind: str,
        position: int,
        reason: str,
        record: Mapping[str, Any] | None = None,
        profile: Mapping[str, Any] | None = None,
        job_id: str | None = None,
        error: type[InvalidRecordError] = InvalidRecordError,
    ) -> None:
        """Dead-letter, skip, or raise `error` for one record, per the policy."""
        if self.policy == "fail":
            job = f" in job {job_id}" if job_id else ""
            msg = (
                f"record {position:,} of stream {stream!r}{job} cannot be loaded: {reason}. "
                "Set `on_invalid_record` to `dead_letter` to write such records to a file and "
                "go on."
            )
            raise error(msg)
        if self.policy == "skip":
            self.skipped += 1
            return
        letter: dict[str, Any] = {
            "stream": stream,
            "kind": kind,
            "position": position,
            "reason": reason,
            "at": dt.datetime.now(dt.timezone.utc).isoformat(),
        }
        if job_id is not None:
            letter["job_id"] = job_id
        if record is not None:
            letter["record"] = record
        if profile is not None:
            letter["profile"] = profile
        # Exact whatever the record holds: Decimals as read, numbers no float can hold
        # as their text, lone surrogates escaped; so a letter can be replayed.
        self._append(encode_exact(letter) + b"\n")
        self.written += 1

    def _append(self, line: bytes) -> None:
        try:
            if self._handle is None:
                self._handle = self._open()
            self._handle.write(line)
            self._handle.flush()
        except OSError as exc:
            self._drop_handle()  # what is left in its buffer cannot be written either
            msg = (
                f"cannot write the dead-letter file {self.path} (setting `{self.setting}`): "
                f"{exc.strerror or exc}"
            )
            raise DeadLetterFileError(msg) from exc

    def _open(self) -> BinaryIO:
        """The file opened for appending, readable by its owner only, with this run's marker."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
        handle = os.fdopen(fd, "ab")
        try:
            # A file an older version created (0644) is narrowed too; one owned by another
            # user keeps its mode (only its owner may change it).
            with contextlib.suppress(PermissionError):
                os.fchmod(fd, FILE_MODE)
            handle.write(encode_exact(self.run) + b"\n")
        except BaseException:
            handle.close()
            raise
        return handle

    @property
    def total(self) -> int:
        """Records dead-lettered or skipped."""
        return self.written + self.skipped

    def _drop_handle(self) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            with contextlib.suppress(OSError):
                handle.close()

    def close(self) -> None:
        """Close the file if one was opened."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def run_marker() -> dict[str, str]:
    """The line a run appends before its first dead letter: which run, since when, which code."""
    try:
        target_version = version("target-userpilot")
    except PackageNotFoundError:  # run from a source tree that is not installed
        target_version = "unknown"
    return {
        "run": uuid.uuid4().hex,
        "started_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        "target_version": target_version,
    }
