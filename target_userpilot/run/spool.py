"""Full batches waiting on disk for the job slot, in the order they were cut.

Userpilot runs one job at a time at 1,200 to 1,800 rows a minute, far slower than the target
reads: holding the tap until the last job completes kept its database snapshot open for hours.
So full batches wait here, still open to merges, and the reader pauses only when the bytes
waiting pass `max_spool_bytes`. A batch leaves the spool, sealed, only when the job thread is
about to need it; from then on it is never touched again.

Each id is in at most one waiting batch of its kind: a newer record of an id that waits merges
into that batch (as within a batch), instead of becoming a second row in a later one. The merged
record's STATE needs nothing more: the waiting batch holds STATE from its first record on, which
is before the newer one, until its job completes.

Only the main thread (the pipeline) touches it.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from target_userpilot.kinds import Kind
    from target_userpilot.profiles import Profile
    from target_userpilot.run.batches import BatchFile


class Spool:
    """Batches cut and not yet handed to the job thread, oldest first."""

    def __init__(self) -> None:
        """Nothing waits yet."""
        self._batches: deque[BatchFile] = deque()
        # kind -> id -> its waiting batch (per kind: no (kind, id) tuple a row)
        self._where: dict[Kind, dict[str, BatchFile]] = {}
        self.bytes = 0

    def __len__(self) -> int:
        """Batches waiting."""
        return len(self._batches)

    @property
    def rows(self) -> int:
        """Rows waiting, over every batch."""
        return sum(batch.rows for batch in self._batches)

    def __contains__(self, key: tuple[Kind, str]) -> bool:
        """Whether a line for this (kind, id) waits in a batch."""
        kind, profile_id = key
        ids = self._where.get(kind)
        return ids is not None and profile_id in ids

    def put(self, batch: BatchFile) -> None:
        """A full batch joins the end of the line; its ids are now found here."""
        self._batches.append(batch)
        self._where.setdefault(batch.kind, {}).update(dict.fromkeys(batch.ids(), batch))
        self.bytes += batch.size

    def merge(self, kind: Kind, profile: Profile, position: int, stream: str, line: bytes) -> bool:
        """Merge a newer record into the waiting batch holding its id; False if none can take it.

        A merge that would push that batch past its byte limit is not made: the record then
        goes to the open batch, and Userpilot applies the two rows in order.
        """
        batch = self._where.get(kind, {}).get(profile.id)
        if batch is None:
            return False
        before = batch.size
        if not batch.add(profile, position, stream, line):
            return False
        self.bytes += batch.size - before
        return True

    def take(self) -> BatchFile:
        """The oldest waiting batch, leaving the spool (to be sealed and shipped)."""
        batch = self._batches.popleft()
        ids = self._where[batch.kind]
        for profile_id in batch.ids():
            # A later batch may hold the id too (a merge that did not fit): it stays found there.
            if ids.get(profile_id) is batch:
                del ids[profile_id]
        self.bytes -= batch.size
        return batch

    def discard(self) -> None:
        """A stop before the end: remove every waiting batch's file."""
        while self._batches:
            self.take().discard()
