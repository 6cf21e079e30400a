"""NDJSON batch files on disk: append profile lines, merge duplicates, cut at rows or bytes.

A batch holds the profiles of one kind waiting for one Userpilot job. Lines live on disk, so
memory stays flat whatever the batch size; only a small index (id -> where its line is) stays
in memory, which is what lets a later record for the same id merge into its earlier line.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING

from target_userpilot.profiles import Kind, Profile, merge

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

MAX_API_ROWS = 10_000
MAX_API_BYTES = 50_000_000  # Userpilot's "50 MB", read as the smaller decimal megabytes
# Room left under the API's 50 MB for the multipart envelope and any difference in how the
# server counts the body.
MULTIPART_MARGIN = 64 * 1024


@dataclass(frozen=True)
class BatchLimits:
    """Where a batch is cut: whichever of the two is reached first."""

    max_rows: int = MAX_API_ROWS
    max_bytes: int = MAX_API_BYTES - MULTIPART_MARGIN


@dataclass
class _Entry:
    offset: int
    length: int
    position: int
    stream: str


@dataclass(frozen=True)
class LineOrigin:
    """Where a line of a sealed batch came from, to report it if Userpilot rejects it."""

    profile_id: str
    position: int
    stream: str


@dataclass
class SealedBatch:
    """A complete batch file, ready to upload; deleted once its job is confirmed."""

    kind: Kind
    path: Path
    rows: int
    size: int
    first_position: int
    origins: list[LineOrigin] = field(repr=False)
    merged: int = 0

    @property
    def ids(self) -> frozenset[str]:
        """Ids of the profiles in this batch."""
        return frozenset(origin.profile_id for origin in self.origins)

    def lines(self) -> list[bytes]:
        """The batch's lines, in file order (read when a job is confirmed or split)."""
        with self.path.open("rb") as handle:
            return [line.rstrip(b"\n") for line in handle]

    def split(self) -> tuple[SealedBatch, SealedBatch]:
        """Cut the batch into two halves, each its own file (after a 413)."""
        lines = self.lines()
        half = len(lines) // 2
        parts = []
        for start, stop in ((0, half), (half, len(lines))):
            path = self.path.with_name(f"{self.path.stem}-{start}{self.path.suffix}")
            chunk = lines[start:stop]
            with _disk(path, "write"):
                path.write_bytes(b"".join(line + b"\n" for line in chunk))
            origins = self.origins[start:stop]
            parts.append(
                SealedBatch(
                    kind=self.kind,
                    path=path,
                    rows=len(chunk),
                    size=path.stat().st_size,
                    first_position=min(o.position for o in origins),
                    origins=origins,
                ),
            )
        self.delete()
        return parts[0], parts[1]

    def delete(self) -> None:
        """Remove the file; a batch that is gone already is fine."""
        self.path.unlink(missing_ok=True)


class LineTooLargeError(ValueError):
    """One profile line alone is over the batch byte limit."""


class BatchFileError(Exception):
    """A batch file could not be written (a full disk, most often); says what to fix."""


@contextlib.contextmanager
def _disk(path: Path, doing: str) -> Iterator[None]:
    """Turn an OS error on a batch file into a BatchFileError naming the file and the setting."""
    try:
        yield
    except OSError as exc:
        msg = (
            f"cannot {doing} batch file {path}: {exc.strerror or exc}; free space there or "
            "point the `batch_dir` setting elsewhere. Nothing unconfirmed was checkpointed."
        )
        raise BatchFileError(msg) from exc


def _parse_line(kind: Kind, line: bytes) -> Profile:
    obj = json.loads(line, parse_float=Decimal)
    id_key = "user_id" if kind == "users" else "company_id"
    return Profile(
        id=obj[id_key],
        company_id=obj.get("company_id") if kind == "users" else None,
        metadata=obj.get("metadata", {}),
    )


class BatchFile:
    """An open batch being filled; `seal()` turns it into a SealedBatch."""

    def __init__(self, kind: Kind, directory: Path, limits: BatchLimits) -> None:
        """Create the batch file in `directory` (a unique name per batch)."""
        self.kind = kind
        self.limits = limits
        self.path = directory / f"userpilot-{kind}-{uuid.uuid4().hex}.ndjson"
        with _disk(self.path, "create"):
            self._handle = self.path.open("w+b")
        self._end = 0
        self._index: dict[str, _Entry] = {}
        self._dead_bytes = 0
        self.size = 0
        self.merged = 0
        self.first_position: int | None = None

    @property
    def rows(self) -> int:
        """Profiles in the batch (after merging)."""
        return len(self._index)

    def __contains__(self, profile_id: str) -> bool:
        """Whether a line for this id is waiting in the batch."""
        return profile_id in self._index

    def add(self, profile: Profile, position: int, stream: str, line: bytes | None = None) -> bool:
        """Append (or merge) a profile; False when it does not fit and the batch must be cut.

        `line` is `profile.line(kind)` if the caller has it already. A profile that does not
        fit is not merged: the batch goes out as it is, and the newer values travel in the
        next batch, which Userpilot applies later.
        """
        entry = self._index.get(profile.id)
        if entry is not None:
            profile = merge(self._read(entry), profile)
            line = profile.line(self.kind)
        elif line is None:
            line = profile.line(self.kind)
        if len(line) + 1 > self.limits.max_bytes:
            msg = (
                f"profile line is {len(line) + 1:,} bytes, over the batch limit of "
                f"{self.limits.max_bytes:,} bytes (setting `max_batch_bytes`)"
            )
            raise LineTooLargeError(msg)
        replaced = entry.length + 1 if entry else 0
        new_size = self.size - replaced + len(line) + 1
        if new_size > self.limits.max_bytes or (
            entry is None and self.rows >= self.limits.max_rows
        ):
            return False
        self._write(line)
        if entry is None:
            self._index[profile.id] = _Entry(self._end - len(line) - 1, len(line), position, stream)
            if self.first_position is None:
                self.first_position = position
        else:
            self._dead_bytes += replaced
            self.merged += 1
            entry.offset, entry.length = self._end - len(line) - 1, len(line)
        self.size = new_size
        return True

    def _write(self, line: bytes) -> None:
        with _disk(self.path, "write"):
            self._handle.write(line)
            self._handle.write(b"\n")
        self._end += len(line) + 1

    def _read(self, entry: _Entry) -> Profile:
        with _disk(self.path, "write"):
            self._handle.flush()
        return _parse_line(self.kind, os.pread(self._handle.fileno(), entry.length, entry.offset))

    def seal(self) -> SealedBatch:
        """Close the file, compacting away lines superseded by merges."""
        entries = sorted(self._index.items(), key=lambda item: item[1].offset)
        with _disk(self.path, "write"):
            self._handle.flush()
            if self._dead_bytes:
                self._compact(entries)
            else:
                os.fsync(self._handle.fileno())
                self._handle.close()
        return SealedBatch(
            kind=self.kind,
            path=self.path,
            rows=self.rows,
            size=self.size,
            first_position=self.first_position or 0,
            origins=[LineOrigin(pid, e.position, e.stream) for pid, e in entries],
            merged=self.merged,
        )

    def _compact(self, entries: list[tuple[str, _Entry]]) -> None:
        """Rewrite the file without the lines that merges superseded."""
        compact = self.path.with_suffix(".compact")
        fd = self._handle.fileno()
        try:
            with compact.open("wb") as out:
                for _, entry in entries:
                    out.write(os.pread(fd, entry.length + 1, entry.offset))
                out.flush()
                os.fsync(out.fileno())
        except OSError:
            compact.unlink(missing_ok=True)
            raise
        self._handle.close()
        compact.replace(self.path)

    def discard(self) -> None:
        """Close and remove the file (termination before upload)."""
        with contextlib.suppress(OSError):  # closing flushes, which fails again on a full disk
            self._handle.close()
        self.path.unlink(missing_ok=True)
