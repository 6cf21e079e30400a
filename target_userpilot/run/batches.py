"""NDJSON batch files on disk: append profile lines, merge duplicates, cut at rows or bytes.

A batch holds the profiles of one kind waiting for one Userpilot job. Lines live on disk, so
memory stays flat whatever the batch size; a small index (id -> where its line is) stays in
memory, and so do the profiles that merged several records of one id, written once at seal.
A full batch waiting for the job slot keeps that index in flat arrays (`freeze`): a spool of
millions of rows costs tens of bytes a row, not hundreds.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from array import array
from bisect import bisect_left
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from itertools import accumulate
from typing import TYPE_CHECKING, Any, BinaryIO

from target_userpilot.errors import UserFacingError
from target_userpilot.profiles import Profile, encode_json, merge

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from pathlib import Path

    from target_userpilot.kinds import Kind

MAX_API_ROWS = 10_000
MAX_API_BYTES = 50_000_000  # Userpilot's "50 MB", read as the smaller decimal megabytes
# Room left under the API's 50 MB for the multipart envelope and any difference in how the
# server counts the body.
MULTIPART_MARGIN = 64 * 1024
_MAX_H = 1 << 16  # rows a 16-bit row number can tell apart


@dataclass(frozen=True)
class BatchLimits:
    """Where a batch is cut: whichever of the two is reached first."""

    max_rows: int = MAX_API_ROWS
    max_bytes: int = MAX_API_BYTES - MULTIPART_MARGIN


@dataclass(slots=True)
class _Entry:
    offset: int
    length: int
    position: int
    stream: str


class _Frozen(Mapping[str, _Entry]):
    """A waiting batch's index in flat arrays: 28 bytes a row and the id's text, in file order.

    A dict of `_Entry` cost ~250 bytes a row (the id object, the entry, its ints, the slot).
    An id is found by bisecting its hash among the rows' sorted hashes (equal hashes are
    told apart by the id itself); the ids are one string, cut where each ends. Lines are
    appended one after the other, so where each starts is all that is kept of them.
    """

    def __init__(self, index: Mapping[str, _Entry]) -> None:
        self._ids = "".join(index)
        self._ends = array("I", [0])
        self._ends.extend(accumulate(map(len, index)))
        entries = index.values()
        self._offsets = array("I", [0])  # and where the next line would start
        self._offsets.extend(accumulate(e.length + 1 for e in entries))
        self._positions = array("Q", (e.position for e in entries))
        self._stream_names = list(dict.fromkeys(e.stream for e in entries))
        number = {stream: n for n, stream in enumerate(self._stream_names)}
        self._streams = array("H", (number[e.stream] for e in entries))
        hashes = array("q", map(hash, index))  # cached on each id already: no hashing here
        self._rows = array("H" if len(hashes) <= _MAX_H else "I")
        self._rows.extend(sorted(range(len(hashes)), key=hashes.__getitem__))
        self._hashes = array("q", map(hashes.__getitem__, self._rows))

    def __len__(self) -> int:
        return len(self._positions)

    def _id(self, row: int) -> str:
        return self._ids[self._ends[row] : self._ends[row + 1]]

    def _row(self, profile_id: object) -> int:
        """The row holding the id, or -1."""
        if not isinstance(profile_id, str):
            return -1
        hashed = hash(profile_id)
        hashes = self._hashes
        at = bisect_left(hashes, hashed)
        while at < len(hashes) and hashes[at] == hashed:
            row = self._rows[at]
            if self._id(row) == profile_id:
                return row
            at += 1
        return -1

    def _entry(self, row: int) -> _Entry:
        stream = self._stream_names[self._streams[row]]
        offset = self._offsets[row]
        return _Entry(offset, self._offsets[row + 1] - offset - 1, self._positions[row], stream)

    def __getitem__(self, profile_id: str) -> _Entry:
        row = self._row(profile_id)
        if row < 0:
            raise KeyError(profile_id)
        return self._entry(row)

    def __contains__(self, profile_id: object) -> bool:
        return self._row(profile_id) >= 0

    def __iter__(self) -> Iterator[str]:
        return map(self._id, range(len(self)))

    def items(self) -> Iterable[tuple[str, _Entry]]:  # type: ignore[override]
        """(id, entry) in file order, without looking each id up."""
        return zip(self, map(self._entry, range(len(self))), strict=True)


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


class BatchFileError(UserFacingError):
    """A batch file could not be written (a full disk, most often); says what to fix."""


def _disk_error(path: Path, doing: str, exc: OSError) -> BatchFileError:
    """A BatchFileError naming the file, what failed, and the setting that moves it."""
    msg = (
        f"cannot {doing} batch file {path}: {exc.strerror or exc}; free space there or "
        "point the `batch_dir` setting elsewhere. Nothing unconfirmed was checkpointed."
    )
    return BatchFileError(msg)


@contextlib.contextmanager
def _disk(path: Path, doing: str) -> Iterator[None]:
    """Turn an OS error on a batch file into a BatchFileError naming the file and the setting."""
    try:
        yield
    except OSError as exc:
        raise _disk_error(path, doing, exc) from exc


def _parse_line(kind: Kind, line: bytes) -> Profile:
    obj = json.loads(line, parse_float=Decimal)
    id_key = "user_id" if kind == "users" else "company_id"
    return Profile(
        id=obj[id_key],
        company_id=obj.get("company_id") if kind == "users" else None,
        metadata=obj.get("metadata", {}),
    )


def _size(text: str, *, ascii_only: bool) -> int | None:
    """Bytes of JSON text as `encode_line` writes it, in one of its two forms.

    UTF-8 (None when a lone surrogate forbids it) or, `ascii_only`, with every non-ASCII
    character escaped (six bytes, twelve beyond the BMP), as a line holding a surrogate is.
    """
    if ascii_only:
        return sum(1 if ord(c) < 0x80 else 6 if ord(c) < 0x10000 else 12 for c in text)  # noqa: PLR2004
    try:
        return len(text.encode())
    except UnicodeEncodeError:
        return None


class _Merged:
    """A profile merged from several records, kept in memory with its line's size.

    Each metadata pair's encoded size is kept, so a merge costs the newer record's size, not
    the whole line's: 10,000 records of one id cost about what 10,000 distinct ids do. The
    size is exact, or over when a value with a lone surrogate was since replaced.
    """

    def __init__(self, kind: Kind, profile: Profile) -> None:
        self.kind = kind
        self.id = profile.id
        self.company_id: str | None = None
        self.metadata: dict[str, Any] = {}
        self._pairs: dict[str, int] = {}
        self._total = 0
        self._ascii = False  # a lone surrogate somewhere: the line is ASCII-escaped throughout
        self.merge(profile)

    def _envelope(self, company_id: str | None) -> int | None:
        """Bytes of the line with empty metadata (`{}`); None if it needs ASCII escapes."""
        if _size(encode_json([self.id, company_id]), ascii_only=self._ascii) is None:
            return None
        text = Profile(self.id, company_id, {}).line(self.kind).decode()
        return _size(text, ascii_only=self._ascii)

    def _sizes(self, metadata: Mapping[str, Any]) -> dict[str, int] | None:
        sizes = {}
        for key, value in metadata.items():
            size = _size(encode_json({key: value}), ascii_only=self._ascii)
            if size is None:
                return None
            sizes[key] = size - 2
        return sizes

    def size_with(self, newer: Profile) -> tuple[int, dict[str, int]] | None:
        """Bytes of the line once `newer` is merged in; None if it needs ASCII escapes."""
        company = newer.company_id if newer.company_id is not None else self.company_id
        envelope = self._envelope(company)
        sizes = self._sizes(newer.metadata)
        if envelope is None or sizes is None:
            return None
        pairs = len(self._pairs) + sum(1 for key in sizes if key not in self._pairs)
        total = self._total + sum(size - self._pairs.get(key, 0) for key, size in sizes.items())
        return envelope + total + max(0, pairs - 1), sizes

    def merge(self, newer: Profile, sizes: dict[str, int] | None = None) -> None:
        """Newer values win key by key; the company is the newer unless that is None.

        `sizes` are the newer pairs' sizes from `size_with`, if the caller has them.
        """
        if sizes is None:
            sized = self.size_with(newer)
            sizes = sized[1] if sized is not None else None
        if newer.company_id is not None:
            self.company_id = newer.company_id
        self.metadata.update(newer.metadata)
        if sizes is None:  # a lone surrogate: count everything again, escaped
            self._ascii = True
            self._pairs, self._total = {}, 0
            sizes = self._sizes(self.metadata) or {}
        for key, size in sizes.items():
            self._total += size - self._pairs.get(key, 0)
            self._pairs[key] = size

    @property
    def size(self) -> int:
        """Bytes of the merged line, without the newline."""
        envelope = self._envelope(self.company_id) or 0
        return envelope + self._total + max(0, len(self._pairs) - 1)

    def line(self) -> bytes:
        """The merged line, encoded once (at seal)."""
        return Profile(self.id, self.company_id, self.metadata).line(self.kind)


class BatchFile:
    """An open batch being filled; `seal()` turns it into a SealedBatch.

    The file is created with its first line, so a batch that never took a profile leaves
    nothing on disk and is never uploaded. Lines of new ids are appended; a merged profile
    lives in memory and is written once, at seal, so the file stays under twice the batch.
    """

    def __init__(self, kind: Kind, directory: Path, limits: BatchLimits) -> None:
        """Name the batch file in `directory` (a unique name per batch); nothing is written."""
        self.kind = kind
        self.limits = limits
        self.path = directory / f"userpilot-{kind}-{uuid.uuid4().hex}.ndjson"
        self._handle: BinaryIO | None = None
        self._end = 0
        # id -> where its line is: a dict while the batch fills, arrays once it waits (`freeze`)
        self._index: Mapping[str, _Entry] = {}
        self._merged: dict[str, _Merged] = {}
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

    def ids(self) -> Iterable[str]:
        """Ids of the profiles in the batch."""
        return self._index.keys()

    def freeze(self) -> None:
        """The batch is full and waits: its index goes into flat arrays; it takes merges only."""
        self._index = _Frozen(self._index)

    def add(self, profile: Profile, position: int, stream: str, line: bytes | None = None) -> bool:
        """Append (or merge) a profile; False when it does not fit and the batch must be cut.

        `line` is `profile.line(kind)` if the caller has it already. Raises LineTooLargeError
        when the profile alone is over the byte limit. A profile whose merge would not fit is
        not merged: the batch goes out as it is, and the newer values travel in the next
        batch, which Userpilot applies later.
        """
        if line is None:
            line = profile.line(self.kind)
        if len(line) + 1 > self.limits.max_bytes:
            msg = (
                f"profile line is {len(line) + 1:,} bytes, over the batch limit of "
                f"{self.limits.max_bytes:,} bytes (setting `max_batch_bytes`)"
            )
            raise LineTooLargeError(msg)
        entry = self._index.get(profile.id)
        if entry is not None:
            return self._merge(entry, profile)
        if not isinstance(self._index, dict):  # frozen: a waiting batch takes no new id
            return False
        if self.size + len(line) + 1 > self.limits.max_bytes or self.rows >= self.limits.max_rows:
            return False
        self._write(line)
        self._index[profile.id] = _Entry(self._end - len(line) - 1, len(line), position, stream)
        if self.first_position is None:
            self.first_position = position
        self.size += len(line) + 1
        return True

    def _merge(self, entry: _Entry, profile: Profile) -> bool:
        merged = self._merged.get(profile.id)
        before = entry.length if merged is None else merged.size
        if merged is None:
            merged = _Merged(self.kind, self._read(entry))
        sized = merged.size_with(profile)
        if sized is None:  # a lone surrogate in the newer record: the rare, slow way
            current = Profile(merged.id, merged.company_id, merged.metadata)
            after = len(merge(current, profile).line(self.kind))
        else:
            after = sized[0]
        if self.size - before + after > self.limits.max_bytes:
            return False
        merged.merge(profile, sized[1] if sized is not None else None)
        self._merged[profile.id] = merged
        self.size += merged.size - before
        self.merged += 1
        return True

    def _write(self, line: bytes) -> None:
        # Once per record: a plain `try` costs nothing until it fails, unlike `with _disk`.
        if self._handle is None:
            with _disk(self.path, "create"):
                self._handle = self.path.open("w+b")
        try:
            self._handle.write(line)
            self._handle.write(b"\n")
        except OSError as exc:
            raise _disk_error(self.path, "write", exc) from exc
        self._end += len(line) + 1

    def _read(self, entry: _Entry) -> Profile:
        assert self._handle is not None  # noqa: S101 - an entry means a line was written
        with _disk(self.path, "write"):
            self._handle.flush()
        return _parse_line(self.kind, os.pread(self._handle.fileno(), entry.length, entry.offset))

    def seal(self) -> SealedBatch:
        """Close the file; merged profiles are written out here, once each."""
        entries = list(self._index.items())  # file order: lines are appended, never moved
        assert self._handle is not None  # noqa: S101 - an empty batch is never sealed
        # No fsync: a batch file never outlives its run (a crash's are removed by the next
        # run), and the upload reads it back from the page cache; syncing cost each gap
        # between two jobs tens of milliseconds.
        with _disk(self.path, "write"):
            self._handle.flush()
            if self._merged:
                self.size = self._compact(self._handle, entries)
            else:
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

    def _compact(self, handle: BinaryIO, entries: list[tuple[str, _Entry]]) -> int:
        """Rewrite the file with each merged profile in place of its first line; its size."""
        compact = self.path.with_suffix(".compact")
        handle.seek(0)  # lines in file order, read through the buffer: not a pread each
        try:
            with compact.open("wb") as out:
                for profile_id, entry in entries:
                    line = handle.read(entry.length + 1)
                    merged = self._merged.get(profile_id)
                    out.write(line if merged is None else merged.line() + b"\n")
                out.flush()
                size = out.tell()
        except OSError:
            compact.unlink(missing_ok=True)
            raise
        handle.close()
        compact.replace(self.path)
        return size

    def discard(self) -> None:
        """Close and remove the file (termination before upload)."""
        if self._handle is not None:
            with contextlib.suppress(OSError):  # closing flushes, which fails again on a full disk
                self._handle.close()
        self.path.unlink(missing_ok=True)
